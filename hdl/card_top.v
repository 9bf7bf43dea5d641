`resetall
`timescale 1ns / 1ps
`default_nettype none

// The card: an AXI4-Lite slave (BAR0) holding the identity block and the CAM
// block, in front of the ternary CAM (tcam.v), plus the CAM's data-path lookup
// port; the SA table and ESP engine blocks live in crypto/esp_engine.v, the
// packet port block (the Ethernet wires and the card's data path) in port.v.
// Register numbers come only from hdl/generated/regmap.vh; behaviour is
// hdl/CARD.md.
//
// Bus: one outstanding write and one outstanding read. A write is accepted on
// the edge where AWVALID and WVALID are both high (AWREADY = WREADY = that
// condition while no response is pending); BVALID follows on the next clock.
// A read is accepted when ARVALID is high and no read data is pending; RVALID
// and RDATA follow on the next clock. Responses are always OKAY.
//
// Soft reset (IDENT.CONTROL.SOFT_RESET) takes effect one clock after the write
// is accepted and clears every register but the bus handshake state.
//
// A CAM command is BUSY from the edge that accepts the CMD write (a) until
// edge a+6: the start register (a), the engine in tcam.v (a+1 .. a+5, the
// table changing on a+4) and the STATUS update (a+6).
//
// In simulation (not under SYNTHESIS) an unaligned bus address stops the
// simulator ($stop): no conforming master sends one.
module card_top (
    clk,
    rst_n,
    s_axi_awaddr,
    s_axi_awvalid,
    s_axi_awready,
    s_axi_wdata,
    s_axi_wstrb,
    s_axi_wvalid,
    s_axi_wready,
    s_axi_bresp,
    s_axi_bvalid,
    s_axi_bready,
    s_axi_araddr,
    s_axi_arvalid,
    s_axi_arready,
    s_axi_rdata,
    s_axi_rresp,
    s_axi_rvalid,
    s_axi_rready,
    dp_valid,
    dp_key,
    dp_out_valid,
    dp_hit,
    dp_index,
    dp_result,
    dp_did,
    rx0_tvalid,
    rx0_tready,
    rx0_tdata,
    rx0_tkeep,
    rx0_tlast,
    rx1_tvalid,
    rx1_tready,
    rx1_tdata,
    rx1_tkeep,
    rx1_tlast,
    tx0_tvalid,
    tx0_tready,
    tx0_tdata,
    tx0_tkeep,
    tx0_tlast,
    tx1_tvalid,
    tx1_tready,
    tx1_tdata,
    tx1_tkeep,
    tx1_tlast,
    port_busy
);

  /* verilator lint_off UNUSEDPARAM */
  `include "regmap.vh"
  /* verilator lint_on UNUSEDPARAM */

  // Number of CAM entries (CAP_DEPTH).
  parameter integer DEPTH = 1024;
  // Value of IDENT.BUILD_ID.
  parameter [31:0] BUILD_ID = IDENT_BUILD_ID_SIM;
  // SA slots (SA CAP_SLOTS) and packet buffer words (ESP CAP_BUF_BYTES / 4).
  parameter integer SA_DEPTH = SA_SLOTS;
  parameter integer ESP_BUF_WORDS = ESP_BUF_BYTES / 4;
  // Packet port block (hdl/port.v): longest frame, host queue depth and
  // identifiers (CAP_FRAME_BYTES, CAP_HOSTQ_DEPTH, CAP_IDS). Synthesis runs
  // use smaller values; the contract's are the defaults.
  parameter integer PORT_FRAME = PORT_FRAME_BYTES;
  parameter integer PORT_QDEPTH = PORT_HOSTQ_DEPTH;
  parameter integer PORT_NIDS = PORT_IDS;
  // CAM identifier width (CAP_DID_BITS, at least 5; DID_BITMAP holds 2^bits
  // bits, words past them read 0). Synthesis runs use fewer.
  parameter integer CAM_DID_BITS_P = CAM_DID_BITS;
  // Mask profiles (CAP_PROFILES, at least 2). Synthesis runs use fewer.
  parameter integer CAM_PROFILES_P = CAM_PROFILES;

  localparam integer KB = CAM_KEY_BITS;
  localparam integer BMB = 2 ** CAM_DID_BITS_P;
  localparam integer DB = CAM_DID_BITS_P;
  localparam [31:0] BMW = BMB / 32;  // DID_BITMAP words held
  localparam [31:0] DEPTH32 = DEPTH;
  localparam [31:0] DB32 = DB;
  localparam integer NPROF = CAM_PROFILES_P;
  localparam [31:0] NPROF32 = NPROF;
  localparam [31:0] CAM_END = CAM_BASE + CAM_SPAN;
  localparam [31:0] IDENT_END = IDENT_BASE + IDENT_SPAN;

  input wire clk;
  input wire rst_n;  // synchronous, active low

  input wire [15:0] s_axi_awaddr;
  input wire s_axi_awvalid;
  output wire s_axi_awready;
  input wire [31:0] s_axi_wdata;
  // Every write is a full-word write (hdl/CARD.md), so the strobes are unused.
  /* verilator lint_off UNUSEDSIGNAL */
  input wire [3:0] s_axi_wstrb;
  /* verilator lint_on UNUSEDSIGNAL */
  input wire s_axi_wvalid;
  output wire s_axi_wready;
  output wire [1:0] s_axi_bresp;
  output wire s_axi_bvalid;
  input wire s_axi_bready;
  input wire [15:0] s_axi_araddr;
  input wire s_axi_arvalid;
  output wire s_axi_arready;
  output wire [31:0] s_axi_rdata;
  output wire [1:0] s_axi_rresp;
  output wire s_axi_rvalid;
  input wire s_axi_rready;

  input wire dp_valid;
  input wire [KB-1:0] dp_key;
  output wire dp_out_valid;
  output wire dp_hit;
  output wire [31:0] dp_index;
  output wire [31:0] dp_result;
  output wire [DB-1:0] dp_did;

  // Packet port block wires (AXI4-Stream, 64-bit): port 0 outside, 1 inside.
  input wire rx0_tvalid;
  output wire rx0_tready;
  input wire [63:0] rx0_tdata;
  input wire [7:0] rx0_tkeep;
  input wire rx0_tlast;
  input wire rx1_tvalid;
  output wire rx1_tready;
  input wire [63:0] rx1_tdata;
  input wire [7:0] rx1_tkeep;
  input wire rx1_tlast;
  output wire tx0_tvalid;
  input wire tx0_tready;
  output wire [63:0] tx0_tdata;
  output wire [7:0] tx0_tkeep;
  output wire tx0_tlast;
  output wire tx1_tvalid;
  input wire tx1_tready;
  output wire [63:0] tx1_tdata;
  output wire [7:0] tx1_tkeep;
  output wire tx1_tlast;
  // The packet port block is handling a frame or running a command.
  output wire port_busy;

  // ------------------------------------------------------------ bus handshake
  reg bvalid_q;
  reg rvalid_q;
  reg [31:0] rdata_q;
  wire wr_hold;  // a CAM-block write waits for a batch command (below)
  wire wr_fire = s_axi_awvalid && s_axi_wvalid && !bvalid_q && !wr_hold;
  wire rd_fire = s_axi_arvalid && !rvalid_q;
  assign s_axi_awready = wr_fire;
  assign s_axi_wready = wr_fire;
  assign s_axi_bvalid = bvalid_q;
  assign s_axi_bresp = 2'b00;
  assign s_axi_arready = !rvalid_q;
  assign s_axi_rvalid = rvalid_q;
  assign s_axi_rdata = rdata_q;
  assign s_axi_rresp = 2'b00;

  wire [31:0] wa = {16'd0, s_axi_awaddr};
  assign wr_hold = run_batch && wa >= CAM_BASE && wa < CAM_END;
  wire [31:0] wd = s_axi_wdata;
  wire [31:0] ra = {16'd0, s_axi_araddr};

  // ------------------------------------------------------------- registers
  reg soft_rst_q;
  wire rst = !rst_n || soft_rst_q;

  reg [31:0] scratch;
  reg [KB-1:0] key_s;
  reg [KB-1:0] mask_s;
  reg [NPROF*KB-1:0] prof_s;  // mask profile p = prof_s[p*KB +: KB]
  reg [31:0] batch_done;
  reg [31:0] batch_errs;
  reg [31:0] batch_err;
  reg [31:0] result_s;
  reg [31:0] index_s;
  reg [DB-1:0] did_s;
  reg [BMB-1:0] bitmap_s;
  reg [31:0] cmd_s;
  reg [31:0] hits_s;
  reg [31:0] cmd_count;
  reg [31:0] err_count;
  reg busy;
  reg done;
  reg st_match;
  reg st_valid;
  reg st_hit;
  reg [7:0] st_err;
  reg start;

  wire [31:0] status = ({31'd0, busy} << CAM_STATUS_BUSY_LSB)
                     | ({31'd0, done} << CAM_STATUS_DONE_LSB)
                     | ({31'd0, st_match} << CAM_STATUS_MATCH_LSB)
                     | ({31'd0, st_valid} << CAM_STATUS_VALID_LSB)
                     | ({31'd0, st_hit} << CAM_STATUS_HIT_LSB)
                     | ({24'd0, st_err} << CAM_STATUS_ERR_LSB);

  // ------------------------------------------------------------------ CAM
  wire op_done;
  wire [7:0] o_err;
  wire o_match;
  wire o_valid;
  wire o_hit;
  wire [31:0] o_index;
  wire [KB-1:0] o_key;
  wire [KB-1:0] o_mask;
  wire [31:0] o_result;
  wire [DB-1:0] o_did;
  wire [31:0] o_hits;
  wire o_ld_entry;
  wire o_ld_index;
  wire o_ld_rd;
  wire o_ld_hits;
  wire [31:0] occupancy;
  wire [31:0] dp_lookups;
  wire [31:0] dp_hits;

  // The data-path port is shared: an external key (dp_valid) goes first, the
  // packet port's lookup waits for a clock without one. Both see every
  // answer on dp_out_*; the packet port tracks which answers are its own.
  wire port_dp_req;
  wire [KB-1:0] port_dp_key;
  wire port_dp_grant = !dp_valid;
  wire cam_dp_valid = dp_valid || port_dp_req;
  wire [KB-1:0] cam_dp_key = dp_valid ? dp_key : port_dp_key;
  wire cam_store;
  wire [31:0] cam_store_at;

  // The CMD word: WRITE_P and INSERT_P carry a mask profile in CMD.PROFILE
  // (bits 31:16 zero); every other word is a code of its own. cmd_s holds the
  // running command's word until it completes.
  wire [7:0] cmd_lo = cmd_s[CAM_CMD_CODE_LSB+:8];
  wire [7:0] cmd_prof = cmd_s[CAM_CMD_PROFILE_LSB+:8];
  wire cmd_is_p = cmd_s[31:16] == 16'd0
                  && (cmd_lo == CAM_CMD_WRITE_P[7:0] || cmd_lo == CAM_CMD_INSERT_P[7:0]);
  wire [31:0] cmd_code = cmd_is_p ? {24'd0, cmd_lo} : cmd_s;
  wire prof_ok = cmd_is_p ? {24'd0, cmd_prof} < NPROF32 : index_s < NPROF32;
  // The running WRITE_P/INSERT_P's profile mask (a plain multiplexer: a variable
  // part-select of prof_s would make synthesis build a shifter of all of it).
  reg [KB-1:0] prof_mask;
  always @* begin : prof_rd
    integer p;
    prof_mask = {KB{1'b0}};
    for (p = 0; p < NPROF; p = p + 1) if ({24'd0, cmd_prof} == p) prof_mask = prof_s[p*KB+:KB];
  end
  wire [KB-1:0] op_mask = cmd_is_p ? prof_mask : mask_s;
  // The mask-profile and batch commands: while one runs, CAM-block writes wait
  // (AWREADY/WREADY low) instead of being dropped.
  wire run_batch = busy && (cmd_is_p || cmd_code == CAM_CMD_SET_PROFILE
                            || cmd_code == CAM_CMD_BATCH_START);

  tcam #(
      .DEPTH(DEPTH),
      .DID_BITS(CAM_DID_BITS_P)
  ) u_tcam (
      .clk(clk),
      .rst(rst),
      .op_start(start),
      .op_code(cmd_code),
      .op_index(index_s),
      .op_key(key_s),
      .op_mask(op_mask),
      .op_result(result_s),
      .op_did(did_s),
      .op_did_bitmap(bitmap_s),
      .op_prof_ok(prof_ok),
      .op_done(op_done),
      .o_err(o_err),
      .o_match(o_match),
      .o_valid(o_valid),
      .o_hit(o_hit),
      .o_index(o_index),
      .o_key(o_key),
      .o_mask(o_mask),
      .o_result(o_result),
      .o_did(o_did),
      .o_hits(o_hits),
      .o_ld_entry(o_ld_entry),
      .o_ld_index(o_ld_index),
      .o_ld_rd(o_ld_rd),
      .o_ld_hits(o_ld_hits),
      .occupancy(occupancy),
      .o_store(cam_store),
      .o_store_at(cam_store_at),
      .dp_valid(cam_dp_valid),
      .dp_key(cam_dp_key),
      .dp_out_valid(dp_out_valid),
      .dp_hit(dp_hit),
      .dp_index(dp_index),
      .dp_result(dp_result),
      .dp_did(dp_did),
      .dp_lookups(dp_lookups),
      .dp_hits(dp_hits)
  );

  // SA table and ESP engine blocks (hdl/crypto/esp_engine.v).
  wire [31:0] esp_rdata;
  esp_engine #(
      .SLOTS(SA_DEPTH),
      .BUF_WORDS(ESP_BUF_WORDS)
  ) u_esp (
      .clk(clk),
      .rst(rst),
      .wr_en(wr_fire),
      .wr_addr(s_axi_awaddr),
      .wr_data(wd),
      .rd_addr(s_axi_araddr),
      .rd_data(esp_rdata)
  );
  wire esp_rd = ra >= SA_BASE && ra < ESP_BASE + ESP_SPAN;

  // Packet port block (hdl/port.v).
  wire [31:0] port_rdata;
  port #(
      .FRAME_BYTES(PORT_FRAME),
      .QDEPTH(PORT_QDEPTH),
      .IDS(PORT_NIDS),
      .DEPTH(DEPTH)
  ) u_port (
      .clk(clk),
      .rst(rst),
      .wr_en(wr_fire),
      .wr_addr(s_axi_awaddr),
      .wr_data(wd),
      .rd_addr(s_axi_araddr),
      .rd_data(port_rdata),
      .rx0_tvalid(rx0_tvalid),
      .rx0_tready(rx0_tready),
      .rx0_tdata(rx0_tdata),
      .rx0_tkeep(rx0_tkeep),
      .rx0_tlast(rx0_tlast),
      .rx1_tvalid(rx1_tvalid),
      .rx1_tready(rx1_tready),
      .rx1_tdata(rx1_tdata),
      .rx1_tkeep(rx1_tkeep),
      .rx1_tlast(rx1_tlast),
      .tx0_tvalid(tx0_tvalid),
      .tx0_tready(tx0_tready),
      .tx0_tdata(tx0_tdata),
      .tx0_tkeep(tx0_tkeep),
      .tx0_tlast(tx0_tlast),
      .tx1_tvalid(tx1_tvalid),
      .tx1_tready(tx1_tready),
      .tx1_tdata(tx1_tdata),
      .tx1_tkeep(tx1_tkeep),
      .tx1_tlast(tx1_tlast),
      .dp_req(port_dp_req),
      .dp_req_key(port_dp_key),
      .dp_grant(port_dp_grant),
      .dp_out_valid(dp_out_valid),
      .dp_hit(dp_hit),
      .dp_index(dp_index),
      .dp_result(dp_result),
      .cam_store(cam_store),
      .cam_store_at(cam_store_at),
      .busy(port_busy)
  );
  wire port_rd = ra >= PORT_BASE && ra < PORT_BASE + PORT_SPAN;

  // ------------------------------------------------------------ address map
  // Word w of a register array at block offset `base` with `count` words.
  function automatic in_array(input [31:0] off, input [31:0] base, input [31:0] count);
    in_array = off[1:0] == 2'b00 && off >= base && off < base + (count << 2);
  endfunction

  // Bit position of the register at block offset off in a packed array at base.
  function automatic [31:0] bit_of(input [31:0] off, input [31:0] base);
    bit_of = (off - base) << 3;
  endfunction

  // The value a read of BAR offset a returns.
  function automatic [31:0] read_reg(input [31:0] a);
    reg [31:0] o;
    begin
      read_reg = UNMAPPED_PATTERN;
      if (a < IDENT_END) begin
        o = a - IDENT_BASE;
        case (o)
          IDENT_R_TYPE: read_reg = BLOCK_TYPE_IDENT;
          IDENT_R_VERSION: read_reg = IDENT_VERSION;
          IDENT_R_NEXT: read_reg = CAM_BASE;
          IDENT_R_MAGIC: read_reg = IDENT_MAGIC;
          IDENT_R_BUILD_ID: read_reg = BUILD_ID;
          IDENT_R_SCRATCH: read_reg = scratch;
          IDENT_R_CONTROL: read_reg = 32'd0;
          IDENT_R_BAR_BYTES: read_reg = BAR_SIZE;
          default: read_reg = UNMAPPED_PATTERN;
        endcase
      end else if (a >= CAM_BASE && a < CAM_END) begin
        o = a - CAM_BASE;
        if (in_array(o, CAM_R_KEY, CAM_R_KEY_COUNT)) begin
          read_reg = key_s[bit_of(o, CAM_R_KEY)+:32];
        end else if (in_array(o, CAM_R_MASK, CAM_R_MASK_COUNT)) begin
          read_reg = mask_s[bit_of(o, CAM_R_MASK)+:32];
        end else if (in_array(o, CAM_R_DID_BITMAP, CAM_R_DID_BITMAP_COUNT)) begin
          read_reg = in_array(o, CAM_R_DID_BITMAP, BMW) ? bitmap_s[bit_of(o, CAM_R_DID_BITMAP)+:32] : 32'd0;
        end else begin
          case (o)
            CAM_R_TYPE: read_reg = BLOCK_TYPE_CAM;
            CAM_R_VERSION: read_reg = CAM_VERSION;
            CAM_R_NEXT: read_reg = SA_BASE;
            CAM_R_CAP_DEPTH: read_reg = DEPTH32;
            CAM_R_CAP_KEY_BITS: read_reg = CAM_KEY_BITS;
            CAM_R_CAP_RESULT_BITS: read_reg = 32'd32;
            CAM_R_CAP_DID_BITS: read_reg = DB32;
            CAM_R_CAP_LOOKUP_LATENCY: read_reg = CAM_LOOKUP_LATENCY;
            CAM_R_OCCUPANCY: read_reg = occupancy;
            CAM_R_CMD: read_reg = cmd_s;
            CAM_R_STATUS: read_reg = status;
            CAM_R_INDEX: read_reg = index_s;
            CAM_R_RESULT: read_reg = result_s;
            CAM_R_DID: read_reg = {{(32 - DB) {1'b0}}, did_s};
            CAM_R_HITS: read_reg = hits_s;
            CAM_R_DP_LOOKUPS: read_reg = dp_lookups;
            CAM_R_DP_HITS: read_reg = dp_hits;
            CAM_R_CMD_COUNT: read_reg = cmd_count;
            CAM_R_ERR_COUNT: read_reg = err_count;
            CAM_R_CAP_PROFILES: read_reg = NPROF32;
            CAM_R_BATCH_DONE: read_reg = batch_done;
            CAM_R_BATCH_ERRS: read_reg = batch_errs;
            CAM_R_BATCH_ERR: read_reg = batch_err;
            default: read_reg = UNMAPPED_PATTERN;
          endcase
        end
      end
    end
  endfunction

  // ------------------------------------------------------------ bus side
  always @(posedge clk) begin
    if (!rst_n) begin
      bvalid_q <= 1'b0;
      rvalid_q <= 1'b0;
      rdata_q <= 32'd0;
    end else begin
      if (wr_fire) bvalid_q <= 1'b1;
      else if (s_axi_bready) bvalid_q <= 1'b0;
      if (rd_fire) begin
        rvalid_q <= 1'b1;
        rdata_q <= esp_rd ? esp_rdata : port_rd ? port_rdata : read_reg(ra);
      end else if (s_axi_rready) begin
        rvalid_q <= 1'b0;
      end
    end
  end

  always @(posedge clk) begin
    if (!rst_n) soft_rst_q <= 1'b0;
    else
      soft_rst_q <= wr_fire && wa == IDENT_BASE + IDENT_R_CONTROL
                    && wd[IDENT_CONTROL_SOFT_RESET_LSB];
  end

`ifndef SYNTHESIS
  // Simulation check: this slave serves whole, aligned 32-bit words only
  // (hdl/CARD.md); a master that sends anything else is broken, so stop the
  // simulation rather than guess.
  always @(posedge clk) begin
    if (rst_n && ((wr_fire && s_axi_awaddr[1:0] != 2'b00) || (rd_fire && s_axi_araddr[1:0] != 2'b00)))
      $stop;
  end
`endif

  // ------------------------------------------------------- register file
  always @(posedge clk) begin : regfile
    reg [31:0] o;
    reg drop;  // a CMD write dropped because a command is running
    reg [7:0] own;  // error of the command completing on this edge
    integer p;
    if (rst) begin
      scratch <= 32'd0;
      key_s <= {KB{1'b0}};
      mask_s <= {KB{1'b0}};
      prof_s <= {NPROF * KB{1'b0}};
      batch_done <= 32'd0;
      batch_errs <= 32'd0;
      batch_err <= 32'd0;
      result_s <= 32'd0;
      index_s <= 32'd0;
      did_s <= {DB{1'b0}};
      bitmap_s <= {BMB{1'b0}};
      cmd_s <= 32'd0;
      hits_s <= 32'd0;
      cmd_count <= 32'd0;
      err_count <= 32'd0;
      busy <= 1'b0;
      done <= 1'b0;
      st_match <= 1'b0;
      st_valid <= 1'b0;
      st_hit <= 1'b0;
      st_err <= 8'd0;
      start <= 1'b0;
    end else begin
      drop = 1'b0;
      own = o_err;
      start <= 1'b0;

      // ---- bus writes
      if (wr_fire) begin
        if (wa == IDENT_BASE + IDENT_R_SCRATCH) scratch <= wd;
        if (wa >= CAM_BASE && wa < CAM_END) begin
          o = wa - CAM_BASE;
          if (o == CAM_R_CMD) begin
            if (busy) begin
              drop = 1'b1;
            end else begin
              cmd_s <= wd;
              busy <= 1'b1;
              done <= 1'b0;
              st_match <= 1'b0;
              st_valid <= 1'b0;
              st_hit <= 1'b0;
              st_err <= CAM_ERR_OK[7:0];
              start <= 1'b1;
            end
          end else if (!busy) begin
            if (in_array(o, CAM_R_KEY, CAM_R_KEY_COUNT)) begin
              key_s[bit_of(o, CAM_R_KEY)+:32] <= wd;
            end else if (in_array(o, CAM_R_MASK, CAM_R_MASK_COUNT)) begin
              mask_s[bit_of(o, CAM_R_MASK)+:32] <= wd;
            end else if (in_array(o, CAM_R_DID_BITMAP, BMW)) begin
              bitmap_s[bit_of(o, CAM_R_DID_BITMAP)+:32] <= wd;
            end else if (o == CAM_R_INDEX) begin
              index_s <= wd;
            end else if (o == CAM_R_RESULT) begin
              result_s <= wd;
            end else if (o == CAM_R_DID) begin
              did_s <= wd[DB-1:0];
            end
          end
        end
      end

      // ---- command completion (busy is still set on this edge, so no
      // staging write can collide with the loads below)
      if (op_done) begin
        busy <= 1'b0;
        done <= 1'b1;
        st_match <= o_match;
        st_valid <= o_valid;
        st_hit <= o_hit;
        st_err <= (own != CAM_ERR_OK[7:0]) ? own : (drop ? CAM_ERR_BUSY[7:0] : st_err);
        cmd_count <= cmd_count + 32'd1;
        err_count <= err_count + {31'd0, drop} + {31'd0, own != CAM_ERR_OK[7:0]};
        if (o_ld_entry) begin
          key_s <= o_key;
          mask_s <= o_mask;
          result_s <= o_result;
          did_s <= o_did;
        end
        if (o_ld_index) index_s <= o_index;
        if (o_ld_rd) begin
          result_s <= o_result;
          did_s <= o_did;
        end
        if (o_ld_hits) hits_s <= o_hits;
        if (cmd_code == CAM_CMD_SET_PROFILE && own == CAM_ERR_OK[7:0])
          for (p = 0; p < NPROF; p = p + 1) if (index_s == p) prof_s[p*KB+:KB] <= mask_s;
        if (cmd_code == CAM_CMD_BATCH_START) begin
          batch_done <= 32'd0;
          batch_errs <= 32'd0;
          batch_err <= 32'd0;
        end
        if (cmd_is_p) begin
          batch_done <= batch_done + 32'd1;
          if (own != CAM_ERR_OK[7:0]) begin
            batch_errs <= batch_errs + 32'd1;
            if (batch_errs == 32'd0)
              batch_err <= ({24'd0, own} << CAM_BATCH_ERR_CODE_LSB)
                         | ({8'd0, batch_done[23:0]} << CAM_BATCH_ERR_POS_LSB);
          end
        end
      end else if (drop) begin
        st_err <= CAM_ERR_BUSY[7:0];
        err_count <= err_count + 32'd1;
      end
    end
  end

endmodule

`resetall
