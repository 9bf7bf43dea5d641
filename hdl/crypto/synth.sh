#!/bin/sh
# Yosys generic synthesis of the AES-GCM RTL (top aes_gcm). Any Yosys
# warning counts as a failure (-e '.*'). Prints the cell statistics.
set -eu
cd "$(dirname "$0")"
me=crypto/synth.sh
. ../tools.sh
synth_top aes_gcm "read_verilog aes_sbox.v ghash_mul.v aes_core.v aes_gcm.v"
echo "$me: yosys synth -top aes_gcm: ok"
