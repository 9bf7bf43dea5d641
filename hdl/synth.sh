#!/bin/sh
# Yosys generic synthesis of the card RTL at a small depth (default 16, or
# $SYNTH_DEPTH). Any Yosys warning counts as a failure (-e '.*'). Prints the
# cell statistics. Called from .ci/run.
set -eu
cd "$(dirname "$0")"
me=synth.sh
. ./tools.sh
depth="${SYNTH_DEPTH:-16}"
synth_top card_top \
    "chparam -set DEPTH $depth -set SA_DEPTH ${SYNTH_SA_SLOTS:-4} -set ESP_BUF_WORDS ${SYNTH_ESP_BUF_WORDS:-32} card_top" \
    -s synth.ys
echo "$me: yosys synth -top card_top (DEPTH=$depth): ok"
