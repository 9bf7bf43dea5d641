#!/bin/sh
# Verilator lint of the AES-GCM RTL (top aes_gcm), every warning enabled.
# Exits non-zero on any warning or error. Called from scripts/test-all.sh.
set -eu
cd "$(dirname "$0")"
me=crypto/lint.sh
. ../tools.sh
need verilator
SRCS="aes_gcm.v aes_core.v ghash_mul.v aes_sbox.v"
verilator --lint-only -Wall --top-module aes_gcm $SRCS
if [ -f esp_engine.v ]; then
    verilator --lint-only -Wall -I../generated --top-module esp_engine esp_engine.v $SRCS
fi
echo "$me: verilator --lint-only -Wall: clean"
