// C ABI around the Verilator model of hdl/card_top.v, for sim-bridge/src/verilator.rs.
//
// One SimCard owns one VerilatedContext and one model, so instances are
// independent (and may live on different threads, one thread at a time each).
// Every entry point catches C++ exceptions: the Verilator runtime's fatal
// paths (vl_fatal, vl_stop, vl_finish, overridden below through
// VL_USER_FATAL/VL_USER_STOP/VL_USER_FINISH) throw a SimFatal instead of
// aborting the process; the shim marks the instance stopped and hands the
// message back as an error code. A stopped instance refuses further use.

#include "Vcard_top.h"
#include "verilated.h"

#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#ifndef SIM_RTL_DEPTH
#error "SIM_RTL_DEPTH must be defined by build.rs"
#endif

namespace {

// A Verilator fatal error, $stop or $finish.
struct SimFatal : std::runtime_error {
    explicit SimFatal(const std::string& what) : std::runtime_error(what) {}
};

std::string where(const char* filename, int linenum) {
    if (filename == nullptr || filename[0] == '\0') return std::string();
    return std::string(filename) + ":" + std::to_string(linenum) + ": ";
}

}  // namespace

// ---- Verilator runtime hooks (see verilated.cpp, VL_USER_*)

void vl_fatal(const char* filename, int linenum, const char* hier, const char* msg) {
    (void)hier;
    throw SimFatal(where(filename, linenum) + (msg ? msg : "fatal error"));
}

void vl_stop(const char* filename, int linenum, const char* hier) {
    (void)hier;
    throw SimFatal(where(filename, linenum) + "Verilog $stop");
}

void vl_finish(const char* filename, int linenum, const char* hier) {
    (void)hier;
    throw SimFatal(where(filename, linenum) + "Verilog $finish");
}

// ---- the instance

enum SimStatus : int32_t {
    SIM_OK = 0,
    // The simulator stopped (fatal error, $stop, $finish); see sim_last_error.
    SIM_STOPPED = 1,
    // The bus did not complete the handshake in time; see sim_last_error.
    SIM_TIMEOUT = 2,
};

struct SimLookup {
    uint32_t hit;
    uint32_t index;
    uint32_t result;
    uint32_t did;
};

// One AXI4-Stream beat into a packet port (sim_port_beats).
struct SimBeat {
    uint64_t data;
    uint32_t keep;
    uint32_t last;
};

struct SimCard {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vcard_top> top;
    uint64_t cycles = 0;
    bool stopped = false;
    std::string error;
    // Frames the card sent out of its ports, oldest first, and the frame
    // each port is in the middle of sending.
    std::deque<std::pair<uint8_t, std::vector<uint8_t>>> sent;
    std::vector<uint8_t> partial[2];
    // tx tready pattern: low for `tx_low` clocks of every `tx_period` (0: always high).
    uint32_t tx_period = 0;
    uint32_t tx_low = 0;

    // Collect a beat each port sends on the coming edge. The tx outputs are
    // functions of the card's registers only (not of tready or any other
    // input), so the values of the last eval are current: no eval needed.
    void tx_sample() {
        const bool ready = tx_period == 0 || (cycles % tx_period) >= tx_low;
        top->tx0_tready = ready;
        top->tx1_tready = ready;
        take(0, top->tx0_tvalid, top->tx0_tdata, top->tx0_tkeep, top->tx0_tlast, ready);
        take(1, top->tx1_tvalid, top->tx1_tdata, top->tx1_tkeep, top->tx1_tlast, ready);
    }

    void take(int port, bool valid, uint64_t data, uint32_t keep, bool last, bool ready) {
        if (!valid || !ready) return;
        for (int i = 0; i < 8; ++i)
            if ((keep >> i) & 1) partial[port].push_back(static_cast<uint8_t>(data >> (8 * i)));
        if (last) {
            sent.emplace_back(static_cast<uint8_t>(port), std::move(partial[port]));
            partial[port].clear();
        }
    }

    // One rising edge: inputs set before the call are sampled on it.
    void tick() {
        tx_sample();
        top->clk = 1;
        top->eval();
        ctx->timeInc(1);
        top->clk = 0;
        top->eval();
        ctx->timeInc(1);
        ++cycles;
    }

    // Settle combinational outputs after an input change.
    void settle() { top->eval(); }

    void idle_inputs() {
        top->s_axi_awvalid = 0;
        top->s_axi_wvalid = 0;
        top->s_axi_bready = 0;
        top->s_axi_arvalid = 0;
        top->s_axi_rready = 0;
        top->dp_valid = 0;
        top->rx0_tvalid = 0;
        top->rx1_tvalid = 0;
    }
};

