#!/bin/sh
# Yosys generic synthesis of the card RTL at a small depth (default 16, or
# $SYNTH_DEPTH). Any Yosys warning counts as a failure (-e '.*'). Prints the
# cell statistics. Called from .ci/run.
set -eu
cd "$(dirname "$0")"
command -v yosys >/dev/null 2>&1 || {
    echo "synth.sh: yosys not found: install it with \`sudo apt-get install -y yosys\`" >&2
    exit 1
}
depth="${SYNTH_DEPTH:-16}"
log="$(mktemp)"
stat="$(mktemp)"
trap 'rm -f "$log" "$stat"' EXIT
if ! yosys -e '.*' -l "$log" -q -s synth.ys \
    -p "chparam -set DEPTH $depth -set SA_DEPTH ${SYNTH_SA_SLOTS:-4} -set ESP_BUF_WORDS ${SYNTH_ESP_BUF_WORDS:-32} card_top; hierarchy -check -top card_top; synth -top card_top; check -assert; tee -q -o $stat stat"; then
    tail -n 40 "$log" >&2
    echo "synth.sh: yosys synthesis FAILED" >&2
    exit 1
fi
cat "$stat"
echo "synth.sh: yosys synth -top card_top (DEPTH=$depth): ok"
