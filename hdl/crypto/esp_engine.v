`resetall
`timescale 1ns / 1ps
`default_nettype none

// The SA table block and the AES-GCM ESP engine block of the card
// (hdl/CARD.md, "SA table block" and "ESP engine block"). Register numbers
// come from hdl/generated/regmap.vh.
//
// Bus side: card_top passes every accepted write (wr_en, BAR offset, data);
// writes outside the two blocks are ignored. rd_data answers rd_addr
// combinationally for offsets inside the two blocks (UNMAPPED_PATTERN for
// holes); card_top uses it only for those offsets.
//
// SA slots live in per-field arrays indexed by slot. Key and salt are only
// ever written (from the write-only staging registers, or zeroed by
// INVALIDATE / FLUSH_ALL) and read by the engine; no read path leads from
// them to rd_data.
//
// The engine works in place on the packet buffer, one 16-byte block per
// aes_gcm data beat (aes_gcm takes a block every 10 / 14 clocks):
//   ENCAP: LOAD, CHECK, trailer bytes (one per clock), header, [key load],
//          START, STREAM, ICV words;
//   DECAP: LOAD, CHECK (length, SPI, ESN inference, replay pre-check), ICV
//          capture (one byte per clock), [key load], START, STREAM, then the
//          tag compare; on success window update, trailer and padding check
//          (one byte per clock); on failure the written blocks are wiped.
// The expanded key of the last slot used stays loaded until an SA command
// changes keys.
module esp_engine #(
    parameter integer SLOTS = 256,
    parameter integer BUF_WORDS = 512
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        wr_en,
    input  wire [15:0] wr_addr,
    input  wire [31:0] wr_data,
    input  wire [15:0] rd_addr,
    output reg  [31:0] rd_data
);
    /* verilator lint_off UNUSEDPARAM */
    `include "regmap.vh"
    /* verilator lint_on UNUSEDPARAM */

    localparam integer SB = (SLOTS > 1) ? $clog2(SLOTS) : 1;
    localparam integer BA = $clog2(BUF_WORDS);
    localparam [31:0] SLOTS32 = SLOTS;
    localparam [31:0] BUF_BYTES32 = BUF_WORDS * 4;
    localparam [31:0] CFG_MASK = 32'h0000_1f0f;
    localparam [31:0] SA_END = SA_BASE + SA_SPAN;
    localparam [31:0] ESP_END = ESP_BASE + ESP_SPAN;
    localparam [31:0] BUF_END = ESP_R_BUF + BUF_BYTES32;

    // ------------------------------------------------------------ storage
    // The packet buffer. buf_ok[i] says word i was written since reset; an
    // unwritten word reads 0, so reset clears the buffer in one clock.
    reg [31:0]  buf_mem [0:BUF_WORDS-1];
    reg [BUF_WORDS-1:0] buf_ok;
    function automatic [31:0] buf_rd(input [BA-1:0] i);
        buf_rd = buf_ok[i] ? buf_mem[i] : 32'h0;
    endfunction
    reg [SLOTS-1:0] s_valid;
    reg [31:0]  s_spi   [0:SLOTS-1];
    reg [12:0]  s_cfg   [0:SLOTS-1];
    reg [31:0]  s_salt  [0:SLOTS-1];
    reg [255:0] s_key   [0:SLOTS-1];
    reg [63:0]  s_seq   [0:SLOTS-1];
    reg [63:0]  s_win   [0:SLOTS-1];
    reg [63:0]  s_pkts  [0:SLOTS-1];
    reg [63:0]  s_bytes [0:SLOTS-1];
    reg [31:0]  s_auth  [0:SLOTS-1];
    reg [31:0]  s_repl  [0:SLOTS-1];

    // ------------------------------------------------ SA block registers
    reg [31:0]  sa_cmd, sa_slot, st_spi, st_cfg, st_salt;
    reg [255:0] st_key;
    reg [63:0]  st_seq, st_win, st_pkts, st_bytes;
    reg [31:0]  st_auth, st_repl;
    reg [31:0]  sa_cmd_count, sa_err_count, occupancy;
    reg         sa_busy, sa_done, sa_stvalid;
    reg [7:0]   sa_err;
    reg [31:0]  sa_op;
    reg [SB-1:0] flush_idx;

    // ----------------------------------------------- ESP block registers
    reg [31:0]  e_cmd, e_slot, e_len;
    reg [7:0]   e_nh;
    reg [63:0]  e_seq;
    reg [31:0]  e_cmd_count, e_err_count, e_auth_count, e_repl_count;
    reg         e_busy, e_done;
    reg [7:0]   e_err;

    // ---------------------------------------------------------- bus decode
    wire [31:0] wa = {16'h0, wr_addr};
    wire [31:0] ra = {16'h0, rd_addr};
    wire        sa_w = wr_en && wa >= SA_BASE && wa < SA_END;
    wire        esp_w = wr_en && wa >= ESP_BASE && wa < ESP_END;
    wire [31:0] sa_o = wa - SA_BASE;
    wire [31:0] esp_o = wa - ESP_BASE;
    wire        sa_cmd_w = sa_w && sa_o == SA_R_CMD;
    wire        esp_cmd_w = esp_w && esp_o == ESP_R_CMD;
    wire        sa_start = sa_cmd_w && !sa_busy && !e_busy;
    wire        esp_start = esp_cmd_w && !e_busy && !sa_busy;
    wire        buf_w = esp_w && !e_busy && esp_o >= ESP_R_BUF && esp_o < BUF_END;
    /* verilator lint_off UNUSEDSIGNAL */  // only the low bits address the buffer / carry meaning
    wire [31:0] buf_wi = (esp_o - ESP_R_BUF) >> 2;
    /* verilator lint_on UNUSEDSIGNAL */

    // ------------------------------------------------------- AES-GCM core
    reg          g_key_load, g_start, g_in_valid;
    reg  [127:0] g_in_block;
    reg  [95:0]  g_iv;
    wire         g_ready, g_in_ready, g_out_valid, g_tag_valid;
    wire [127:0] g_out_block, g_tag;
    reg  [255:0] w_key;
    /* verilator lint_off UNUSEDSIGNAL */  // only the low bits address the buffer / carry meaning
    reg  [12:0]  w_cfg;
    /* verilator lint_on UNUSEDSIGNAL */
    reg  [15:0]  d_len;
    reg          op_decap;

    aes_gcm u_gcm (
        .clk(clk), .rst(rst),
        .key_load(g_key_load), .key_256(w_cfg[3]), .key(w_key), .ready(g_ready),
        .start(g_start), .iv(g_iv), .aad_len(w_cfg[2] ? 16'd12 : 16'd8), .data_len(d_len),
        .decrypt(op_decap),
        .in_valid(g_in_valid), .in_ready(g_in_ready), .in_block(g_in_block),
        .out_valid(g_out_valid), .out_block(g_out_block),
        .tag_valid(g_tag_valid), .tag(g_tag)
    );

    // ------------------------------------------------------ engine state
    localparam [3:0] E_IDLE = 4'd0, E_LOAD = 4'd1, E_CHECK = 4'd2, E_TRAIL = 4'd3,
                     E_HDR = 4'd4, E_ICVCAP = 4'd5, E_KEY = 4'd6, E_KEYWAIT = 4'd7,
                     E_START = 4'd8, E_STREAM = 4'd9, E_ICVW = 4'd10, E_TRCHK = 4'd11,
                     E_TRCHK2 = 4'd12, E_PADCHK = 4'd13, E_WIPE = 4'd14, E_FIN = 4'd15;
    reg [3:0]   est;
    reg [SB-1:0] w_slot;
    reg [31:0]  w_spi, w_salt;
    reg [63:0]  w_seq, w_win;
    reg [63:0]  seq_new;
    reg [15:0]  p_len;       // ENCAP payload length
    reg [1:0]   pad;         // ENCAP padding length
    reg [7:0]   bi;          // byte / word loop counter
    reg [127:0] icv_rx;
    reg [7:0]   rx_pad, rx_nh;
    reg [11:0]  in_blk, out_blk, nblk;
    reg         aad_sent;
    reg [7:0]   fin_err;
    reg         key_cached;
    reg [SB-1:0] cached_slot;

    wire [4:0]  icvb = w_cfg[12:8];
    wire        esn = w_cfg[2];
    wire        slot_ok_e = e_slot < SLOTS32;
    wire [SB-1:0] e_slot_i = e_slot[SB-1:0];
    wire        slot_ok_s = sa_slot < SLOTS32;
    wire [SB-1:0] s_slot_i = sa_slot[SB-1:0];

    // Buffer read ports: a 4-word block port and a byte port.
    reg  [BA-1:0] br_addr;
    wire [BA-1:0] br1 = br_addr + 1'b1;
    wire [BA-1:0] br2 = br_addr + {{(BA-2){1'b0}}, 2'd2};
    wire [BA-1:0] br3 = br_addr + {{(BA-2){1'b0}}, 2'd3};
    wire [127:0] br_data = {buf_rd(br_addr), buf_rd(br1), buf_rd(br2), buf_rd(br3)};
    /* verilator lint_off UNUSEDSIGNAL */  // only the low bits address the buffer / carry meaning
    reg  [15:0]  rb_addr;
    /* verilator lint_on UNUSEDSIGNAL */
    wire [31:0]  rb_word = buf_rd(rb_addr[BA+1:2]);
    wire [1:0]   rb_inv = ~rb_addr[1:0];
    wire [7:0]   rb_byte = rb_word[{rb_inv, 3'b000} +: 8];

    // ENCAP sizes.
    wire [31:0] enc_pad32 = {30'h0, 2'd2 - e_len[1:0]};
    wire [31:0] enc_d = e_len + enc_pad32 + 32'd2;
    wire [31:0] enc_d16 = (enc_d + 32'd15) & ~32'd15;
    wire        enc_fits = e_len <= BUF_BYTES32 && 32'd16 + enc_d16 <= BUF_BYTES32
                           && 32'd16 + enc_d + {27'h0, icvb} <= BUF_BYTES32;
    // DECAP sizes.
    wire        dec_len_ok = e_len <= BUF_BYTES32 && e_len >= 32'd18 + {27'h0, icvb};
    /* verilator lint_off UNUSEDSIGNAL */  // only the low bits address the buffer / carry meaning
    wire [31:0] dec_d = e_len - 32'd16 - {27'h0, icvb};
    /* verilator lint_on UNUSEDSIGNAL */

    // ESN inference (RFC 4303 appendix A2.2) and the replay check.
    wire [31:0] seq_lo = br_data[95:64];
    wire [31:0] tl = w_seq[31:0];
    wire [31:0] th = w_seq[63:32];
    wire [31:0] lo_edge = tl - 32'd63;
    wire [31:0] sh = (tl >= 32'd63) ? ((seq_lo >= lo_edge) ? th : th + 32'd1)
                                    : ((seq_lo >= lo_edge) ? th - 32'd1 : th);
    wire [63:0] seq_full = esn ? {sh, seq_lo} : {32'h0, seq_lo};
    wire [63:0] rdiff = w_seq - seq_full;
    wire        replay = (seq_full == 64'h0)
                      || (seq_full <= w_seq && (rdiff >= 64'd64 || w_win[rdiff[5:0]]));
    // Window update for seq_new (authenticated).
    wire [63:0] adv = seq_new - w_seq;
    /* verilator lint_off UNUSEDSIGNAL */  // only the low bits address the buffer / carry meaning
    wire [63:0] rdiff_new = w_seq - seq_new;
    /* verilator lint_on UNUSEDSIGNAL */
    wire [63:0] win_next = (seq_new > w_seq) ? ((adv >= 64'd64) ? 64'h1 : ((w_win << adv[5:0]) | 64'h1))
                                             : (w_win | (64'h1 << rdiff_new[5:0]));
    wire [63:0] top_next = (seq_new > w_seq) ? seq_new : w_seq;

    wire [127:0] icv_mask = {128{1'b1}} << {(5'd16 - icvb), 3'b000};
    wire [127:0] aad_block = esn ? {w_spi, seq_new[63:32], seq_new[31:0], 32'h0}
                                 : {w_spi, seq_new[31:0], 64'h0};
    wire [7:0]  trail_byte = (bi < {6'h0, pad}) ? bi + 8'd1 : (bi == {6'h0, pad}) ? {6'h0, pad} : e_nh;

    // Word addresses of the block being read, written, wiped, and of the ICV
    // (computed wide, used to the buffer's address width).
    /* verilator lint_off UNUSEDSIGNAL */
    wire [11:0] in_w = 12'd4 + {in_blk[9:0], 2'b00};
    wire [11:0] out_w0 = 12'd4 + {out_blk[9:0], 2'b00};
    wire [11:0] out_w1 = out_w0 + 12'd1;
    wire [11:0] out_w2 = out_w0 + 12'd2;
    wire [11:0] out_w3 = out_w0 + 12'd3;
    wire [11:0] wp_w0 = 12'd4 + {2'b00, bi, 2'b00};
    wire [11:0] wp_w1 = wp_w0 + 12'd1;
    wire [11:0] wp_w2 = wp_w0 + 12'd2;
    wire [11:0] wp_w3 = wp_w0 + 12'd3;
    wire [15:0] icv_w = ((d_len + 16'd16) >> 2) + {8'h0, bi};
    /* verilator lint_on UNUSEDSIGNAL */

    // Combinational port addresses and core controls.
    always @(*) begin
        br_addr = {BA{1'b0}};
        rb_addr = 16'h0;
        g_in_valid = 1'b0;
        g_in_block = 128'h0;
        case (est)
            E_STREAM: begin
                br_addr = in_w[BA-1:0];
                g_in_valid = !aad_sent || in_blk < nblk;
                g_in_block = aad_sent ? br_data : aad_block;
            end
            E_TRAIL: rb_addr = 16'd16 + p_len + {8'h0, bi};
            E_ICVCAP: rb_addr = 16'd16 + d_len + {8'h0, bi};
            E_TRCHK: rb_addr = 16'd16 + d_len - 16'd1;
            E_TRCHK2: rb_addr = 16'd16 + d_len - 16'd2;
            E_PADCHK: rb_addr = 16'd16 + d_len - 16'd2 - {8'h0, rx_pad} + {8'h0, bi};
            default: ;
        endcase
    end

    // ----------------------------------------------------------- bus reads
    reg [31:0] sa_rd, esp_rd;
    wire [31:0] rsa = ra - SA_BASE;
    wire [31:0] resp = ra - ESP_BASE;
    /* verilator lint_off UNUSEDSIGNAL */  // only the low bits address the buffer / carry meaning
    wire [31:0] rbuf_i = (resp - ESP_R_BUF) >> 2;
    /* verilator lint_on UNUSEDSIGNAL */
    always @(*) begin
        case (rsa)
            SA_R_TYPE: sa_rd = BLOCK_TYPE_SA;
            SA_R_VERSION: sa_rd = SA_VERSION;
            SA_R_NEXT: sa_rd = ESP_BASE;
            SA_R_CAP_SLOTS: sa_rd = SLOTS32;
            SA_R_CAP_WINDOW: sa_rd = SA_WINDOW;
            SA_R_CAP_FEATURES: sa_rd = 32'h3f;
            SA_R_OCCUPANCY: sa_rd = occupancy;
            SA_R_CMD: sa_rd = sa_cmd;
            SA_R_STATUS: sa_rd = {16'h0, sa_err, 4'h0, sa_stvalid, 1'b0, sa_done, sa_busy};
            SA_R_SLOT: sa_rd = sa_slot;
            SA_R_SPI: sa_rd = st_spi;
            SA_R_CONFIG: sa_rd = st_cfg;
            SA_R_SALT: sa_rd = 32'h0;
            SA_R_SEQ_LO: sa_rd = st_seq[31:0];
            SA_R_SEQ_HI: sa_rd = st_seq[63:32];
            SA_R_WIN_LO: sa_rd = st_win[31:0];
            SA_R_WIN_HI: sa_rd = st_win[63:32];
            SA_R_PKTS_LO: sa_rd = st_pkts[31:0];
            SA_R_PKTS_HI: sa_rd = st_pkts[63:32];
            SA_R_BYTES_LO: sa_rd = st_bytes[31:0];
            SA_R_BYTES_HI: sa_rd = st_bytes[63:32];
            SA_R_AUTH_FAILS: sa_rd = st_auth;
            SA_R_REPLAYS: sa_rd = st_repl;
            SA_R_CMD_COUNT: sa_rd = sa_cmd_count;
            SA_R_ERR_COUNT: sa_rd = sa_err_count;
            default: sa_rd = (rsa >= SA_R_KEY && rsa < SA_R_KEY + 4 * SA_R_KEY_COUNT) ? 32'h0 : UNMAPPED_PATTERN;
        endcase
        case (resp)
            ESP_R_TYPE: esp_rd = BLOCK_TYPE_ESP;
            ESP_R_VERSION: esp_rd = ESP_VERSION;
            ESP_R_NEXT: esp_rd = PORT_BASE;
            ESP_R_CAP_BUF_BYTES: esp_rd = BUF_BYTES32;
            ESP_R_CMD: esp_rd = e_cmd;
            ESP_R_STATUS: esp_rd = {16'h0, e_err, 6'h0, e_done, e_busy};
            ESP_R_SLOT: esp_rd = e_slot;
            ESP_R_LEN: esp_rd = e_len;
            ESP_R_NEXT_HDR: esp_rd = {24'h0, e_nh};
            ESP_R_SEQ_LO: esp_rd = e_seq[31:0];
            ESP_R_SEQ_HI: esp_rd = e_seq[63:32];
            ESP_R_CMD_COUNT: esp_rd = e_cmd_count;
            ESP_R_ERR_COUNT: esp_rd = e_err_count;
            ESP_R_AUTH_FAILS: esp_rd = e_auth_count;
            ESP_R_REPLAYS: esp_rd = e_repl_count;
            default: esp_rd = (resp >= ESP_R_BUF && resp < BUF_END)
                              ? (e_busy ? 32'h0 : buf_rd(rbuf_i[BA-1:0])) : UNMAPPED_PATTERN;
        endcase
        if (ra >= SA_BASE && ra < SA_END) rd_data = sa_rd;
        else if (ra >= ESP_BASE && ra < ESP_END) rd_data = esp_rd;
        else rd_data = UNMAPPED_PATTERN;
    end

    // -------------------------------------------------------- sequential
    integer k;
    always @(posedge clk) begin : seq_logic
        reg       sa_fin;    // the SA command finishes on this edge
        reg [7:0] sa_fe;     // its error
        reg       sa_drop;   // an SA CMD write dropped on this edge
        reg       e_drop;    // an ESP CMD write dropped on this edge
        sa_fin = 1'b0;
        sa_fe = 8'h0;
        sa_drop = 1'b0;
        e_drop = 1'b0;
        g_key_load <= 1'b0;
        g_start <= 1'b0;
        if (rst) begin
            s_valid <= {SLOTS{1'b0}};
            sa_cmd <= 32'h0; sa_slot <= 32'h0; st_spi <= 32'h0; st_cfg <= 32'h0; st_salt <= 32'h0;
            st_key <= 256'h0; st_seq <= 64'h0; st_win <= 64'h0; st_pkts <= 64'h0; st_bytes <= 64'h0;
            st_auth <= 32'h0; st_repl <= 32'h0;
            sa_cmd_count <= 32'h0; sa_err_count <= 32'h0; occupancy <= 32'h0;
            sa_busy <= 1'b0; sa_done <= 1'b0; sa_stvalid <= 1'b0; sa_err <= 8'h0; sa_op <= 32'h0;
            flush_idx <= {SB{1'b0}};
            e_cmd <= 32'h0; e_slot <= 32'h0; e_len <= 32'h0; e_nh <= 8'h0; e_seq <= 64'h0;
            e_cmd_count <= 32'h0; e_err_count <= 32'h0; e_auth_count <= 32'h0; e_repl_count <= 32'h0;
            e_busy <= 1'b0; e_done <= 1'b0; e_err <= 8'h0;
            est <= E_IDLE;
            key_cached <= 1'b0;
            cached_slot <= {SB{1'b0}};
            w_slot <= {SB{1'b0}}; w_spi <= 32'h0; w_salt <= 32'h0; w_seq <= 64'h0; w_win <= 64'h0;
            w_key <= 256'h0; w_cfg <= 13'h0; seq_new <= 64'h0; p_len <= 16'h0; pad <= 2'd0;
            d_len <= 16'h0; op_decap <= 1'b0; bi <= 8'h0; icv_rx <= 128'h0; rx_pad <= 8'h0;
            rx_nh <= 8'h0; in_blk <= 12'h0; out_blk <= 12'h0; nblk <= 12'h0; aad_sent <= 1'b0;
            fin_err <= 8'h0; g_iv <= 96'h0;
            buf_ok <= {BUF_WORDS{1'b0}};
        end else begin
            // ------------------------------------------ SA block: staging
            if (sa_w && !sa_busy) begin
                if (sa_o == SA_R_SLOT) sa_slot <= wr_data;
                if (sa_o == SA_R_SPI) st_spi <= wr_data;
                if (sa_o == SA_R_CONFIG) st_cfg <= wr_data & CFG_MASK;
                if (sa_o == SA_R_SALT) st_salt <= wr_data;
                if (sa_o == SA_R_SEQ_LO) st_seq[31:0] <= wr_data;
                if (sa_o == SA_R_SEQ_HI) st_seq[63:32] <= wr_data;
                if (sa_o == SA_R_WIN_LO) st_win[31:0] <= wr_data;
                if (sa_o == SA_R_WIN_HI) st_win[63:32] <= wr_data;
                if (sa_o == SA_R_PKTS_LO) st_pkts[31:0] <= wr_data;
                if (sa_o == SA_R_PKTS_HI) st_pkts[63:32] <= wr_data;
                if (sa_o == SA_R_BYTES_LO) st_bytes[31:0] <= wr_data;
                if (sa_o == SA_R_BYTES_HI) st_bytes[63:32] <= wr_data;
                if (sa_o == SA_R_AUTH_FAILS) st_auth <= wr_data;
                if (sa_o == SA_R_REPLAYS) st_repl <= wr_data;
                for (k = 0; k < 8; k = k + 1)
                    if (sa_o == SA_R_KEY + 4 * k) st_key[255 - 32 * k -: 32] <= wr_data;
            end
            if (sa_cmd_w) begin
                if (sa_start) begin
                    sa_cmd <= wr_data;
                    sa_busy <= 1'b1;
                    sa_done <= 1'b0;
                    sa_stvalid <= 1'b0;
                    sa_err <= 8'h0;
                    sa_op <= wr_data;
                    flush_idx <= {SB{1'b0}};
                end else begin
                    sa_drop = 1'b1;
                end
            end
            // ------------------------------------------ SA block: execute
            if (sa_busy) begin
                if (sa_op == SA_CMD_FLUSH_ALL) begin
                    s_key[flush_idx] <= 256'h0;
                    s_salt[flush_idx] <= 32'h0;
                    flush_idx <= flush_idx + 1'b1;
                    key_cached <= 1'b0;
                    if ({{(32 - SB){1'b0}}, flush_idx} == SLOTS32 - 32'd1) begin
                        s_valid <= {SLOTS{1'b0}};
                        occupancy <= 32'h0;
                        sa_fin = 1'b1;
                    end
                end else begin
                    sa_fin = 1'b1;
                    case (sa_op)
                        SA_CMD_WRITE: begin
                            st_salt <= 32'h0;
                            st_key <= 256'h0;
                            key_cached <= 1'b0;
                            if (!slot_ok_s) begin
                                sa_fe = SA_ERR_BAD_SLOT[7:0];
                            end else if (st_cfg[12:8] != 5'd8 && st_cfg[12:8] != 5'd12 && st_cfg[12:8] != 5'd16) begin
                                sa_fe = SA_ERR_BAD_CONFIG[7:0];
                            end else begin
                                s_spi[s_slot_i] <= st_spi;
                                s_cfg[s_slot_i] <= st_cfg[12:0];
                                s_salt[s_slot_i] <= st_salt;
                                s_key[s_slot_i] <= st_key;
                                s_seq[s_slot_i] <= st_seq;
                                s_win[s_slot_i] <= st_win;
                                s_pkts[s_slot_i] <= st_pkts;
                                s_bytes[s_slot_i] <= st_bytes;
                                s_auth[s_slot_i] <= st_auth;
                                s_repl[s_slot_i] <= st_repl;
                                s_valid[s_slot_i] <= 1'b1;
                                if (!s_valid[s_slot_i]) occupancy <= occupancy + 32'd1;
                            end
                        end
                        SA_CMD_INVALIDATE: begin
                            key_cached <= 1'b0;
                            if (!slot_ok_s) begin
                                sa_fe = SA_ERR_BAD_SLOT[7:0];
                            end else begin
                                s_key[s_slot_i] <= 256'h0;
                                s_salt[s_slot_i] <= 32'h0;
                                s_valid[s_slot_i] <= 1'b0;
                                if (s_valid[s_slot_i]) occupancy <= occupancy - 32'd1;
                            end
                        end
                        SA_CMD_READ: begin
                            if (!slot_ok_s) begin
                                sa_fe = SA_ERR_BAD_SLOT[7:0];
                            end else begin
                                st_spi <= s_spi[s_slot_i];
                                st_cfg <= {19'h0, s_cfg[s_slot_i]};
                                st_seq <= s_seq[s_slot_i];
                                st_win <= s_win[s_slot_i];
                                st_pkts <= s_pkts[s_slot_i];
                                st_bytes <= s_bytes[s_slot_i];
                                st_auth <= s_auth[s_slot_i];
                                st_repl <= s_repl[s_slot_i];
                                sa_stvalid <= s_valid[s_slot_i];
                            end
                        end
                        SA_CMD_SET_STATE: begin
                            if (!slot_ok_s) begin
                                sa_fe = SA_ERR_BAD_SLOT[7:0];
                            end else if (!s_valid[s_slot_i]) begin
                                sa_fe = SA_ERR_NOT_VALID[7:0];
                            end else begin
                                s_seq[s_slot_i] <= st_seq;
                                s_win[s_slot_i] <= st_win;
                                s_pkts[s_slot_i] <= st_pkts;
                                s_bytes[s_slot_i] <= st_bytes;
                                s_auth[s_slot_i] <= st_auth;
                                s_repl[s_slot_i] <= st_repl;
                            end
                        end
                        default: begin
                            sa_fe = SA_ERR_UNKNOWN_CMD[7:0];
                        end
                    endcase
                end
            end

            // A command finishing and a dropped CMD write on the same edge:
            // the running command's own error wins, the drop still counts.
            if (sa_fin) begin
                sa_busy <= 1'b0;
                sa_done <= 1'b1;
                sa_cmd_count <= sa_cmd_count + 32'd1;
                sa_err <= (sa_fe != 8'h0) ? sa_fe : (sa_drop ? SA_ERR_BUSY[7:0] : sa_err);
                sa_err_count <= sa_err_count + {31'h0, sa_drop} + {31'h0, sa_fe != 8'h0};
            end else if (sa_drop) begin
                sa_err <= SA_ERR_BUSY[7:0];
                sa_err_count <= sa_err_count + 32'd1;
            end

            // ----------------------------------------- ESP block: staging
            if (esp_w && !e_busy) begin
                if (esp_o == ESP_R_SLOT) e_slot <= wr_data;
                if (esp_o == ESP_R_LEN) e_len <= wr_data;
                if (esp_o == ESP_R_NEXT_HDR) e_nh <= wr_data[7:0];
            end
            if (buf_w) begin
                buf_mem[buf_wi[BA-1:0]] <= wr_data;
                buf_ok[buf_wi[BA-1:0]] <= 1'b1;
            end
            if (esp_cmd_w) begin
                if (esp_start) begin
                    e_cmd <= wr_data;
                    e_busy <= 1'b1;
                    e_done <= 1'b0;
                    e_err <= 8'h0;
                    op_decap <= (wr_data == ESP_CMD_DECAP);
                    if (wr_data == ESP_CMD_ENCAP || wr_data == ESP_CMD_DECAP) begin
                        est <= E_LOAD;
                    end else begin
                        fin_err <= ESP_ERR_UNKNOWN_CMD[7:0];
                        est <= E_FIN;
                    end
                end else begin
                    e_drop = 1'b1;
                end
            end

            // ------------------------------------------ ESP block: engine
            case (est)
                E_LOAD: begin
                    w_slot <= e_slot_i;
                    w_spi <= s_spi[e_slot_i];
                    w_cfg <= s_cfg[e_slot_i];
                    w_salt <= s_salt[e_slot_i];
                    w_key <= s_key[e_slot_i];
                    w_seq <= s_seq[e_slot_i];
                    w_win <= s_win[e_slot_i];
                    if (!slot_ok_e || !s_valid[e_slot_i]) begin
                        fin_err <= ESP_ERR_BAD_SLOT[7:0];
                        est <= E_FIN;
                    end else if (s_cfg[e_slot_i][0] == op_decap) begin
                        fin_err <= ESP_ERR_WRONG_DIR[7:0];
                        est <= E_FIN;
                    end else begin
                        est <= E_CHECK;
                    end
                end
                E_CHECK: begin
                    bi <= 8'h0;
                    if (!op_decap) begin
                        if (esn ? (w_seq == {64{1'b1}}) : (w_seq >= 64'h0000_0000_ffff_ffff)) begin
                            fin_err <= ESP_ERR_SEQ_EXHAUSTED[7:0];
                            est <= E_FIN;
                        end else if (!enc_fits) begin
                            fin_err <= ESP_ERR_TOO_LONG[7:0];
                            est <= E_FIN;
                        end else begin
                            seq_new <= w_seq + 64'd1;
                            p_len <= e_len[15:0];
                            pad <= enc_pad32[1:0];
                            d_len <= enc_d[15:0];
                            nblk <= enc_d16[15:4];
                            est <= E_TRAIL;
                        end
                    end else begin
                        if (!dec_len_ok) begin
                            fin_err <= ESP_ERR_MALFORMED[7:0];
                            est <= E_FIN;
                        end else if (br_data[127:96] != w_spi) begin
                            fin_err <= ESP_ERR_SPI_MISMATCH[7:0];
                            est <= E_FIN;
                        end else if (replay) begin
                            e_seq <= seq_full;
                            s_repl[w_slot] <= s_repl[w_slot] + 32'd1;
                            e_repl_count <= e_repl_count + 32'd1;
                            fin_err <= ESP_ERR_REPLAY[7:0];
                            est <= E_FIN;
                        end else begin
                            e_seq <= seq_full;
                            seq_new <= seq_full;
                            d_len <= dec_d[15:0];
                            nblk <= dec_d[15:4] + {11'h0, dec_d[3:0] != 4'h0};
                            g_iv <= {w_salt, br_data[63:0]};
                            icv_rx <= 128'h0;
                            est <= E_ICVCAP;
                        end
                    end
                end
                E_TRAIL: begin
                    buf_mem[rb_addr[BA+1:2]] <= (rb_word & ~(32'hff000000 >> {rb_addr[1:0], 3'b000}))
                                              | ({trail_byte, 24'h0} >> {rb_addr[1:0], 3'b000});
                    buf_ok[rb_addr[BA+1:2]] <= 1'b1;
                    bi <= bi + 8'd1;
                    if (bi == {6'h0, pad} + 8'd1) est <= E_HDR;
                end
                E_HDR: begin
                    buf_mem[0] <= w_spi;
                    buf_ok[0] <= 1'b1;
                    buf_mem[1] <= seq_new[31:0];
                    buf_ok[1] <= 1'b1;
                    buf_mem[2] <= seq_new[63:32];
                    buf_ok[2] <= 1'b1;
                    buf_mem[3] <= seq_new[31:0];
                    buf_ok[3] <= 1'b1;
                    g_iv <= {w_salt, seq_new};
                    est <= E_KEY;
                end
                E_ICVCAP: begin
                    icv_rx[127 - 8 * bi[3:0] -: 8] <= rb_byte;
                    bi <= bi + 8'd1;
                    if (bi == {3'h0, icvb} - 8'd1) est <= E_KEY;
                end
                E_KEY: begin
                    if (key_cached && cached_slot == w_slot) begin
                        est <= E_START;
                    end else begin
                        g_key_load <= 1'b1;
                        est <= E_KEYWAIT;
                    end
                end
                E_KEYWAIT: begin
                    if (g_ready && !g_key_load) begin
                        key_cached <= 1'b1;
                        cached_slot <= w_slot;
                        est <= E_START;
                    end
                end
                E_START: begin
                    g_start <= 1'b1;
                    in_blk <= 12'h0;
                    out_blk <= 12'h0;
                    aad_sent <= 1'b0;
                    est <= E_STREAM;
                end
                E_STREAM: begin
                    if (g_in_valid && g_in_ready) begin
                        if (!aad_sent) aad_sent <= 1'b1;
                        else in_blk <= in_blk + 12'd1;
                    end
                    if (g_out_valid) begin
                        buf_mem[out_w0[BA-1:0]] <= g_out_block[127:96];
                        buf_ok[out_w0[BA-1:0]] <= 1'b1;
                        buf_mem[out_w1[BA-1:0]] <= g_out_block[95:64];
                        buf_ok[out_w1[BA-1:0]] <= 1'b1;
                        buf_mem[out_w2[BA-1:0]] <= g_out_block[63:32];
                        buf_ok[out_w2[BA-1:0]] <= 1'b1;
                        buf_mem[out_w3[BA-1:0]] <= g_out_block[31:0];
                        buf_ok[out_w3[BA-1:0]] <= 1'b1;
                        out_blk <= out_blk + 12'd1;
                    end
                    if (g_tag_valid) begin
                        icv_rx <= g_tag;   // ENCAP: the ICV to write
                        bi <= 8'h0;
                        if (!op_decap) begin
                            est <= E_ICVW;
                        end else if (((g_tag ^ icv_rx) & icv_mask) != 128'h0) begin
                            s_auth[w_slot] <= s_auth[w_slot] + 32'd1;
                            e_auth_count <= e_auth_count + 32'd1;
                            fin_err <= ESP_ERR_AUTH[7:0];
                            est <= E_WIPE;
                        end else begin
                            s_seq[w_slot] <= top_next;
                            s_win[w_slot] <= win_next;
                            est <= E_TRCHK;
                        end
                    end
                end
                E_ICVW: begin
                    buf_mem[icv_w[BA-1:0]] <= icv_rx[127 - 32 * bi[1:0] -: 32];
                    buf_ok[icv_w[BA-1:0]] <= 1'b1;
                    bi <= bi + 8'd1;
                    if ({bi[5:0], 2'b00} + 8'd4 == {3'h0, icvb}) begin
                        e_len <= {16'h0, d_len} + 32'd16 + {27'h0, icvb};
                        e_seq <= seq_new;
                        s_seq[w_slot] <= seq_new;
                        s_pkts[w_slot] <= s_pkts[w_slot] + 64'd1;
                        s_bytes[w_slot] <= s_bytes[w_slot] + {48'h0, p_len};
                        fin_err <= ESP_ERR_OK[7:0];
                        est <= E_FIN;
                    end
                end
                E_TRCHK: begin
                    rx_nh <= rb_byte;
                    est <= E_TRCHK2;
                end
                E_TRCHK2: begin
                    rx_pad <= rb_byte;
                    bi <= 8'h0;
                    if ({8'h0, rb_byte} + 16'd2 > d_len) begin
                        fin_err <= ESP_ERR_MALFORMED[7:0];
                        est <= E_WIPE;
                    end else begin
                        est <= E_PADCHK;
                    end
                end
                E_PADCHK: begin
                    if (bi == rx_pad) begin
                        e_len <= {16'h0, d_len - 16'd2 - {8'h0, rx_pad}};
                        e_nh <= rx_nh;
                        e_seq <= seq_new;
                        s_pkts[w_slot] <= s_pkts[w_slot] + 64'd1;
                        s_bytes[w_slot] <= s_bytes[w_slot] + {48'h0, d_len - 16'd2 - {8'h0, rx_pad}};
                        fin_err <= ESP_ERR_OK[7:0];
                        est <= E_FIN;
                    end else if (rb_byte != bi + 8'd1) begin
                        bi <= 8'h0;
                        fin_err <= ESP_ERR_MALFORMED[7:0];
                        est <= E_WIPE;
                    end else begin
                        bi <= bi + 8'd1;
                    end
                end
                E_WIPE: begin
                    // Zero every block the engine wrote (ceil(D/16) blocks from byte 16).
                    if ({4'h0, bi} == nblk) begin
                        est <= E_FIN;
                    end else begin
                        buf_mem[wp_w0[BA-1:0]] <= 32'h0;
                        buf_ok[wp_w0[BA-1:0]] <= 1'b1;
                        buf_mem[wp_w1[BA-1:0]] <= 32'h0;
                        buf_ok[wp_w1[BA-1:0]] <= 1'b1;
                        buf_mem[wp_w2[BA-1:0]] <= 32'h0;
                        buf_ok[wp_w2[BA-1:0]] <= 1'b1;
                        buf_mem[wp_w3[BA-1:0]] <= 32'h0;
                        buf_ok[wp_w3[BA-1:0]] <= 1'b1;
                        bi <= bi + 8'd1;
                    end
                end
                E_FIN: begin
                    e_busy <= 1'b0;
                    e_done <= 1'b1;
                    e_cmd_count <= e_cmd_count + 32'd1;
                    e_err <= (fin_err != 8'h0) ? fin_err : (e_drop ? ESP_ERR_BUSY[7:0] : e_err);
                    e_err_count <= e_err_count + {31'h0, e_drop} + {31'h0, fin_err != 8'h0};
                    est <= E_IDLE;
                end
                default: ;
            endcase
            if (e_drop && est != E_FIN) begin
                e_err <= ESP_ERR_BUSY[7:0];
                e_err_count <= e_err_count + 32'd1;
            end
        end
    end
endmodule

`resetall
