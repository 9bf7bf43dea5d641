`resetall
`timescale 1ns / 1ps
`default_nettype none

// Ternary CAM of DEPTH entries, each {key, mask, result[31:0], did, valid, hit}.
//
// Entry i matches search key k when valid[i] && ((k ^ key[i]) & mask[i]) == 0;
// the lowest matching index wins. Widths come from hdl/generated/regmap.vh.
//
// Management side (one command at a time, see hdl/CARD.md for the meaning of
// each code): pulse op_start with op_code; the op_* argument inputs must hold
// still until op_done (card_top drops staging writes while a command runs).
// With op_start sampled on edge t, the stages run on the edges after it:
//   t+1 VEC    per-entry vector: match (SEARCH), free (INSERT), flush (FLUSH_DID)
//   t+2 ENC    priority encoder: lowest set index of that vector
//   t+3 COMMIT the table changes on this one edge; the o_* outputs are loaded
//   t+4 COUNT  occupancy := number of valid entries; op_done is high after it
//
// Data-path side: one key per clock on dp_valid/dp_key. The key is compared
// against the whole table on the edge that samples it (so it sees the table as
// it stood when it entered) and the winner's hit bit is set on that same edge;
// the answer then passes CAM_LOOKUP_LATENCY-1 delay registers, so dp_out_*
// shows it CAM_LOOKUP_LATENCY clocks after the key was sampled.
//
// Hit bits on one edge: HIT_RC's read-and-clear comes first, then data-path
// and SEARCH hits set bits, then WRITE/INSERT/INVALIDATE/FLUSH clear the bits
// of the entries they replace or drop.
//
// The key/mask/result/did arrays are never cleared in bulk: a `written` bit per
// entry (cleared by reset) makes READ of a never-written entry return zeros,
// which is what a cleared entry reads.
module tcam (
    clk,
    rst,
    op_start,
    op_code,
    op_index,
    op_key,
    op_mask,
    op_result,
    op_did,
    op_did_bitmap,
    op_prof_ok,
    op_done,
    o_err,
    o_match,
    o_valid,
    o_hit,
    o_index,
    o_key,
    o_mask,
    o_result,
    o_did,
    o_hits,
    o_ld_entry,
    o_ld_index,
    o_ld_rd,
    o_ld_hits,
    occupancy,
    o_store,
    o_store_at,
    dp_valid,
    dp_key,
    dp_out_valid,
    dp_hit,
    dp_index,
    dp_result,
    dp_did,
    dp_lookups,
    dp_hits
);

  /* verilator lint_off UNUSEDPARAM */
  `include "regmap.vh"
  /* verilator lint_on UNUSEDPARAM */

  // Number of entries (at least 2).
  parameter integer DEPTH = 1024;

  localparam integer KB = CAM_KEY_BITS;  // key and mask width
  localparam integer KW = KB / 32;  // key words
  localparam integer FIRST_WORD = KW > 8 ? 8 : 0;  // see dp_match
  // Distribution identifier width (CAP_DID_BITS; at least 5). Synthesis runs
  // use fewer bits to keep the FLUSH_DID bitmap small.
  parameter integer DID_BITS = CAM_DID_BITS;

  localparam integer BMB = 2 ** DID_BITS;  // DID bitmap width
  localparam integer DB = DID_BITS;  // distribution identifier width
  localparam integer IW = $clog2(DEPTH);  // entry index width
  localparam integer LAT = CAM_LOOKUP_LATENCY;
  localparam [31:0] DEPTH32 = DEPTH;
  localparam [31:0] HIT_WORDS = (DEPTH + 31) / 32;
  // One data-path answer: {hit, index, result, did}.
  localparam integer PW = 1 + IW + 32 + DB;

  input wire clk;
  input wire rst;

  input wire op_start;
  input wire [31:0] op_code;
  input wire [31:0] op_index;
  input wire [KB-1:0] op_key;
  input wire [KB-1:0] op_mask;
  input wire [31:0] op_result;
  input wire [DB-1:0] op_did;
  input wire [BMB-1:0] op_did_bitmap;
  // The command's mask profile number is in range (WRITE_P, INSERT_P: the
  // CMD word's profile; SET_PROFILE: INDEX); card_top keeps the profiles and
  // feeds a WRITE_P/INSERT_P the profile's mask on op_mask.
  input wire op_prof_ok;
  output reg op_done;
  output reg [7:0] o_err;
  output reg o_match;
  output reg o_valid;
  output reg o_hit;
  output reg [31:0] o_index;
  output reg [KB-1:0] o_key;
  output reg [KB-1:0] o_mask;
  output reg [31:0] o_result;
  output reg [DB-1:0] o_did;
  output reg [31:0] o_hits;
  output reg o_ld_entry;  // READ: load KEY, MASK, RESULT, DID from o_*
  output reg o_ld_index;  // SEARCH, INSERT: load INDEX from o_index
  output reg o_ld_rd;  // SEARCH hit: load RESULT, DID from o_*
  output reg o_ld_hits;  // HIT_RC: load HITS from o_hits
  output reg [31:0] occupancy;
  // WRITE or INSERT stored entry o_store_at (one clock, the clock after the
  // commit): the packet port restarts that entry's counters.
  output reg o_store;
  output reg [31:0] o_store_at;

  input wire dp_valid;
  input wire [KB-1:0] dp_key;
  output wire dp_out_valid;
  output wire dp_hit;
  output wire [31:0] dp_index;
  output wire [31:0] dp_result;
  output wire [DB-1:0] dp_did;
  output reg [31:0] dp_lookups;
  output reg [31:0] dp_hits;

  // ---------------------------------------------------------------- storage
  reg [KB-1:0] key_mem[0:DEPTH-1];
  reg [KB-1:0] mask_mem[0:DEPTH-1];
  reg [31:0] res_mem[0:DEPTH-1];
  reg [DB-1:0] did_mem[0:DEPTH-1];
  reg [DEPTH-1:0] valid;
  reg [DEPTH-1:0] hit;
  reg [DEPTH-1:0] written;

  // No function here takes or returns a vector as wide as the table: the
  // simulator keeps such arguments in temporaries that it clears on every
  // clock. The per-entry loops are written where they are used instead.

  // Whether entry e's key matches the data-path key under its mask. The
  // hardware compares every word at once. A simulator that did the same would
  // compare every word of every valid entry on every clock; so, outside
  // synthesis, the same function is written word by word, each word compared
  // only while the words before it matched, starting with the port word (key
  // word 8 of the layout in hdl/CARD.md), which tells most entries apart.
  // (Written that way for synthesis, the chain of conditions costs Yosys
  // minutes and gigabytes for a 16-entry table.)
  function automatic dp_match(input [IW-1:0] e);