namespace {

// Longest wait for one handshake of a bus transaction.
constexpr unsigned kBusTimeout = 64;

void copy_message(const std::string& s, char* buf, size_t len) {
    if (buf == nullptr || len == 0) return;
    const size_t n = s.size() < len - 1 ? s.size() : len - 1;
    std::memcpy(buf, s.data(), n);
    buf[n] = '\0';
}

// Run f on card c, turning exceptions into SIM_STOPPED.
template <typename F>
int32_t guarded(SimCard* c, F f) {
    if (c->stopped) return SIM_STOPPED;
    try {
        return f();
    } catch (const std::exception& e) {
        c->stopped = true;
        c->error = e.what();
    } catch (...) {
        c->stopped = true;
        c->error = "unknown C++ exception in the simulator";
    }
    return SIM_STOPPED;
}

int32_t timeout(SimCard* c, const char* what) {
    c->error = std::string("no AXI ") + what + " handshake within " + std::to_string(kBusTimeout)
               + " clocks";
    c->idle_inputs();
    return SIM_TIMEOUT;
}

// Clock the card until `handshake` (asked of the settled outputs before each
// edge) holds, for at most kBusTimeout clocks; the edge on which it held is
// clocked too. False when it never held.
template <typename F>
bool clock_until(SimCard* c, F handshake) {
    for (unsigned i = 0; i < kBusTimeout; ++i) {
        c->settle();
        const bool done = handshake();
        c->tick();
        if (done) return true;
    }
    return false;
}

// The response phase of an AXI transaction: clock until the card sets `valid`, calling `take`
// on that clock to store the response, then idle the inputs. A timeout names `what`.
template <typename V, typename F>
int32_t await_response(SimCard* c, const V& valid, F take, const char* what) {
    const bool got = clock_until(c, [&] {
        if (!valid) return false;
        take();
        return true;
    });
    if (!got) return timeout(c, what);
    c->idle_inputs();
    return SIM_OK;
}

}  // namespace

