`resetall
`timescale 1ns / 1ps
`default_nettype none

// AES-GCM (NIST SP 800-38D) with 96-bit IVs, streaming, AES-128 or AES-256.
//
// Key: pulse key_load (key_256, key: AES-128 uses key[255:128]) while
// `ready` or before the first key. The core expands the schedule, computes
// H = E(K, 0^128) and raises `ready`.
//
// Packet: pulse `start` while `ready` with iv, aad_len and data_len (bytes)
// and `decrypt`. Then feed ceil(aad_len/16) AAD blocks followed by
// ceil(data_len/16) data blocks on in_valid/in_ready (first byte in bits
// [127:120]; bytes past the length are ignored). Every data block comes
// back on out_valid/out_block (no back-pressure), bytes past the length
// zeroed: ciphertext when encrypting, plaintext when decrypting. The full
// 16-byte tag follows on tag_valid (a pulse) and `ready` rises again.
// Decryption does not compare tags: the caller compares `tag` with the one
// received and withholds the plaintext on a mismatch.
//
// Throughput: the counter blocks are encrypted ahead into a two-entry
// keystream FIFO while GHASH (ghash_mul, 9 clocks per block) runs on the
// previous block, so a data block is taken every Nr clocks: 10 for AES-128,
// 14 for AES-256.
module aes_gcm (
    input  wire         clk,
    input  wire         rst,
    input  wire         key_load,
    input  wire         key_256,
    input  wire [255:0] key,
    output wire         ready,
    input  wire         start,
    input  wire [95:0]  iv,
    input  wire [15:0]  aad_len,
    input  wire [15:0]  data_len,
    input  wire         decrypt,
    input  wire         in_valid,
    output wire         in_ready,
    input  wire [127:0] in_block,
    output reg          out_valid,
    output reg  [127:0] out_block,
    output reg          tag_valid,
    output reg  [127:0] tag
);
    localparam [2:0] ST_IDLE = 3'd0, ST_KEY = 3'd1, ST_HISSUE = 3'd2, ST_HWAIT = 3'd3,
                     ST_READY = 3'd4, ST_RUN = 3'd5;
    reg [2:0] st;

    // ------------------------------------------------------------ AES core
    wire         aes_key_ready;
    wire         aes_in_ready;
    reg          aes_in_valid;
    reg  [127:0] aes_in_block;
    wire         aes_out_valid;
    wire [127:0] aes_out_block;
    wire         key_take = key_load && (st == ST_IDLE || st == ST_READY);

    aes_core u_aes (
        .clk(clk), .rst(rst),
        .key_load(key_take), .key_256(key_256), .key(key), .key_ready(aes_key_ready),
        .in_valid(aes_in_valid), .in_ready(aes_in_ready), .in_block(aes_in_block),
        .out_valid(aes_out_valid), .out_block(aes_out_block)
    );

    // ---------------------------------------------------------- GHASH unit
    reg          gq_valid;
    reg  [127:0] gq_data;
    reg  [127:0] y;
    reg  [127:0] hkey;
    wire         gh_busy, gh_done;
    wire [127:0] gh_z;
    wire [127:0] y_cur = gh_done ? gh_z : y;
    wire         gh_start = gq_valid && !gh_busy;

    ghash_mul #(.DIGIT(16)) u_gh (
        .clk(clk), .rst(rst), .start(gh_start), .a(y_cur ^ gq_data), .h(hkey),
        .busy(gh_busy), .done(gh_done), .z(gh_z)
    );

    // ------------------------------------------------------ packet context
    reg  [95:0]  iv_r;
    reg  [15:0]  aad_len_r, data_len_r;
    reg          dec_r;
    reg  [12:0]  n_aad, n_data, n_total;
    reg  [12:0]  in_cnt;       // blocks taken from in_*
    reg  [12:0]  issued;       // counter blocks sent to AES
    reg  [13:0]  hashed;       // GHASH products finished (AAD, data, length)
    reg  [31:0]  ctr;          // low word of the next counter block
    reg          j0_issued, j0_out_pending, ej0_ok, len_queued;
    reg  [127:0] ej0;
    reg  [127:0] ks0, ks1;
    reg  [1:0]   ks_cnt;
    reg  [1:0]   inflight;

    wire [12:0] aad_blocks = {1'b0, aad_len[15:4]} + {12'h0, aad_len[3:0] != 4'h0};
    wire [12:0] data_blocks = {1'b0, data_len[15:4]} + {12'h0, data_len[3:0] != 4'h0};

    // What the AES core is asked to do.
    wire want_ks = j0_issued && (issued < n_data) && ({1'b0, inflight} + {1'b0, ks_cnt} < 3'd2);
    always @(*) begin
        aes_in_valid = 1'b0;
        aes_in_block = 128'h0;
        if (st == ST_HISSUE) begin
            aes_in_valid = 1'b1;
        end else if (st == ST_RUN) begin
            if (!j0_issued) begin
                aes_in_valid = 1'b1;
                aes_in_block = {iv_r, 32'h1};
            end else if (want_ks) begin
                aes_in_valid = 1'b1;
                aes_in_block = {iv_r, ctr};
            end
        end
    end
    wire aes_take = aes_in_valid && aes_in_ready;

    // The input side.
    wire        is_aad = (in_cnt < n_aad);
    wire [12:0] dblk = in_cnt - n_aad;
    wire        d_last = (dblk == n_data - 13'd1);
    wire        a_last = (in_cnt == n_aad - 13'd1);
    wire [4:0]  d_bytes = (d_last && data_len_r[3:0] != 4'd0) ? {1'b0, data_len_r[3:0]} : 5'd16;
    wire [4:0]  a_bytes = (a_last && aad_len_r[3:0] != 4'd0) ? {1'b0, aad_len_r[3:0]} : 5'd16;
    wire [127:0] d_mask = {128{1'b1}} << {(5'd16 - d_bytes), 3'b000};
    wire [127:0] a_mask = {128{1'b1}} << {(5'd16 - a_bytes), 3'b000};
    assign in_ready = (st == ST_RUN) && (in_cnt < n_total) && !gq_valid && (is_aad || ks_cnt != 2'd0);
    wire in_take = in_valid && in_ready;
    wire [127:0] d_in = in_block & d_mask;
    wire [127:0] d_out = (in_block ^ ks0) & d_mask;

    wire ks_push = aes_out_valid && st == ST_RUN && !j0_out_pending;
    wire ks_pop = in_take && !is_aad;
    wire len_now = (st == ST_RUN) && (in_cnt == n_total) && !gq_valid && !len_queued && ej0_ok;

    assign ready = (st == ST_READY);

    always @(posedge clk) begin
        if (rst) begin
            st <= ST_IDLE;
            out_valid <= 1'b0;
            out_block <= 128'h0;
            tag_valid <= 1'b0;
            tag <= 128'h0;
            gq_valid <= 1'b0;
            gq_data <= 128'h0;
            y <= 128'h0;
            hkey <= 128'h0;
            iv_r <= 96'h0;
            aad_len_r <= 16'h0;
            data_len_r <= 16'h0;
            dec_r <= 1'b0;
            n_aad <= 13'd0;
            n_data <= 13'd0;
            n_total <= 13'd0;
            in_cnt <= 13'd0;
            issued <= 13'd0;
            hashed <= 14'd0;
            ctr <= 32'h0;
            j0_issued <= 1'b0;
            j0_out_pending <= 1'b0;
            ej0_ok <= 1'b0;
            len_queued <= 1'b0;
            ej0 <= 128'h0;
            ks0 <= 128'h0;
            ks1 <= 128'h0;
            ks_cnt <= 2'd0;
            inflight <= 2'd0;
        end else begin
            out_valid <= 1'b0;
            tag_valid <= 1'b0;
            case (st)
                ST_IDLE, ST_READY: begin
                    if (key_take) begin
                        st <= ST_KEY;
                    end else if (start && st == ST_READY) begin
                        st <= ST_RUN;
                        iv_r <= iv;
                        aad_len_r <= aad_len;
                        data_len_r <= data_len;
                        dec_r <= decrypt;
                        n_aad <= aad_blocks;
                        n_data <= data_blocks;
                        n_total <= aad_blocks + data_blocks;
                        in_cnt <= 13'd0;
                        issued <= 13'd0;
                        hashed <= 14'd0;
                        ctr <= 32'h2;
                        j0_issued <= 1'b0;
                        j0_out_pending <= 1'b0;
                        ej0_ok <= 1'b0;
                        len_queued <= 1'b0;
                        ks_cnt <= 2'd0;
                        inflight <= 2'd0;
                        y <= 128'h0;
                    end
                end
                ST_KEY: if (aes_key_ready) st <= ST_HISSUE;
                ST_HISSUE: if (aes_take) st <= ST_HWAIT;
                ST_HWAIT: if (aes_out_valid) begin
                    hkey <= aes_out_block;
                    st <= ST_READY;
                end
                default: begin // ST_RUN
                    // AES side
                    if (aes_take) begin
                        if (!j0_issued) begin
                            j0_issued <= 1'b1;
                            j0_out_pending <= 1'b1;
                        end else begin
                            issued <= issued + 13'd1;
                            ctr <= ctr + 32'd1;
                        end
                    end
                    if (aes_out_valid && j0_out_pending) begin
                        ej0 <= aes_out_block;
                        ej0_ok <= 1'b1;
                        j0_out_pending <= 1'b0;
                    end
                    inflight <= inflight + {1'b0, aes_take} - {1'b0, aes_out_valid};
                    // keystream FIFO
                    case ({ks_push, ks_pop})
                        2'b10: begin
                            if (ks_cnt == 2'd0) ks0 <= aes_out_block; else ks1 <= aes_out_block;
                            ks_cnt <= ks_cnt + 2'd1;
                        end
                        2'b01: begin
                            ks0 <= ks1;
                            ks_cnt <= ks_cnt - 2'd1;
                        end
                        2'b11: begin
                            if (ks_cnt == 2'd1) ks0 <= aes_out_block;
                            else begin
                                ks0 <= ks1;
                                ks1 <= aes_out_block;
                            end
                        end
                        default: ;
                    endcase
                    // input side
                    if (in_take) begin
                        in_cnt <= in_cnt + 13'd1;
                        gq_valid <= 1'b1;
                        if (is_aad) begin
                            gq_data <= in_block & a_mask;
                        end else begin
                            out_block <= d_out;
                            out_valid <= 1'b1;
                            gq_data <= dec_r ? d_in : d_out;
                        end
                    end else if (len_now) begin
                        gq_valid <= 1'b1;
                        gq_data <= {45'h0, aad_len_r, 3'b000, 45'h0, data_len_r, 3'b000};
                        len_queued <= 1'b1;
                    end else if (gh_start) begin
                        gq_valid <= 1'b0;
                    end
                    // GHASH side
                    if (gh_done) begin
                        y <= gh_z;
                        hashed <= hashed + 14'd1;
                        if (len_queued && hashed == {1'b0, n_total}) begin
                            tag <= gh_z ^ ej0;
                            tag_valid <= 1'b1;
                            st <= ST_READY;
                        end
                    end
                end
            endcase
        end
    end
endmodule

`resetall
