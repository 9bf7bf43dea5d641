`resetall
`timescale 1ns / 1ps
`default_nettype none

// The packet port block (hdl/CARD.md, "Packet port block"): two AXI4-Stream
// ports in and out, a store-and-forward frame buffer, the parser, the keyed
// SipHash-1-3 identifier, the owned bitmap, the lookup through the CAM's
// data-path port, the verdicts, the host receive queue and the counters.
//
// One frame at a time. The pipeline FSM (pstate) takes a frame from a port's
// wire (P_RX) or from HTX_BUF (P_COPY, SEND to IN0/IN1), parses it with an
// 8-byte window read out of the frame buffer at `rp` (one window per clock),
// hashes the identifier input (one SipHash round per clock), checks the owned
// bit, looks the flow up, settles the frame's fate (P_FATE: counters, queue,
// drop) and sends it out (P_TX) before it takes the next one.
//
// Frame buffer: NS slots of FRAME_BYTES bytes, stored as 64-bit rows (one
// row write per clock; a window is two rows shifted). The host receive queue is the
// ring of slots qhead .. qhead+qcount-1; a frame is received into slot
// qhead+qcount (the working slot), and queueing it is qcount += 1, so frames
// are never copied. NS is a power of two above QDEPTH, so the working slot is
// never a queued one.
//
// Counters that soft reset must clear but that live in memories (per
// identifier, per CAM entry, HTX_BUF, OWNED) carry a `live` bit per element in
// flip-flops: a clear element reads 0 and restarts from 0.
//
// Frames waiting on both wires take turns (the port not served last first).
// The block's own lookups wait for a clock without an external data-path key
// (dp_grant). A SEND waits for the frame in progress; while a command runs,
// HTX_BUF, HTX_LEN and HTX_DEST writes are dropped.
//
// The register read (rd_data) is combinational in rd_addr; card_top latches
// it. Writes are wr_en/wr_addr/wr_data, the bus address of the whole BAR.
module port #(
    // Longest frame (CAP_FRAME_BYTES), a power of two, at least 64.
    parameter integer FRAME_BYTES = 2048,
    // Host receive queue depth (CAP_HOSTQ_DEPTH).
    parameter integer QDEPTH = 8,
    // Identifiers with owned bits and counters (CAP_IDS), a power of two, >= 64.
    parameter integer IDS = 4096,
    // CAM entries (per-entry counters).
    parameter integer DEPTH = 1024
) (
    input wire clk,
    input wire rst,

    input wire wr_en,
    input wire [15:0] wr_addr,
    input wire [31:0] wr_data,
    input wire [15:0] rd_addr,
    output reg [31:0] rd_data,

    input wire rx0_tvalid,
    output wire rx0_tready,
    input wire [63:0] rx0_tdata,
    input wire [7:0] rx0_tkeep,
    input wire rx0_tlast,
    input wire rx1_tvalid,
    output wire rx1_tready,
    input wire [63:0] rx1_tdata,
    input wire [7:0] rx1_tkeep,
    input wire rx1_tlast,

    output wire tx0_tvalid,
    input wire tx0_tready,
    output wire [63:0] tx0_tdata,
    output wire [7:0] tx0_tkeep,
    output wire tx0_tlast,
    output wire tx1_tvalid,
    input wire tx1_tready,
    output wire [63:0] tx1_tdata,
    output wire [7:0] tx1_tkeep,
    output wire tx1_tlast,

    // CAM data-path port: dp_req with dp_req_key asks for a lookup; it is
    // taken on a clock where dp_grant is high. The answer is on dp_out_* the
    // lookup latency later (the port tracks its own lookups).
    output wire dp_req,
    output reg [319:0] dp_req_key,
    input wire dp_grant,
    input wire dp_out_valid,
    input wire dp_hit,
    input wire [31:0] dp_index,
    input wire [31:0] dp_result,
    // The CAM wrote entry cam_store_at (WRITE, INSERT): its counters restart.
    input wire cam_store,
    // Only the low bits that index DEPTH entries are used.
    /* verilator lint_off UNUSEDSIGNAL */
    input wire [31:0] cam_store_at,
    /* verilator lint_on UNUSEDSIGNAL */

    // The pipeline or a command is running (for simulators).
    output wire busy
);

  /* verilator lint_off UNUSEDPARAM */
  `include "regmap.vh"
  /* verilator lint_on UNUSEDPARAM */

  localparam integer FB = $clog2(FRAME_BYTES);
  localparam integer NS = 2 ** $clog2(QDEPTH + 1);
  localparam integer SB = $clog2(NS);
  localparam integer IB = $clog2(IDS);
  localparam integer EB = $clog2(DEPTH);
  localparam integer OWW = IDS / 32;
  localparam integer HW = FRAME_BYTES / 4;  // HTX_BUF words
  localparam integer LAT = CAM_LOOKUP_LATENCY;
  localparam [31:0] FRAME32A = FRAME_BYTES;
  localparam [15:0] FRAME16 = FRAME32A[15:0];
  localparam [31:0] FRAME32 = FRAME_BYTES;
  localparam [31:0] QDEPTH32 = QDEPTH;
  localparam [31:0] IDS32 = IDS;
  localparam [31:0] DEPTH32 = DEPTH;
  localparam [31:0] PORT_END = PORT_BASE + PORT_SPAN;

  // ------------------------------------------------------------- storage
  // Frame slots, 8 bytes a row: byte i of slot n is byte i%8 (bits 8(i%8)+7..8(i%8))
  // of row {n, i/8}.
  reg [63:0] fbr[0:NS*FRAME_BYTES/8-1];
  reg [31:0] htx[0:HW-1];
  reg [HW-1:0] htx_live;
  reg [31:0] owned[0:OWW-1];
  reg [OWW-1:0] owned_live;
  reg [31:0] did_pk[0:IDS-1];
  reg [63:0] did_by[0:IDS-1];
  reg [IDS-1:0] did_live;
  reg [31:0] ent_pk[0:DEPTH-1];
  reg [63:0] ent_by[0:DEPTH-1];
  reg [DEPTH-1:0] ent_live;
  reg [31:0] reason_cnt[0:31];
  reg [31:0] reason_live;

  // Queue metadata per slot.
  reg [15:0] q_len[0:NS-1];
  reg [31:0] q_meta[0:NS-1];
  reg [31:0] q_index[0:NS-1];
  reg [31:0] q_result[0:NS-1];
  reg [31:0] q_offs[0:NS-1];
  reg [SB-1:0] qhead;
  reg [SB:0] qcount;
  wire [SB-1:0] wslot = qhead + qcount[SB-1:0];

  // ------------------------------------------------------------- registers
  reg [11:0] id_mask;
  reg [127:0] hash_key;
  reg [31:0] cmd_r;
  reg c_busy, c_done;
  reg [7:0] c_err;
  reg [31:0] cmd_count, err_count;
  reg [31:0] rx_frames, forwarded, punted, dropped, tx_frames, host_sent;
  reg [31:0] htx_len;
  reg [1:0] htx_dest;
  reg [11:0] did_sel;
  reg [31:0] ent_sel;

  // Command engine.
  localparam [1:0] C_IDLE = 2'd0, C_START = 2'd1, C_WAIT = 2'd2;
  reg [1:0] cstate;
  reg send_req;  // a SEND waits for the pipeline
  reg send_done;  // the pipeline finished the SEND's frame (one clock)

  // ------------------------------------------------------------- pipeline
  localparam [5:0]
      P_IDLE = 6'd0, P_RX = 6'd1, P_COPY = 6'd2, P_START = 6'd3, P_ETH = 6'd4,
      P_VLAN = 6'd5, P_V4A = 6'd6, P_V4B = 6'd7, P_V4C = 6'd8, P_V6A = 6'd9,
      P_V6S0 = 6'd10, P_V6S1 = 6'd11, P_V6D0 = 6'd12, P_V6D1 = 6'd13, P_EXT = 6'd14,
      P_EXTRD = 6'd15, P_L4 = 6'd16, P_L4A = 6'd17, P_TCPB = 6'd18, P_IKEA = 6'd19,
      P_IKEB = 6'd20, P_NATT = 6'd21, P_HINIT = 6'd22, P_HC = 6'd23, P_HF = 6'd24,
      P_OWN = 6'd25, P_LOOKUP = 6'd26, P_LWAIT = 6'd27, P_FATE = 6'd28, P_TX = 6'd29,
      P_DONE = 6'd30, P_FLUSH = 6'd31;
  localparam [1:0] F_DROP = 2'd0, F_QUEUE = 2'd1, F_FWD = 2'd2;
  localparam [2:0] K_TCP = 3'd1, K_UDP = 3'd2, K_ICMP = 3'd3, K_ESP = 3'd4, K_IKE = 3'd5;

  reg [5:0] pstate;
  reg rport;  // port being received
  reg in_port;  // the frame's port
  reg from_host;
  reg job_send;  // the frame is a SEND's
  reg [15:0] flen;  // L (saturates past FRAME_BYTES)
  reg [15:0] rp;  // window pointer
  reg [15:0] l3, l4, pstart, pend, ike_base, ulen;
  reg [11:0] off_l3, off_l4;
  reg [7:0] proto;
  reg [2:0] walked;
  reg v6;
  reg [127:0] src, dst;
  reg [2:0] kind;
  reg [15:0] sport, dport, ident;
  // Only SYN, FIN and RST matter.
  /* verilator lint_off UNUSEDSIGNAL */
  reg [7:0] flags;
  /* verilator lint_on UNUSEDSIGNAL */
  reg [31:0] spi, msgid;
  reg [63:0] cookie;
  reg [1:0] fate;
  reg [7:0] f_reason;
  reg f_didv, f_hit;
  reg [11:0] f_did;
  reg [31:0] f_index, f_result;
  reg [63:0] v0, v1, v2, v3;
  reg [2:0] hblk;
  reg [1:0] hfin;
  reg [LAT-1:0] mine;
  reg tx_htx;  // TX source: HTX_BUF (else the working slot)
  reg tx_port;
  reg [15:0] tx_len;

  assign busy = pstate != P_IDLE || c_busy;

  // ------------------------------------------------------------- windows
  // Bytes rp .. rp+7 of the working slot.
  reg [63:0] wv;
  // Bytes rp .. rp+7 of HTX_BUF (rp a multiple of 8 when used).
  reg [63:0] hbv;
  always @* begin : win
    integer j;
    /* verilator lint_off UNUSEDSIGNAL */
    reg [127:0] two;
    /* verilator lint_on UNUSEDSIGNAL */
    two = {fbr[{wslot, rp[FB-1:3] + 1'b1}], fbr[{wslot, rp[FB-1:3]}]} >> {rp[2:0], 3'b000};
    wv = two[63:0];
    for (j = 0; j < 8; j = j + 1) hbv[8*j+:8] = htx_byte(rp[FB-1:0] + j[FB-1:0]);
  end
  wire [7:0] w0 = wv[7:0], w1 = wv[15:8], w2 = wv[23:16], w3 = wv[31:24];
  wire [7:0] w4 = wv[39:32], w5 = wv[47:40], w6 = wv[55:48], w7 = wv[63:56];

  function automatic [7:0] htx_byte(input [FB-1:0] off);
    reg [31:0] wd;
    reg [1:0] sh;
    begin
      wd = htx_live[off[FB-1:2]] ? htx[off[FB-1:2]] : 32'd0;
      sh = 2'd3 - off[1:0];
      htx_byte = wd[{sh, 3'b000}+:8];
    end
  endfunction

  wire [31:0] w32 = {w0, w1, w2, w3};
  wire [15:0] w01 = {w0, w1};
  wire [15:0] w23 = {w2, w3};
  wire [15:0] w45 = {w4, w5};
  wire [63:0] w64 = {w0, w1, w2, w3, w4, w5, w6, w7};

  // ------------------------------------------------------------- SipHash
  function automatic [63:0] rotl(input [63:0] x, input integer n);
    rotl = (x << n) | (x >> (64 - n));
  endfunction

  function automatic [255:0] sipround(input [255:0] v);
    reg [63:0] a, b, c, d;
    begin
      {a, b, c, d} = v;
      a = a + b;
      b = rotl(b, 13);
      b = b ^ a;
      a = rotl(a, 32);
      c = c + d;
      d = rotl(d, 16);
      d = d ^ c;
      a = a + d;
      d = rotl(d, 21);
      d = d ^ a;
      c = c + b;
      b = rotl(b, 17);
      b = b ^ c;
      c = rotl(c, 32);
      sipround = {a, b, c, d};
    end
  endfunction

  // Canonical order (CARD.md step 6).
  wire ports_k = kind == K_TCP || kind == K_UDP;
  wire [15:0] sp_k = ports_k ? sport : 16'd0;
  wire [15:0] dp_k = ports_k ? dport : 16'd0;
  wire src_lo = src < dst || (src == dst && sp_k <= dp_k);
  wire [127:0] lo = src_lo ? src : dst;
  wire [127:0] hi = src_lo ? dst : src;
  wire [15:0] lp = src_lo ? sp_k : dp_k;
  wire [15:0] hp = src_lo ? dp_k : sp_k;

  // The hash input: byte i at msg[8i+7:8i] (SipHash reads words little endian).
  reg [319:0] msg;
  reg [5:0] mlen;
  always @* begin : hin
    integer k;
    msg = 320'd0;
    mlen = 6'd0;
    case (kind)
      K_TCP, K_UDP: msg[7:0] = kind == K_TCP ? 8'd1 : 8'd2;
      K_ICMP: msg[7:0] = 8'd3;
      default: msg[7:0] = 8'd4;
    endcase
    if (v6) begin
      for (k = 0; k < 16; k = k + 1) begin
        msg[8*(1+k)+:8] = lo[8*(15-k)+:8];
      end
      if (ports_k) begin
        msg[8*17+:16] = {lp[7:0], lp[15:8]};
        for (k = 0; k < 16; k = k + 1) msg[8*(19+k)+:8] = hi[8*(15-k)+:8];
        msg[8*35+:16] = {hp[7:0], hp[15:8]};
        mlen = 6'd37;
      end else begin
        for (k = 0; k < 16; k = k + 1) msg[8*(17+k)+:8] = hi[8*(15-k)+:8];
        if (kind == K_ICMP) begin
          msg[8*33+:16] = {ident[7:0], ident[15:8]};
          mlen = 6'd35;
        end else begin
          mlen = 6'd33;
        end
      end
    end else begin
      for (k = 0; k < 4; k = k + 1) msg[8*(1+k)+:8] = lo[8*(3-k)+:8];
      if (ports_k) begin
        msg[8*5+:16] = {lp[7:0], lp[15:8]};
        for (k = 0; k < 4; k = k + 1) msg[8*(7+k)+:8] = hi[8*(3-k)+:8];
        msg[8*11+:16] = {hp[7:0], hp[15:8]};
        mlen = 6'd13;
      end else begin
        for (k = 0; k < 4; k = k + 1) msg[8*(5+k)+:8] = hi[8*(3-k)+:8];
        if (kind == K_ICMP) begin
          msg[8*9+:16] = {ident[7:0], ident[15:8]};
          mlen = 6'd11;
        end else begin
          mlen = 6'd9;
        end
      end
    end
  end

  wire [2:0] hlast = mlen[5:3];  // index of the block carrying the length
  wire [63:0] hm = (hblk == hlast) ? (msg[64*hblk+:64] | {2'd0, mlen, 56'd0}) : msg[64*hblk+:64];
  // The identifier keeps the low 12 bits.
  /* verilator lint_off UNUSEDSIGNAL */
  wire [63:0] hash = v0 ^ v1 ^ v2 ^ v3;
  /* verilator lint_on UNUSEDSIGNAL */
  wire [11:0] did = hash[11:0] & id_mask;
  wire [IB-1:0] did_i = did[IB-1:0];

  // The CAM search key (CARD.md step 8).
  always @* begin
    dp_req_key = 320'd0;
    case (kind)
      K_TCP, K_UDP: begin
        dp_req_key[127:0] = lo;
        dp_req_key[255:128] = hi;
        dp_req_key[287:256] = {hp, lp};
      end
      K_ICMP: begin
        dp_req_key[127:0] = lo;
        dp_req_key[255:128] = hi;
        dp_req_key[271:256] = ident;
      end
      K_ESP: begin
        dp_req_key[255:128] = dst;
        dp_req_key[287:256] = spi;
      end
      default: begin
        dp_req_key[63:0] = cookie;
        dp_req_key[95:64] = msgid;
      end
    endcase
    case (kind)
      K_TCP: dp_req_key[319:288] = {19'd0, v6, 4'd1, 8'd6};
      K_UDP: dp_req_key[319:288] = {19'd0, v6, 4'd2, 8'd17};
      K_ICMP: dp_req_key[319:288] = {19'd0, v6, 4'd3, v6 ? 8'd58 : 8'd1};
      K_ESP: dp_req_key[319:288] = {19'd0, v6, 4'd4, 8'd50};
      default: dp_req_key[319:288] = {19'd0, 1'b0, 4'd5, 8'd17};
    endcase
  end

  assign dp_req = pstate == P_LOOKUP;

  // ------------------------------------------------------------- wires
  assign rx0_tready = pstate == P_RX && !rport;
  assign rx1_tready = pstate == P_RX && rport;
  wire rx_v = rport ? rx1_tvalid : rx0_tvalid;
  wire [63:0] rx_d = rport ? rx1_tdata : rx0_tdata;
  wire [7:0] rx_k = rport ? rx1_tkeep : rx0_tkeep;
  wire rx_l = rport ? rx1_tlast : rx0_tlast;
  // Bytes of a beat: lanes from 0 up to the first clear tkeep bit.
  reg [3:0] rx_n;
  reg rx_stop;
  always @* begin : beat
    integer j;
    rx_n = 4'd0;
    rx_stop = 1'b0;
    for (j = 0; j < 8; j = j + 1) begin
      if (!rx_stop && rx_k[j]) rx_n = rx_n + 4'd1;
      else rx_stop = 1'b1;
    end
  end

  wire [15:0] tx_rem = tx_len - rp;
  wire tx_last = tx_rem <= 16'd8;
  reg [63:0] tx_d;
  reg [7:0] tx_k;
  always @* begin : txb
    integer j;
    for (j = 0; j < 8; j = j + 1) begin
      tx_d[8*j+:8] = ({12'd0, j[3:0]} < tx_rem) ? (tx_htx ? hbv[8*j+:8] : wv[8*j+:8]) : 8'd0;
      tx_k[j] = {12'd0, j[3:0]} < tx_rem;
    end
  end
  wire tx_on = pstate == P_TX;
  assign tx0_tvalid = tx_on && !tx_port;
  assign tx1_tvalid = tx_on && tx_port;
  assign tx0_tdata = tx_d;
  assign tx1_tdata = tx_d;
  assign tx0_tkeep = tx_k;
  assign tx1_tkeep = tx_k;
  assign tx0_tlast = tx_last;
  assign tx1_tlast = tx_last;
  wire tx_ready = tx_port ? tx1_tready : tx0_tready;

  // Frame buffer writes, one row per clock. Receiving, `acc` holds the
  // flen%8 bytes of the row being filled; a beat's bytes join it at that
  // offset and a row is written whenever one is full (P_FLUSH writes the
  // last, partial one). Bytes past FRAME_BYTES are never written.
  reg [63:0] acc;
  reg [63:0] rx_m;  // the beat's bytes, lanes past rx_n zero
  reg [127:0] comb;
  reg fw_en;
  reg [SB+FB-4:0] fw_row;
  reg [63:0] fw_data;
  always @* begin : fbw
    integer j;
    for (j = 0; j < 8; j = j + 1) rx_m[8*j+:8] = ({28'd0, rx_n} > j) ? rx_d[8*j+:8] : 8'd0;
    comb = {64'd0, acc} | ({64'd0, rx_m} << {flen[2:0], 3'b000});
    fw_en = 1'b0;
    fw_row = {wslot, flen[FB-1:3]};
    fw_data = comb[63:0];
    if (pstate == P_RX) begin
      fw_en = rx_v && {13'd0, flen[2:0]} + {12'd0, rx_n} >= 16'd8 && flen < FRAME16;
    end else if (pstate == P_FLUSH) begin
      fw_en = flen[2:0] != 3'd0 && flen < FRAME16;
      fw_data = acc;
    end else if (pstate == P_COPY) begin
      fw_en = 1'b1;
      fw_row = {wslot, rp[FB-1:3]};
      fw_data = hbv;
    end
  end

  // ------------------------------------------------------------- bus reads
  wire [31:0] ra = {16'd0, rd_addr};
  wire [31:0] ro = ra - PORT_BASE;
  function automatic in_array(input [31:0] off, input [31:0] base, input [31:0] count);
    in_array = off >= base && off < base + (count << 2);
  endfunction
  wire [SB-1:0] hslot = qhead;
  wire q_empty = qcount == 0;
  wire [15:0] hrx_len = q_empty ? 16'd0 : q_len[hslot];
  wire [31:0] status = {16'd0, c_err, 6'd0, c_done, c_busy};
  wire [IB-1:0] dsel = did_sel[IB-1:0];
  wire [EB-1:0] esel = ent_sel[EB-1:0];
  wire ent_ok = ent_sel < DEPTH32 && ent_live[esel];

  // HRX_BUF word at byte offset off (a multiple of 4), bytes past HRX_LEN 0.
  function automatic [31:0] hrx_word(input [31:0] off);
    reg [63:0] row;
    reg [31:0] h;
    integer b;
    begin
      row = fbr[{hslot, off[FB-1:3]}];
      h = off[2] ? row[63:32] : row[31:0];
      for (b = 0; b < 4; b = b + 1)
        hrx_word[8*(3-b)+:8] = (off + b < {16'd0, hrx_len}) ? h[8*b+:8] : 8'd0;
    end
  endfunction

  always @* begin : rd
    reg [31:0] i;
    rd_data = UNMAPPED_PATTERN;
    i = 32'd0;
    if (in_array(ro, PORT_R_HRX_BUF, PORT_R_HRX_BUF_COUNT)) begin
      i = ro - PORT_R_HRX_BUF;
      if (i < FRAME32) begin
        rd_data = hrx_word(i);
      end
    end else if (in_array(ro, PORT_R_HTX_BUF, PORT_R_HTX_BUF_COUNT)) begin
      i = (ro - PORT_R_HTX_BUF) >> 2;
      if (i < HW) rd_data = htx_live[i[FB-3:0]] ? htx[i[FB-3:0]] : 32'd0;
    end else if (in_array(ro, PORT_R_OWNED, PORT_R_OWNED_COUNT)) begin
      i = (ro - PORT_R_OWNED) >> 2;
      rd_data = 32'd0;
      if (i < OWW) rd_data = owned_live[i[IB-6:0]] ? owned[i[IB-6:0]] : 32'd0;
    end else if (in_array(ro, PORT_R_REASON_COUNT, PORT_R_REASON_COUNT_COUNT)) begin
      i = (ro - PORT_R_REASON_COUNT) >> 2;
      rd_data = reason_live[i[4:0]] ? reason_cnt[i[4:0]] : 32'd0;
    end else if (in_array(ro, PORT_R_HASH_KEY, PORT_R_HASH_KEY_COUNT)) begin
      rd_data = 32'd0;
    end else begin
      case (ro)
        PORT_R_TYPE: rd_data = BLOCK_TYPE_PORT;
        PORT_R_VERSION: rd_data = PORT_VERSION;
        PORT_R_NEXT: rd_data = 32'd0;
        PORT_R_CAP_PORTS: rd_data = 32'd2;
        PORT_R_CAP_FRAME_BYTES: rd_data = FRAME32;
        PORT_R_CAP_HOSTQ_DEPTH: rd_data = QDEPTH32;
        PORT_R_CAP_IDS: rd_data = IDS32;
        PORT_R_ID_MASK: rd_data = {20'd0, id_mask};
        PORT_R_CMD: rd_data = cmd_r;
        PORT_R_STATUS: rd_data = status;
        PORT_R_CMD_COUNT: rd_data = cmd_count;
        PORT_R_ERR_COUNT: rd_data = err_count;
        PORT_R_RX_FRAMES: rd_data = rx_frames;
        PORT_R_FORWARDED: rd_data = forwarded;
        PORT_R_PUNTED: rd_data = punted;
        PORT_R_DROPPED: rd_data = dropped;
        PORT_R_TX_FRAMES: rd_data = tx_frames;
        PORT_R_HOST_SENT: rd_data = host_sent;
        PORT_R_HRX_COUNT: rd_data = {{(31 - SB) {1'b0}}, qcount};
        PORT_R_HRX_LEN: rd_data = {16'd0, hrx_len};
        PORT_R_HRX_META: rd_data = q_empty ? 32'd0 : q_meta[hslot];
        PORT_R_HRX_INDEX: rd_data = q_empty ? 32'd0 : q_index[hslot];
        PORT_R_HRX_RESULT: rd_data = q_empty ? 32'd0 : q_result[hslot];
        PORT_R_HRX_OFFSETS: rd_data = q_empty ? 32'd0 : q_offs[hslot];
        PORT_R_HTX_LEN: rd_data = htx_len;
        PORT_R_HTX_DEST: rd_data = {30'd0, htx_dest};
        PORT_R_DID_SEL: rd_data = {20'd0, did_sel};
        PORT_R_DID_PKTS: rd_data = did_live[dsel] ? did_pk[dsel] : 32'd0;
        PORT_R_DID_BYTES_LO: rd_data = did_live[dsel] ? did_by[dsel][31:0] : 32'd0;
        PORT_R_DID_BYTES_HI: rd_data = did_live[dsel] ? did_by[dsel][63:32] : 32'd0;
        PORT_R_ENT_SEL: rd_data = ent_sel;
        PORT_R_ENT_PKTS: rd_data = ent_ok ? ent_pk[esel] : 32'd0;
        PORT_R_ENT_BYTES_LO: rd_data = ent_ok ? ent_by[esel][31:0] : 32'd0;
        PORT_R_ENT_BYTES_HI: rd_data = ent_ok ? ent_by[esel][63:32] : 32'd0;
        default: rd_data = UNMAPPED_PATTERN;
      endcase
    end
  end

  // ------------------------------------------------------------- bus writes
  wire [31:0] wa = {16'd0, wr_addr};
  wire [31:0] wo = wa - PORT_BASE;
  wire wr_here = wr_en && wa >= PORT_BASE && wa < PORT_END;
  wire [31:0] wi_htx = (wo - PORT_R_HTX_BUF) >> 2;
  wire [31:0] wi_own = (wo - PORT_R_OWNED) >> 2;
  wire [1:0] wi_key = wo[3:2];

  // A frame's fate settled while parsing: stop with reason r at the offsets
  // reached (the caller sets off_l3/off_l4 beforehand where they apply).
  /* verilator lint_off UNUSEDSIGNAL */
  task automatic settle(input [1:0] f, input [31:0] r);
    begin
      fate <= f;
      f_reason <= r[7:0];
      pstate <= P_FATE;
    end
  endtask
  /* verilator lint_on UNUSEDSIGNAL */

  always @(posedge clk) begin : seq
    reg [31:0] own;
    reg drop;
    reg [15:0] t16;
    reg [255:0] vv;
    reg [31:0] e_pk;
    reg [63:0] e_by;
    reg [EB-1:0] ei;
    reg [4:0] rr;
    reg enq, deq;
    reg pick;
    if (rst) begin
      htx_live <= {HW{1'b0}};
      owned_live <= {OWW{1'b0}};
      did_live <= {IDS{1'b0}};
      ent_live <= {DEPTH{1'b0}};
      reason_live <= 32'd0;
      acc <= 64'd0;
      qhead <= {SB{1'b0}};
      qcount <= {(SB + 1) {1'b0}};
      id_mask <= 12'd0;
      hash_key <= 128'd0;
      cmd_r <= 32'd0;
      c_busy <= 1'b0;
      c_done <= 1'b0;
      c_err <= 8'd0;
      cmd_count <= 32'd0;
      err_count <= 32'd0;
      rx_frames <= 32'd0;
      forwarded <= 32'd0;
      punted <= 32'd0;
      dropped <= 32'd0;
      tx_frames <= 32'd0;
      host_sent <= 32'd0;
      htx_len <= 32'd0;
      htx_dest <= 2'd0;
      did_sel <= 12'd0;
      ent_sel <= 32'd0;
      cstate <= C_IDLE;
      send_req <= 1'b0;
      send_done <= 1'b0;
      pstate <= P_IDLE;
      rport <= 1'b0;
      in_port <= 1'b0;
      from_host <= 1'b0;
      job_send <= 1'b0;
      flen <= 16'd0;
      rp <= 16'd0;
      l3 <= 16'd0;
      l4 <= 16'd0;
      pstart <= 16'd0;
      pend <= 16'd0;
      ike_base <= 16'd0;
      ulen <= 16'd0;
      off_l3 <= 12'd0;
      off_l4 <= 12'd0;
      proto <= 8'd0;
      walked <= 3'd0;
      v6 <= 1'b0;
      src <= 128'd0;
      dst <= 128'd0;
      kind <= 3'd0;
      sport <= 16'd0;
      dport <= 16'd0;
      ident <= 16'd0;
      flags <= 8'd0;
      spi <= 32'd0;
      msgid <= 32'd0;
      cookie <= 64'd0;
      fate <= F_DROP;
      f_reason <= 8'd0;
      f_didv <= 1'b0;
      f_hit <= 1'b0;
      f_did <= 12'd0;
      f_index <= 32'd0;
      f_result <= 32'd0;
      v0 <= 64'd0;
      v1 <= 64'd0;
      v2 <= 64'd0;
      v3 <= 64'd0;
      hblk <= 3'd0;
      hfin <= 2'd0;
      mine <= {LAT{1'b0}};
      tx_htx <= 1'b0;
      tx_port <= 1'b0;
      tx_len <= 16'd0;
    end else begin
      drop = 1'b0;
      own = PORT_ERR_OK;
      enq = 1'b0;
      deq = 1'b0;
      send_done <= 1'b0;
      mine <= {mine[LAT-2:0], dp_req && dp_grant};

      // ---- bus writes
      if (wr_here) begin
        if (in_array(wo, PORT_R_HTX_BUF, PORT_R_HTX_BUF_COUNT)) begin
          if (!c_busy && wi_htx < HW) begin
            htx[wi_htx[FB-3:0]] <= wr_data;
            htx_live[wi_htx[FB-3:0]] <= 1'b1;
          end
        end else if (in_array(wo, PORT_R_OWNED, PORT_R_OWNED_COUNT)) begin
          if (wi_own < OWW) begin
            owned[wi_own[IB-6:0]] <= wr_data;
            owned_live[wi_own[IB-6:0]] <= 1'b1;
          end
        end else if (in_array(wo, PORT_R_HASH_KEY, PORT_R_HASH_KEY_COUNT)) begin
          hash_key[{wi_key, 5'd0}+:32] <= wr_data;
        end else begin
          case (wo)
            PORT_R_ID_MASK: id_mask <= wr_data[11:0];
            PORT_R_HTX_LEN: if (!c_busy) htx_len <= wr_data;
            PORT_R_HTX_DEST: if (!c_busy) htx_dest <= wr_data[1:0];
            PORT_R_DID_SEL: did_sel <= wr_data[11:0];
            PORT_R_ENT_SEL: ent_sel <= wr_data;
            PORT_R_CMD:
            if (c_busy) begin
              drop = 1'b1;
            end else begin
              cmd_r <= wr_data;
              c_busy <= 1'b1;
              c_done <= 1'b0;
              c_err <= 8'd0;
              cstate <= C_START;
            end
            default: ;
          endcase
        end
      end

      // ---- commands
      case (cstate)
        C_START: begin
          cstate <= C_IDLE;
          case (cmd_r)
            PORT_CMD_POP:
            if (q_empty) begin
              own = PORT_ERR_EMPTY;
            end else begin
              qhead <= qhead + 1'b1;
              deq = 1'b1;
            end
            PORT_CMD_SEND:
            if (htx_len == 32'd0 || htx_len > FRAME32) begin
              own = PORT_ERR_BAD_LEN;
            end else begin
              host_sent <= host_sent + 32'd1;
              send_req <= 1'b1;
              cstate <= C_WAIT;
            end
            default: own = PORT_ERR_UNKNOWN_CMD;
          endcase
        end
        default: ;
      endcase
      if ((cstate == C_START && !(cmd_r == PORT_CMD_SEND && own == PORT_ERR_OK))
          || (cstate == C_WAIT && send_done)) begin
        if (cstate == C_WAIT) cstate <= C_IDLE;
        c_busy <= 1'b0;
        c_done <= 1'b1;
        c_err <= (own != PORT_ERR_OK) ? own[7:0] : (drop ? PORT_ERR_BUSY[7:0] : c_err);
        cmd_count <= cmd_count + 32'd1;
        err_count <= err_count + {31'd0, drop} + {31'd0, own != PORT_ERR_OK};
      end else if (drop) begin
        c_err <= PORT_ERR_BUSY[7:0];
        err_count <= err_count + 32'd1;
      end

      // ---- frame buffer writes
      if (fw_en) fbr[fw_row] <= fw_data;

      // ---- pipeline
      case (pstate)
        P_IDLE: begin
          flen <= 16'd0;
          acc <= 64'd0;
          rp <= 16'd0;
          job_send <= 1'b0;
          if (send_req) begin
            send_req <= 1'b0;
            job_send <= 1'b1;
            if (!htx_dest[1]) begin
              tx_frames <= tx_frames + 32'd1;
              tx_htx <= 1'b1;
              tx_port <= htx_dest[0];
              tx_len <= htx_len[15:0];
              pstate <= P_TX;
            end else begin
              in_port <= htx_dest[0];
              from_host <= 1'b1;
              flen <= htx_len[15:0];
              pstate <= P_COPY;
            end
          end else if (rx0_tvalid || rx1_tvalid) begin
            // Both waiting: the port not served last goes first.
            pick = (rx0_tvalid && rx1_tvalid) ? !rport : rx1_tvalid;
            rport <= pick;
            in_port <= pick;
            from_host <= 1'b0;
            pstate <= P_RX;
          end
        end
        P_RX:
        if (rx_v) begin
          if (flen <= FRAME16) begin
            flen <= flen + {12'd0, rx_n};
            acc <= ({13'd0, flen[2:0]} + {12'd0, rx_n} >= 16'd8) ? comb[127:64] : comb[63:0];
          end
          if (rx_l) pstate <= P_FLUSH;
        end
        P_FLUSH: pstate <= P_START;
        P_COPY: begin
          rp <= rp + 16'd8;
          if (rp + 16'd8 >= flen) pstate <= P_START;
        end
        P_START: begin
          rx_frames <= rx_frames + 32'd1;
          off_l3 <= 12'd0;
          off_l4 <= 12'd0;
          f_didv <= 1'b0;
          f_hit <= 1'b0;
          f_did <= 12'd0;
          f_index <= 32'hFFFF_FFFF;
          f_result <= 32'd0;
          walked <= 3'd0;
          rp <= 16'd8;
          if (flen > FRAME16) settle(F_DROP, PORT_REASON_TOO_LONG);
          else if (flen < 16'd14) settle(F_DROP, PORT_REASON_RUNT);
          else pstate <= P_ETH;
        end
        P_ETH: begin
          // w = b[8..16)
          t16 = {w4, w5};
          if (t16 == 16'h8100) begin
            if (flen < 16'd18) settle(F_QUEUE, PORT_REASON_MALFORMED);
            else begin
              rp <= 16'd16;
              pstate <= P_VLAN;
            end
          end else begin
            l3 <= 16'd14;
            rp <= 16'd14;
            if (t16 == 16'h0800) begin
              off_l3 <= 12'd14;
              pstate <= P_V4A;
            end else if (t16 == 16'h86DD) begin
              off_l3 <= 12'd14;
              pstate <= P_V6A;
            end else settle(F_QUEUE, PORT_REASON_NOT_IP);
          end
        end
        P_VLAN: begin
          l3 <= 16'd18;
          rp <= 16'd18;
          if (w01 == 16'h0800) begin
            off_l3 <= 12'd18;
            pstate <= P_V4A;
          end else if (w01 == 16'h86DD) begin
            off_l3 <= 12'd18;
            pstate <= P_V6A;
          end else settle(F_QUEUE, PORT_REASON_NOT_IP);
        end
        P_V4A: begin
          // w = b[l3..l3+8)
          t16 = {10'd0, w0[3:0], 2'd0};  // header length
          v6 <= 1'b0;
          if (flen - l3 < 16'd20 || w0[7:4] != 4'd4 || t16 < 16'd20 || t16 > flen - l3
              || w23 < t16 || w23 > flen - l3)
            settle(F_QUEUE, PORT_REASON_MALFORMED);
          else if (w6[5] || {w6[4:0], w7} != 13'd0)
            settle(F_QUEUE, PORT_REASON_FRAGMENT);
          else begin
            pstart <= l3 + t16;
            pend <= l3 + w23;
            rp <= l3 + 16'd8;
            pstate <= P_V4B;
          end
        end
        P_V4B: begin
          proto <= w1;
          src <= {96'd0, w4, w5, w6, w7};
          rp <= l3 + 16'd16;
          pstate <= P_V4C;
        end
        P_V4C: begin
          dst <= {96'd0, w32};
          pstate <= P_L4;
        end
        P_V6A: begin
          v6 <= 1'b1;
          if (flen - l3 < 16'd40 || w0[7:4] != 4'd6 || w45 > flen - l3 - 16'd40)
            settle(F_QUEUE, PORT_REASON_MALFORMED);
          else begin
            proto <= w6;
            pstart <= l3 + 16'd40;
            pend <= l3 + 16'd40 + w45;
            rp <= l3 + 16'd8;
            pstate <= P_V6S0;
          end
        end
        P_V6S0: begin
          src[127:64] <= w64;
          rp <= l3 + 16'd16;
          pstate <= P_V6S1;
        end
        P_V6S1: begin
          src[63:0] <= w64;
          rp <= l3 + 16'd24;
          pstate <= P_V6D0;
        end
        P_V6D0: begin
          dst[127:64] <= w64;
          rp <= l3 + 16'd32;
          pstate <= P_V6D1;
        end
        P_V6D1: begin
          dst[63:0] <= w64;
          pstate <= P_EXT;
        end
        P_EXT:
        if (proto == 8'd0 || proto == 8'd43 || proto == 8'd60) begin
          if ({29'd0, walked} == PORT_V6_EXT_MAX) settle(F_QUEUE, PORT_REASON_EXT_HEADERS);
          else if (pend - pstart < 16'd8) settle(F_QUEUE, PORT_REASON_MALFORMED);
          else begin
            rp <= pstart;
            pstate <= P_EXTRD;
          end
        end else if (proto == 8'd44) begin
          settle(F_QUEUE, PORT_REASON_FRAGMENT);
        end else begin
          pstate <= P_L4;
        end
        P_EXTRD: begin
          t16 = {5'd0, w1, 3'd0} + 16'd8;
          if (t16 > pend - pstart) settle(F_QUEUE, PORT_REASON_MALFORMED);
          else begin
            proto <= w0;
            pstart <= pstart + t16;
            walked <= walked + 3'd1;
            pstate <= P_EXT;
          end
        end
        P_L4: begin
          l4 <= pstart;
          off_l4 <= pstart[11:0];
          rp <= pstart;
          pstate <= P_L4A;
        end
        P_L4A: begin
          // w = b[l4..l4+8); n = pend - l4
          t16 = pend - l4;
          sport <= w01;
          dport <= w23;
          if (proto == 8'd6) begin
            kind <= K_TCP;
            if (t16 < 16'd20) settle(F_QUEUE, PORT_REASON_MALFORMED);
            else begin
              rp <= l4 + 16'd8;
              pstate <= P_TCPB;
            end
          end else if (proto == 8'd17) begin
            kind <= K_UDP;
            ulen <= w45;
            if (t16 < 16'd8 || w45 < 16'd8 || w45 > t16) settle(F_QUEUE, PORT_REASON_MALFORMED);
            else if (w01 == 16'd500 || w23 == 16'd500) begin
              if (w45 - 16'd8 >= 16'd24) begin
                ike_base <= l4 + 16'd8;
                rp <= l4 + 16'd8;
                pstate <= P_IKEA;
              end else pstate <= P_HINIT;
            end else if (w01 == 16'd4500 || w23 == 16'd4500) begin
              if (w45 - 16'd8 < 16'd4) pstate <= P_HINIT;
              else begin
                rp <= l4 + 16'd8;
                pstate <= P_NATT;
              end
            end else pstate <= P_HINIT;
          end else if ((proto == 8'd1 && !v6) || (proto == 8'd58 && v6)) begin
            kind <= K_ICMP;
            ident <= w45;
            if (t16 < 16'd8) settle(F_QUEUE, PORT_REASON_MALFORMED);
            else if (v6 ? (w0 == 8'd128 || w0 == 8'd129) : (w0 == 8'd8 || w0 == 8'd0))
              pstate <= P_HINIT;
            else settle(F_QUEUE, PORT_REASON_NO_FLOW);
          end else if (proto == 8'd50) begin
            kind <= K_ESP;
            spi <= w32;
            if (t16 < 16'd8) settle(F_QUEUE, PORT_REASON_MALFORMED);
            else pstate <= P_HINIT;
          end else begin
            settle(F_QUEUE, PORT_REASON_NO_FLOW);
          end
        end
        P_TCPB: begin
          // w = b[l4+8..l4+16)
          flags <= w5;
          if (w4[7:4] < 4'd5 || {10'd0, w4[7:4], 2'd0} > pend - l4)
            settle(F_QUEUE, PORT_REASON_MALFORMED);
          else pstate <= P_HINIT;
        end
        P_NATT: begin
          if (w32 == 32'd0) begin
            if (ulen - 16'd12 >= 16'd24) begin
              ike_base <= l4 + 16'd12;
              rp <= l4 + 16'd12;
              pstate <= P_IKEA;
            end else pstate <= P_HINIT;
          end else begin
            kind <= K_ESP;
            spi <= w32;
            pstate <= P_HINIT;
          end
        end
        P_IKEA: begin
          cookie <= w64;
          rp <= ike_base + 16'd20;
          pstate <= P_IKEB;
        end
        P_IKEB: begin
          kind <= K_IKE;
          msgid <= w32;
          pstate <= P_HINIT;
        end
        P_HINIT: begin
          v0 <= hash_key[63:0] ^ 64'h736f6d6570736575;
          v1 <= hash_key[127:64] ^ 64'h646f72616e646f6d;
          v2 <= hash_key[63:0] ^ 64'h6c7967656e657261;
          v3 <= hash_key[127:64] ^ 64'h7465646279746573;
          hblk <= 3'd0;
          pstate <= P_HC;
        end
        P_HC: begin
          vv = sipround({v0, v1, v2, v3 ^ hm});
          v0 <= vv[255:192] ^ hm;
          v1 <= vv[191:128];
          v2 <= vv[127:64];
          v3 <= vv[63:0];
          hblk <= hblk + 3'd1;
          hfin <= 2'd0;
          if (hblk == hlast) pstate <= P_HF;
        end
        P_HF: begin
          vv = sipround({v0, v1, (hfin == 2'd0) ? (v2 ^ 64'hff) : v2, v3});
          {v0, v1, v2, v3} <= vv;
          hfin <= hfin + 2'd1;
          if (hfin == 2'd2) pstate <= P_OWN;
        end
        P_OWN: begin
          f_didv <= 1'b1;
          f_did <= did;
          if (!(owned_live[did_i[IB-1:5]] && owned[did_i[IB-1:5]][did_i[4:0]]))
            settle(F_DROP, PORT_REASON_NOT_OWNED);
          else begin
            did_pk[did_i] <= (did_live[did_i] ? did_pk[did_i] : 32'd0) + 32'd1;
            did_by[did_i] <= (did_live[did_i] ? did_by[did_i] : 64'd0) + {48'd0, flen};
            did_live[did_i] <= 1'b1;
            pstate <= P_LOOKUP;
          end
        end
        P_LOOKUP: if (dp_grant) pstate <= P_LWAIT;
        P_LWAIT:
        if (mine[LAT-1]) begin
          if (dp_out_valid && dp_hit) begin
            f_hit <= 1'b1;
            f_index <= dp_index;
            f_result <= dp_result;
          end
          if (kind == K_TCP && flags[2:0] != 3'd0) settle(F_QUEUE, PORT_REASON_TCP_CONTROL);
          else if (!(dp_out_valid && dp_hit)) settle(F_QUEUE, PORT_REASON_MISS);
          else begin
            case (dp_result[7:0])
              8'd1: settle(F_FWD, 32'd0);
              8'd0: settle(F_DROP, PORT_REASON_RULE_DROP);
              8'd2: settle(F_QUEUE, PORT_REASON_REJECT);
              8'd5: settle(F_QUEUE, PORT_REASON_TO_HOST);
              8'd3, 8'd4: settle(F_QUEUE, PORT_REASON_ESP);
              default: settle(F_QUEUE, PORT_REASON_BAD_ACTION);
            endcase
          end
        end
        P_FATE: begin
          rr = f_reason[4:0];
          if (fate == F_QUEUE && qcount == QDEPTH32[SB:0]) rr = PORT_REASON_QUEUE_FULL[4:0];
          if (fate == F_FWD) begin
            forwarded <= forwarded + 32'd1;
            tx_frames <= tx_frames + 32'd1;
            tx_htx <= 1'b0;
            tx_port <= !in_port;
            tx_len <= flen;
            rp <= 16'd0;
            pstate <= P_TX;
          end else begin
            reason_cnt[rr] <= (reason_live[rr] ? reason_cnt[rr] : 32'd0) + 32'd1;
            reason_live[rr] <= 1'b1;
            if (fate == F_QUEUE && qcount != QDEPTH32[SB:0]) begin
              punted <= punted + 32'd1;
              q_len[wslot] <= flen;
              q_meta[wslot] <= {4'd0, f_did, f_reason, 4'd0, f_hit, f_didv, from_host, in_port};
              q_index[wslot] <= f_index;
              q_result[wslot] <= f_result;
              q_offs[wslot] <= {4'd0, off_l4, 4'd0, off_l3};
              enq = 1'b1;
            end else begin
              dropped <= dropped + 32'd1;
            end
            pstate <= P_DONE;
          end
        end
        P_TX:
        if (tx_ready) begin
          rp <= rp + 16'd8;
          if (tx_last) pstate <= P_DONE;
        end
        P_DONE: begin
          if (job_send) send_done <= 1'b1;
          pstate <= P_IDLE;
        end
        default: pstate <= P_IDLE;
      endcase

      // ---- entry counters: a hit counts; the CAM writing the entry restarts them
      if (pstate == P_LWAIT && mine[LAT-1] && dp_out_valid && dp_hit) begin
        ei = dp_index[EB-1:0];
        e_pk = ent_live[ei] ? ent_pk[ei] : 32'd0;
        e_by = ent_live[ei] ? ent_by[ei] : 64'd0;
        ent_pk[ei] <= e_pk + 32'd1;
        ent_by[ei] <= e_by + {48'd0, flen};
        ent_live[ei] <= 1'b1;
      end
      qcount <= qcount + {{SB{1'b0}}, enq} - {{SB{1'b0}}, deq};
      if (cam_store) ent_live[cam_store_at[EB-1:0]] <= 1'b0;
    end
  end

endmodule

`resetall