extern "C" {

// Create a card in power-on state (reset already applied). `argv` are
// Verilator runtime arguments (`+verilator+seed+N`, `+verilator+rand+reset+2`, ...).
// Returns null on failure with the message in `err`.
SimCard* sim_create(int32_t argc, const char* const* argv, char* err, size_t err_len) {
    std::unique_ptr<SimCard> c;
    try {
        c.reset(new SimCard());
        c->ctx.reset(new VerilatedContext());
        c->ctx->fatalOnError(true);
        if (argc > 0) c->ctx->commandArgsAdd(argc, const_cast<const char**>(argv));
        c->top.reset(new Vcard_top(c->ctx.get(), "card"));
        c->idle_inputs();
        c->top->clk = 0;
        c->top->rst_n = 0;
        c->settle();
        for (int i = 0; i < 4; ++i) c->tick();
        c->top->rst_n = 1;
        c->settle();
        c->cycles = 0;
        return c.release();
    } catch (const std::exception& e) {
        copy_message(e.what(), err, err_len);
    } catch (...) {
        copy_message("unknown C++ exception while creating the simulator", err, err_len);
    }
    return nullptr;
}

void sim_destroy(SimCard* c) {
    if (c == nullptr) return;
    try {
        if (!c->stopped) c->top->final();
    } catch (...) {
    }
    c->top.reset();
    c->ctx.reset();
    delete c;
}

// Hold reset for `clocks` clocks (at least one), then release it.
int32_t sim_reset(SimCard* c, uint32_t clocks) {
    return guarded(c, [&]() -> int32_t {
        c->idle_inputs();
        c->top->rst_n = 0;
        c->settle();
        for (uint32_t i = 0; i < (clocks == 0 ? 1 : clocks); ++i) c->tick();
        c->top->rst_n = 1;
        c->settle();
        return SIM_OK;
    });
}

// Advance `clocks` clocks with the bus and the data path idle.
int32_t sim_tick(SimCard* c, uint64_t clocks) {
    return guarded(c, [&]() -> int32_t {
        c->idle_inputs();
        for (uint64_t i = 0; i < clocks; ++i) c->tick();
        return SIM_OK;
    });
}

// One AXI4-Lite write; `resp` gets BRESP.
int32_t sim_axi_write(SimCard* c, uint32_t addr, uint32_t data, uint32_t* resp) {
    return guarded(c, [&]() -> int32_t {
        Vcard_top* t = c->top.get();
        c->idle_inputs();
        t->s_axi_awaddr = static_cast<uint16_t>(addr);
        t->s_axi_awvalid = 1;
        t->s_axi_wdata = data;
        t->s_axi_wstrb = 0xF;
        t->s_axi_wvalid = 1;
        t->s_axi_bready = 1;
        if (!clock_until(c, [&] { return t->s_axi_awready && t->s_axi_wready; }))
            return timeout(c, "write address/data");
        t->s_axi_awvalid = 0;
        t->s_axi_wvalid = 0;
        return await_response(
            c, t->s_axi_bvalid, [&] { *resp = t->s_axi_bresp; }, "write response");
    });
}

// One AXI4-Lite read; `data` gets RDATA, `resp` RRESP.
int32_t sim_axi_read(SimCard* c, uint32_t addr, uint32_t* data, uint32_t* resp) {
    return guarded(c, [&]() -> int32_t {
        Vcard_top* t = c->top.get();
        c->idle_inputs();
        t->s_axi_araddr = static_cast<uint16_t>(addr);
        t->s_axi_arvalid = 1;
        if (!clock_until(c, [&] { return t->s_axi_arready; })) return timeout(c, "read address");
        t->s_axi_arvalid = 0;
        t->s_axi_rready = 1;
        return await_response(
            c, t->s_axi_rvalid,
            [&] {
                *data = t->s_axi_rdata;
                *resp = t->s_axi_rresp;
            },
            "read data");
    });
}

// Push `n` keys (10 words each, word 0 = key bits 31:0) into the data-path
// port, one per clock, and collect the `n` answers into `out` in order.
// If `write_at` >= 0, an AXI write of `wdata` to `waddr` is also offered on
// the clock with that index (counting from 0 at the first key), so tests can
// run a command while lookups stream; its response is taken and dropped.
int32_t sim_lookup_with_write(SimCard* c, const uint32_t* keys, size_t n, SimLookup* out,
                              int64_t write_at, uint32_t waddr, uint32_t wdata) {
    return guarded(c, [&]() -> int32_t {
        Vcard_top* t = c->top.get();
        c->idle_inputs();
        size_t sent = 0;
        size_t got = 0;
        bool write_pending = write_at >= 0;
        bool write_open = false;  // address/data offered, not yet accepted
        // Longest the pipeline may take beyond one key per clock.
        const uint64_t limit = static_cast<uint64_t>(n) + 64
                               + (write_at > 0 ? static_cast<uint64_t>(write_at) : 0);
        for (uint64_t clk = 0; got < n || write_pending; ++clk) {
            if (clk >= limit) {
                c->error = "the data-path port returned " + std::to_string(got) + " of "
                           + std::to_string(n) + " answers within " + std::to_string(limit)
                           + " clocks";
                c->idle_inputs();
                return SIM_TIMEOUT;
            }
            if (sent < n) {
                t->dp_valid = 1;
                for (int w = 0; w < 10; ++w) t->dp_key[w] = keys[sent * 10 + w];
                ++sent;
            } else {
                t->dp_valid = 0;
            }
            if (write_pending && !write_open && clk == static_cast<uint64_t>(write_at)) {
                t->s_axi_awaddr = static_cast<uint16_t>(waddr);
                t->s_axi_wdata = wdata;
                t->s_axi_wstrb = 0xF;
                t->s_axi_awvalid = 1;
                t->s_axi_wvalid = 1;
                t->s_axi_bready = 1;
                write_open = true;
            }
            c->settle();
            const bool fire = write_open && t->s_axi_awready && t->s_axi_wready;
            const bool bdone = write_pending && !write_open && t->s_axi_bvalid;
            c->tick();
            if (fire) {
                t->s_axi_awvalid = 0;
                t->s_axi_wvalid = 0;
                write_open = false;
            }
            if (bdone) {
                t->s_axi_bready = 0;
                write_pending = false;
            }
            if (t->dp_out_valid && got < n) {
                out[got].hit = t->dp_hit;
                out[got].index = t->dp_index;
                out[got].result = t->dp_result;
                out[got].did = t->dp_did;
                ++got;
            }
        }
        c->idle_inputs();
        return SIM_OK;
    });
}

int32_t sim_lookup(SimCard* c, const uint32_t* keys, size_t n, SimLookup* out) {
    return sim_lookup_with_write(c, keys, n, out, -1, 0, 0);
}

// Feed `n` beats into packet port `port` (0 or 1): each is offered until
// the port takes it (rxN_tready). With `wait_idle`, then clock until the
// block is idle (port_busy low). At most `limit` clocks in all.
int32_t sim_port_beats(SimCard* c, uint32_t port, const SimBeat* beats, size_t n, int32_t wait_idle,
                       uint64_t limit) {
    return guarded(c, [&]() -> int32_t {
        Vcard_top* t = c->top.get();
        c->idle_inputs();
        uint64_t clk = 0;
        for (size_t i = 0; i < n; ++i) {
            for (;;) {
                if (clk++ >= limit) {
                    c->error = "packet port " + std::to_string(port) + " took " + std::to_string(i)
                               + " of " + std::to_string(n) + " beats within "
                               + std::to_string(limit) + " clocks";
                    c->idle_inputs();
                    return SIM_TIMEOUT;
                }
                if (port == 0) {
                    t->rx0_tvalid = 1;
                    t->rx0_tdata = beats[i].data;
                    t->rx0_tkeep = beats[i].keep & 0xFF;
                    t->rx0_tlast = beats[i].last != 0;
                } else {
                    t->rx1_tvalid = 1;
                    t->rx1_tdata = beats[i].data;
                    t->rx1_tkeep = beats[i].keep & 0xFF;
                    t->rx1_tlast = beats[i].last != 0;
                }
                c->settle();
                const bool ready = port == 0 ? t->rx0_tready : t->rx1_tready;
                c->tick();
                if (ready) break;
            }
        }
        c->idle_inputs();
        if (wait_idle) {
            for (;;) {
                c->settle();
                if (!t->port_busy) break;
                if (clk++ >= limit) {
                    c->error = "the packet port block stayed busy for " + std::to_string(limit)
                               + " clocks";
                    return SIM_TIMEOUT;
                }
                c->tick();
            }
        }
        return SIM_OK;
    });
}

// Feed two beat streams into ports 0 and 1 at once (each beat offered until
// its port takes it), then clock until the block is idle. At most `limit`
// clocks in all.
int32_t sim_port_beats_both(SimCard* c, const SimBeat* b0, size_t n0, const SimBeat* b1, size_t n1,
                            uint64_t limit) {
    return guarded(c, [&]() -> int32_t {
        Vcard_top* t = c->top.get();
        c->idle_inputs();
        size_t i0 = 0, i1 = 0;
        uint64_t clk = 0;
        for (;;) {
            if (clk++ >= limit) {
                c->error = "the packet ports took " + std::to_string(i0) + " and "
                           + std::to_string(i1) + " beats within " + std::to_string(limit)
                           + " clocks";
                c->idle_inputs();
                return SIM_TIMEOUT;
            }
            t->rx0_tvalid = i0 < n0;
            if (i0 < n0) {
                t->rx0_tdata = b0[i0].data;
                t->rx0_tkeep = b0[i0].keep & 0xFF;
                t->rx0_tlast = b0[i0].last != 0;
            }
            t->rx1_tvalid = i1 < n1;
            if (i1 < n1) {
                t->rx1_tdata = b1[i1].data;
                t->rx1_tkeep = b1[i1].keep & 0xFF;
                t->rx1_tlast = b1[i1].last != 0;
            }
            c->settle();
            const bool take0 = i0 < n0 && t->rx0_tready;
            const bool take1 = i1 < n1 && t->rx1_tready;
            const bool idle = i0 >= n0 && i1 >= n1 && !t->port_busy;
            if (idle) break;
            c->tick();
            if (take0) ++i0;
            if (take1) ++i1;
        }
        c->idle_inputs();
        return SIM_OK;
    });
}

// Clock (bus and wires idle) until the packet port block is idle, at most
// `limit` clocks; `clocks` gets the number clocked.
int32_t sim_port_wait_idle(SimCard* c, uint64_t limit, uint64_t* clocks) {
    return guarded(c, [&]() -> int32_t {
        c->idle_inputs();
        uint64_t n = 0;
        for (;;) {
            c->settle();
            if (!c->top->port_busy) break;
            if (n >= limit) {
                c->error = "the packet port block stayed busy for " + std::to_string(limit)
                           + " clocks";
                return SIM_TIMEOUT;
            }
            c->tick();
            ++n;
        }
        *clocks = n;
        return SIM_OK;
    });
}

// The oldest frame sent out of a port: returns its length (and copies up to
// `cap` bytes into `buf`, the port into `port`) or -1 when there is none.
// With `cap` smaller than the length nothing is taken: call again.
int64_t sim_port_tx(SimCard* c, uint8_t* port, uint8_t* buf, size_t cap) {
    if (c->sent.empty()) return -1;
    auto& f = c->sent.front();
    const size_t len = f.second.size();
    if (cap < len) return static_cast<int64_t>(len);
    *port = f.first;
    if (len > 0) std::memcpy(buf, f.second.data(), len);
    c->sent.pop_front();
    return static_cast<int64_t>(len);
}

// tx tready: low for `low` clocks of every `period` (period 0: always high).
void sim_port_tx_ready(SimCard* c, uint32_t period, uint32_t low) {
    c->tx_period = period;
    c->tx_low = low;
}

uint64_t sim_cycles(const SimCard* c) { return c->cycles; }

// The DEPTH parameter this model was built with.
uint32_t sim_rtl_depth(void) { return SIM_RTL_DEPTH; }

// Copy the last error message into `buf` (NUL-terminated, truncated to `len`).
void sim_last_error(const SimCard* c, char* buf, size_t len) { copy_message(c->error, buf, len); }

}  // extern "C"
