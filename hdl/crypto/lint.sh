#!/bin/sh
# Verilator lint of the AES-GCM RTL (top aes_gcm), every warning enabled.
# Exits non-zero on any warning or error. Called from scripts/test-all.sh.
set -eu
cd "$(dirname "$0")"
command -v verilator >/dev/null 2>&1 || {
    echo "crypto/lint.sh: verilator not found: install it with \`sudo apt-get install -y verilator\`" >&2
    exit 1
}
SRCS="aes_gcm.v aes_core.v ghash_mul.v aes_sbox.v"
verilator --lint-only -Wall --top-module aes_gcm $SRCS
if [ -f esp_engine.v ]; then
    verilator --lint-only -Wall -I../generated --top-module esp_engine esp_engine.v $SRCS
fi
echo "crypto/lint.sh: verilator --lint-only -Wall: clean"