`ifdef SYNTHESIS
    dp_match = ~|((dp_key ^ key_mem[e]) & mask_mem[e]);
`else
    integer j;
    integer w;
    begin
      dp_match = 1'b1;
      for (j = 0; j < KW; j = j + 1) begin
        w = (FIRST_WORD + j) % KW;
        if (dp_match) dp_match = ~|((dp_key[w*32+:32] ^ key_mem[e][w*32+:32]) & mask_mem[e][w*32+:32]);
      end
    end
`endif
  endfunction

  // {found, lowest set index} of dp_mv (dp) or c_vec: the lowest 32-bit word
  // with a bit set, then the lowest set bit of that word (a two-level priority
  // encoder; the simulator scans HIT_WORDS words and 32 bits, not DEPTH bits).
  function automatic [IW:0] first_set(input dp);
    reg [31:0] word;
    /* verilator lint_off UNUSEDSIGNAL */  // only the low IW bits are an index
    reg [31:0] at;
    /* verilator lint_on UNUSEDSIGNAL */
    integer w;
    integer b;
    begin
      word = 32'd0;
      at = 32'd0;
      for (w = HIT_WORDS - 1; w >= 0; w = w - 1)
      if (|(dp ? dp_mv[w*32+:32] : c_vec[w*32+:32])) begin
        word = dp ? dp_mv[w*32+:32] : c_vec[w*32+:32];
        at = w * 32;
      end
      first_set = {(IW + 1) {1'b0}};
      for (b = 31; b >= 0; b = b - 1) if (word[b]) first_set = {1'b1, at[IW-1:0] | b[IW-1:0]};
    end
  endfunction

  // ---------------------------------------------------------- command engine
  localparam [2:0] S_IDLE = 3'd0, S_VEC = 3'd1, S_ENC = 3'd2, S_COMMIT = 3'd3, S_COUNT = 3'd4;
  reg [2:0] state;
  reg [31:0] c_code;  // command being run
  reg [7:0] c_err;  // error known before the commit (bad index, unknown)
  // VEC result (the bits past DEPTH stay zero)
  reg [HIT_WORDS*32-1:0] c_vec;
  reg c_found;  // ENC result
  reg [IW-1:0] c_sel;

  // Data-path stage 1 (the table is read here) and the delay line after it.
  reg [PW-1:0] dp_s1;
  // Which entries match the key stage 1 samples: a temporary of this clock
  // (assigned and read in the same edge), not a register.
  reg [HIT_WORDS*32-1:0] dp_mv;
  reg dp_s1_v;

  wire [IW-1:0] arg_idx = op_index[IW-1:0];

  always @(posedge clk) begin : seq
    reg [DEPTH-1:0] hn;  // next hit bits
    reg [DEPTH-1:0] vn;  // next valid bits
    reg [DEPTH-1:0] wn;  // next written bits
    reg [DEPTH-1:0] ec;  // entries replaced or dropped by this edge's commit
    reg upd;  // any of the above change on this edge
    reg store;  // WRITE or INSERT: the staged entry goes into slot store_at
    reg [IW-1:0] store_at;
    reg [IW:0] fs;
    reg [31:0] e;
    reg [7:0] err;
    reg [HIT_WORDS*32-1:0] vec;  // S_VEC's vector
    reg [31:0] cnt;  // S_COUNT's count
    integer b;
    integer i;
    if (rst) begin
      state <= S_IDLE;
      c_code <= 32'd0;
      c_err <= 8'd0;
      c_vec <= {HIT_WORDS * 32{1'b0}};
      c_found <= 1'b0;
      c_sel <= {IW{1'b0}};
      valid <= {DEPTH{1'b0}};
      hit <= {DEPTH{1'b0}};
      written <= {DEPTH{1'b0}};
      occupancy <= 32'd0;
      o_store <= 1'b0;
      o_store_at <= 32'd0;
      op_done <= 1'b0;
      o_err <= 8'd0;
      o_match <= 1'b0;
      o_valid <= 1'b0;
      o_hit <= 1'b0;
      o_index <= 32'd0;
      o_key <= {KB{1'b0}};
      o_mask <= {KB{1'b0}};
      o_result <= 32'd0;
      o_did <= {DB{1'b0}};
      o_hits <= 32'd0;
      o_ld_entry <= 1'b0;
      o_ld_index <= 1'b0;
      o_ld_rd <= 1'b0;
      o_ld_hits <= 1'b0;
      dp_s1 <= {PW{1'b0}};
      dp_s1_v <= 1'b0;
      dp_lookups <= 32'd0;
      dp_hits <= 32'd0;
    end else begin
      hn = hit;
      vn = valid;
      wn = written;
      ec = {DEPTH{1'b0}};
      upd = 1'b0;
      store = 1'b0;
      store_at = arg_idx;
      op_done <= 1'b0;
      o_store <= 1'b0;

      // ---- management commands
      case (state)
        S_IDLE:
        if (op_start) begin
          c_code <= op_code;
          case (op_code)
            CAM_CMD_WRITE, CAM_CMD_INVALIDATE, CAM_CMD_READ:
            c_err <= (op_index >= DEPTH32) ? CAM_ERR_BAD_INDEX[7:0] : CAM_ERR_OK[7:0];
            CAM_CMD_HIT_RC:
            c_err <= (op_index >= HIT_WORDS) ? CAM_ERR_BAD_INDEX[7:0] : CAM_ERR_OK[7:0];
            CAM_CMD_SEARCH, CAM_CMD_FLUSH_ALL, CAM_CMD_FLUSH_DID, CAM_CMD_INSERT, CAM_CMD_BATCH_START:
            c_err <= CAM_ERR_OK[7:0];
            CAM_CMD_SET_PROFILE, CAM_CMD_INSERT_P:
            c_err <= op_prof_ok ? CAM_ERR_OK[7:0] : CAM_ERR_BAD_PROFILE[7:0];
            CAM_CMD_WRITE_P:
            c_err <= !op_prof_ok ? CAM_ERR_BAD_PROFILE[7:0]
                : (op_index >= DEPTH32) ? CAM_ERR_BAD_INDEX[7:0] : CAM_ERR_OK[7:0];
            default: c_err <= CAM_ERR_UNKNOWN_CMD[7:0];
          endcase
          state <= S_VEC;
        end
        S_VEC: begin
          // SEARCH: the valid entries that match; INSERT: the free ones;
          // FLUSH_DID: the valid ones whose identifier is in the bitmap.
          vec = {HIT_WORDS * 32{1'b0}};
          for (i = 0; i < DEPTH; i = i + 1)
          case (c_code)
            CAM_CMD_SEARCH:
            vec[i] = valid[i] && ~|((op_key ^ key_mem[i]) & mask_mem[i]);
            CAM_CMD_INSERT, CAM_CMD_INSERT_P: vec[i] = ~valid[i];
            CAM_CMD_FLUSH_DID: vec[i] = valid[i] && op_did_bitmap[did_mem[i]];
            default: ;
          endcase
          c_vec <= vec;
          state <= S_ENC;
        end
        S_ENC: begin
          fs = first_set(1'b0);
          c_found <= fs[IW];
          c_sel <= fs[IW-1:0];
          state <= S_COMMIT;
        end
        S_COMMIT: begin
          err = c_err;
          o_match <= 1'b0;
          o_valid <= 1'b0;
          o_hit <= 1'b0;
          o_ld_entry <= 1'b0;
          o_ld_index <= 1'b0;
          o_ld_rd <= 1'b0;
          o_ld_hits <= 1'b0;
          if (c_err == CAM_ERR_OK[7:0]) begin
            case (c_code)
              CAM_CMD_WRITE, CAM_CMD_WRITE_P: store = 1'b1;
              CAM_CMD_INVALIDATE: begin
                vn[arg_idx] = 1'b0;
                ec[arg_idx] = 1'b1;
                upd = 1'b1;
              end
              CAM_CMD_READ: begin
                o_key <= written[arg_idx] ? key_mem[arg_idx] : {KB{1'b0}};
                o_mask <= written[arg_idx] ? mask_mem[arg_idx] : {KB{1'b0}};
                o_result <= written[arg_idx] ? res_mem[arg_idx] : 32'd0;
                o_did <= written[arg_idx] ? did_mem[arg_idx] : {DB{1'b0}};
                o_valid <= valid[arg_idx];
                o_hit <= hit[arg_idx];
                o_ld_entry <= 1'b1;
              end
              CAM_CMD_SEARCH: begin
                o_ld_index <= 1'b1;
                if (c_found) begin
                  o_match <= 1'b1;
                  o_index <= {{(32 - IW) {1'b0}}, c_sel};
                  o_result <= res_mem[c_sel];
                  o_did <= did_mem[c_sel];
                  o_ld_rd <= 1'b1;
                  hn[c_sel] = 1'b1;
                  upd = 1'b1;
                end else begin
                  o_index <= 32'hFFFF_FFFF;
                end
              end
              CAM_CMD_FLUSH_ALL: begin
                vn = {DEPTH{1'b0}};
                ec = {DEPTH{1'b1}};
                upd = 1'b1;
              end
              CAM_CMD_FLUSH_DID: begin
                vn = vn & ~c_vec[DEPTH-1:0];
                ec = c_vec[DEPTH-1:0];
                upd = 1'b1;
              end
              CAM_CMD_HIT_RC: begin
                for (b = 0; b < 32; b = b + 1) begin
                  e = {op_index[26:0], 5'd0} + b;
                  if (e < DEPTH32) begin
                    o_hits[b] <= hit[e[IW-1:0]];
                    hn[e[IW-1:0]] = 1'b0;
                  end else begin
                    o_hits[b] <= 1'b0;
                  end
                end
                o_ld_hits <= 1'b1;
                upd = 1'b1;
              end
              CAM_CMD_INSERT, CAM_CMD_INSERT_P: begin
                if (c_found) begin
                  store = 1'b1;
                  store_at = c_sel;
                  o_index <= {{(32 - IW) {1'b0}}, c_sel};
                  o_ld_index <= 1'b1;
                end else begin
                  err = CAM_ERR_FULL[7:0];
                end
              end
              default: ;
            endcase
            if (store) begin
              key_mem[store_at] <= op_key;
              mask_mem[store_at] <= op_mask;
              res_mem[store_at] <= op_result;
              did_mem[store_at] <= op_did;
              vn[store_at] = 1'b1;
              wn[store_at] = 1'b1;
              ec[store_at] = 1'b1;
              upd = 1'b1;
              o_store <= 1'b1;
              o_store_at <= {{(32 - IW) {1'b0}}, store_at};
            end
          end
          o_err <= err;
          state <= S_COUNT;
        end
        S_COUNT: begin
          cnt = 32'd0;
          for (i = 0; i < DEPTH; i = i + 1) cnt = cnt + {31'd0, valid[i]};
          occupancy <= cnt;
          op_done <= 1'b1;
          state <= S_IDLE;
        end
        default: state <= S_IDLE;
      endcase

      // ---- data path, stage 1: compare against the table as it stands
      dp_s1_v <= dp_valid;
      if (dp_valid) begin
        /* verilator lint_off BLKSEQ */  // dp_mv: this edge's temporary
        dp_mv = {HIT_WORDS * 32{1'b0}};
        for (i = 0; i < DEPTH; i = i + 1) if (valid[i]) dp_mv[i] = dp_match(i[IW-1:0]);
        /* verilator lint_on BLKSEQ */
        fs = first_set(1'b1);
        dp_s1 <= {fs[IW], fs[IW-1:0], fs[IW] ? res_mem[fs[IW-1:0]] : 32'd0,
                  fs[IW] ? did_mem[fs[IW-1:0]] : {DB{1'b0}}};
        dp_lookups <= dp_lookups + 32'd1;
        if (fs[IW]) begin
          dp_hits <= dp_hits + 32'd1;
          hn[fs[IW-1:0]] = 1'b1;
          upd = 1'b1;
        end
      end

      if (upd) begin
        hit <= hn & ~ec;
        valid <= vn;
        written <= wn;
      end
    end
  end

  // ----------------------------------------------- data-path delay registers
  wire [LAT*(PW+1)-1:0] dp_chain;
  assign dp_chain[PW:0] = {dp_s1_v, dp_s1};
  genvar g;
  generate
    for (g = 1; g < LAT; g = g + 1) begin : g_dp_delay
      reg [PW:0] r;
      always @(posedge clk) begin
        if (rst) r <= {(PW + 1) {1'b0}};
        else r <= dp_chain[(g-1)*(PW+1)+:(PW+1)];
      end
      assign dp_chain[g*(PW+1)+:(PW+1)] = r;
    end
  endgenerate

  wire [PW:0] dp_out = dp_chain[(LAT-1)*(PW+1)+:(PW+1)];
  wire [IW-1:0] dp_out_idx;
  assign {dp_out_valid, dp_hit, dp_out_idx, dp_result, dp_did} = dp_out;
  assign dp_index = {{(32 - IW) {1'b0}}, dp_out_idx};

endmodule

`resetall
