#!/bin/sh
# Yosys generic synthesis of the card RTL at a small depth (default 16, or
# $SYNTH_DEPTH). Any Yosys warning counts as a failure (-e '.*'). Prints the
# cell statistics. Called from .ci/run.
#
# Generic synthesis maps every memory to flip-flops, so the sizes that do not
# change the logic's shape are small here: 4 SA slots, a 128-byte ESP buffer,
# 6-bit CAM identifiers (a 64-bit FLUSH_DID bitmap instead of 4,096 bits), and
# a packet port block with 64-byte frames, a 1-frame host queue and 64
# identifiers. The contract's sizes are the RTL's defaults (what Verilator
# builds and the co-simulation checks).
set -eu
cd "$(dirname "$0")"
me=synth.sh
. ./tools.sh
depth="${SYNTH_DEPTH:-16}"
synth_top card_top \
    "chparam -set DEPTH $depth -set SA_DEPTH ${SYNTH_SA_SLOTS:-4} -set ESP_BUF_WORDS ${SYNTH_ESP_BUF_WORDS:-32} -set CAM_DID_BITS_P ${SYNTH_DID_BITS:-6} -set PORT_FRAME ${SYNTH_PORT_FRAME:-64} -set PORT_QDEPTH ${SYNTH_PORT_QDEPTH:-1} -set PORT_NIDS ${SYNTH_PORT_IDS:-64} card_top" \
    -s synth.ys
echo "$me: yosys synth -top card_top (DEPTH=$depth): ok"
