`resetall
`timescale 1ns / 1ps
`default_nettype none

// AES-128/256 encryption, one round per clock (FIPS-197).
//
// Key side: pulse key_load with key (AES-128 uses key[255:128]) and key_256.
// The schedule is expanded one word per clock into a register file
// (40 clocks for AES-128, 52 for AES-256); key_ready rises when it is done.
// key_load is honoured only while no block is in flight.
//
// Block side: a block is taken (in_valid && in_ready) with the initial
// AddRoundKey folded in; rounds 1..Nr follow, one per clock. On the clock of
// round Nr the result is registered into out_block (out_valid pulses the
// next cycle) and, if in_valid is high, the next block is taken on that same
// edge: one block per Nr clocks (10 for AES-128, 14 for AES-256).
// out_valid has no back-pressure: the consumer must take it.
//
// Byte order everywhere: bits [127:120] are the first byte of the block.
module aes_core (
    input  wire         clk,
    input  wire         rst,
    input  wire         key_load,
    input  wire         key_256,
    input  wire [255:0] key,
    output wire         key_ready,
    input  wire         in_valid,
    output wire         in_ready,
    input  wire [127:0] in_block,
    output reg          out_valid,
    output reg  [127:0] out_block
);
    // ---------------------------------------------------------------- key
    reg  [31:0] w [0:59];       // expanded key words
    reg  [255:0] win;           // the last 8 words produced, newest in [31:0]
    reg  [5:0]  widx;           // next word index to produce
    reg  [5:0]  wlast;          // last word index (43 or 59)
    reg  [2:0]  kpos;           // widx mod Nk
    reg  [7:0]  rcon;
    reg         k256;
    reg         expanding;
    reg         kready;

    wire [31:0] prev = win[31:0];
    wire [31:0] rot = {prev[23:0], prev[31:24]};
    wire        use_rot = (kpos == 3'd0);
    wire [31:0] sub_in = use_rot ? rot : prev;
    wire [31:0] sub_out;
    aes_sbox ks0 (.a(sub_in[31:24]), .y(sub_out[31:24]));
    aes_sbox ks1 (.a(sub_in[23:16]), .y(sub_out[23:16]));
    aes_sbox ks2 (.a(sub_in[15:8]),  .y(sub_out[15:8]));
    aes_sbox ks3 (.a(sub_in[7:0]),   .y(sub_out[7:0]));
    wire [31:0] temp = use_rot ? (sub_out ^ {rcon, 24'h0})
                     : (k256 && kpos == 3'd4) ? sub_out : prev;
    wire [31:0] back = k256 ? win[255:224] : win[127:96];     // w[i - Nk]
    wire [31:0] wnew = back ^ temp;
    wire [7:0]  rcon_next = {rcon[6:0], 1'b0} ^ (rcon[7] ? 8'h1b : 8'h00);

    assign key_ready = kready;

    // -------------------------------------------------------------- rounds
    reg  [127:0] state;
    reg  [3:0]   rnd;
    reg          busy;
    wire [3:0]   nr = k256 ? 4'd14 : 4'd10;
    wire         last = busy && (rnd == nr);

    assign in_ready = kready && (!busy || last);
    wire take = in_valid && in_ready;

    wire [127:0] rk0 = {w[0], w[1], w[2], w[3]};
    wire [5:0]   rki = {rnd, 2'b00};
    wire [127:0] rkr = {w[rki], w[rki + 6'd1], w[rki + 6'd2], w[rki + 6'd3]};

    // SubBytes
    wire [127:0] sb;
    genvar gi;
    generate
        for (gi = 0; gi < 16; gi = gi + 1) begin : g_sub
            aes_sbox s (.a(state[127 - 8 * gi -: 8]), .y(sb[127 - 8 * gi -: 8]));
        end
    endgenerate

    // ShiftRows: byte r + 4c of the result is byte r + 4((c + r) mod 4).
    function automatic [7:0] byte_of(input [127:0] v, input integer i);
        byte_of = v[127 - 8 * i -: 8];
    endfunction
    reg [127:0] sr;
    integer r, c;
    always @(*) begin
        sr = 128'h0;
        for (c = 0; c < 4; c = c + 1)
            for (r = 0; r < 4; r = r + 1)
                sr[127 - 8 * (r + 4 * c) -: 8] = byte_of(sb, r + 4 * ((c + r) % 4));
    end

    // MixColumns
    function automatic [7:0] xt(input [7:0] b);
        xt = {b[6:0], 1'b0} ^ (b[7] ? 8'h1b : 8'h00);
    endfunction
    function automatic [31:0] mixcol(input [31:0] col);
        reg [7:0] a0, a1, a2, a3;
        begin
            a0 = col[31:24]; a1 = col[23:16]; a2 = col[15:8]; a3 = col[7:0];
            mixcol = {xt(a0) ^ xt(a1) ^ a1 ^ a2 ^ a3,
                      a0 ^ xt(a1) ^ xt(a2) ^ a2 ^ a3,
                      a0 ^ a1 ^ xt(a2) ^ xt(a3) ^ a3,
                      xt(a0) ^ a0 ^ a1 ^ a2 ^ xt(a3)};
        end
    endfunction
    wire [127:0] mc = {mixcol(sr[127:96]), mixcol(sr[95:64]), mixcol(sr[63:32]), mixcol(sr[31:0])};

    wire [127:0] round_out = mc ^ rkr;
    wire [127:0] final_out = sr ^ rkr;

    integer k;
    always @(posedge clk) begin
        if (rst) begin
            expanding <= 1'b0;
            kready <= 1'b0;
            k256 <= 1'b0;
            widx <= 6'd0;
            wlast <= 6'd0;
            kpos <= 3'd0;
            rcon <= 8'h01;
            busy <= 1'b0;
            rnd <= 4'd0;
            state <= 128'h0;
            out_valid <= 1'b0;
            out_block <= 128'h0;
            win <= 256'h0;
        end else begin
            out_valid <= 1'b0;
            if (key_load && !busy) begin
                k256 <= key_256;
                kready <= 1'b0;
                expanding <= 1'b1;
                rcon <= 8'h01;
                kpos <= 3'd0;
                if (key_256) begin
                    win <= key;
                    for (k = 0; k < 8; k = k + 1) w[k] <= key[255 - 32 * k -: 32];
                    widx <= 6'd8;
                    wlast <= 6'd59;
                end else begin
                    win <= {128'h0, key[255:128]};
                    for (k = 0; k < 4; k = k + 1) w[k] <= key[255 - 32 * k -: 32];
                    widx <= 6'd4;
                    wlast <= 6'd43;
                end
            end else if (expanding) begin
                w[widx] <= wnew;
                win <= {win[223:0], wnew};
                if (use_rot) rcon <= rcon_next;
                kpos <= (kpos == (k256 ? 3'd7 : 3'd3)) ? 3'd0 : kpos + 3'd1;
                widx <= widx + 6'd1;
                if (widx == wlast) begin
                    expanding <= 1'b0;
                    kready <= 1'b1;
                end
            end

            if (busy && !last) begin
                state <= round_out;
                rnd <= rnd + 4'd1;
            end
            if (last) begin
                out_block <= final_out;
                out_valid <= 1'b1;
                busy <= 1'b0;
            end
            if (take) begin
                state <= in_block ^ rk0;
                rnd <= 4'd1;
                busy <= 1'b1;
            end
        end
    end
endmodule

`resetall
