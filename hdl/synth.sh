#!/bin/sh
# Yosys generic synthesis of the card RTL at a small depth (default 16, or
# $SYNTH_DEPTH). Any Yosys warning counts as a failure (-e '.*'). Prints the
# cell statistics. Called from .ci/run.
#
# Generic synthesis maps every memory to flip-flops, so the sizes that do not
# change the logic's shape are small here: 4 SA slots, a 128-byte ESP buffer,
# 6-bit CAM identifiers (a 64-bit FLUSH_DID bitmap instead of 4,096 bits), 4 CAM mask
# profiles instead of 16, and
# a packet port block with 64-byte frames, a 1-frame host queue and 64
# identifiers. The contract's sizes are the RTL's defaults (what Verilator
# builds and the co-simulation checks).
#
# The design is not flattened, so each block is synthesized on its own, two at
# a time (CI has two cores), in two lanes of about equal work: the packet port
# block then the top level (which sees the blocks it instantiates as black
# boxes with their interfaces), and the CAM then the SA/ESP engine. Each run checks its block (hierarchy
# -check, check -assert); the top level's run checks that every instance
# matches its block's ports at these parameters.
set -eu
cd "$(dirname "$0")"
me=synth.sh
. ./tools.sh
need yosys
depth="${SYNTH_DEPTH:-16}"
slots="${SYNTH_SA_SLOTS:-4}"
bufw="${SYNTH_ESP_BUF_WORDS:-32}"
didb="${SYNTH_DID_BITS:-6}"
pframe="${SYNTH_PORT_FRAME:-64}"
pq="${SYNTH_PORT_QDEPTH:-1}"
pids="${SYNTH_PORT_IDS:-64}"
prof="${SYNTH_PROFILES:-4}"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# block NAME TOP PREPARE: synthesize one block, its statistics (or the failure)
# into $out/NAME.
block() {
    name="$1"
    shift
    if (synth_top "$@") >"$out/$name" 2>&1; then
        return 0
    fi
    touch "$out/$name.failed"
    return 1
}

(
    block port port "read_verilog -Igenerated port.v; chparam -set FRAME_BYTES $pframe -set QDEPTH $pq -set IDS $pids -set DEPTH $depth port" &&
        block card_top card_top "read_verilog -Igenerated card_top.v; read_verilog -lib -Igenerated tcam.v port.v crypto/esp_engine.v; chparam -set DEPTH $depth -set SA_DEPTH $slots -set ESP_BUF_WORDS $bufw -set CAM_DID_BITS_P $didb -set CAM_PROFILES_P $prof -set PORT_FRAME $pframe -set PORT_QDEPTH $pq -set PORT_NIDS $pids card_top"
) &
lane1=$!
(
    block tcam tcam "read_verilog -Igenerated tcam.v; chparam -set DEPTH $depth -set DID_BITS $didb tcam" &&
        block esp_engine esp_engine "read_verilog -Igenerated crypto/*.v; chparam -set SLOTS $slots -set BUF_WORDS $bufw esp_engine"
) &
lane2=$!
ok=1
wait "$lane1" || ok=0
wait "$lane2" || ok=0
for b in tcam card_top esp_engine port; do
    if [ -f "$out/$b" ]; then
        echo "---- $b"
        cat "$out/$b"
    fi
done
if [ "$ok" = 0 ]; then
    echo "$me: yosys synthesis FAILED" >&2
    exit 1
fi
echo "$me: yosys synth of tcam, card_top, esp_engine, port (DEPTH=$depth): ok"
