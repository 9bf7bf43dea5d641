#!/bin/sh
# Builds the Verilator test bench of aes_gcm (tb/tb_aes_gcm.cpp) and runs it:
# NIST CAVP AES-GCM vectors from $KAT_DIR (skipped when unset), then the
# cycles-per-block measurement (fails above 14 for AES-256).
set -eu
cd "$(dirname "$0")"
if [ -n "${CRYPTO_TB_DIR:-}" ]; then
    obj="$CRYPTO_TB_DIR"
else
    obj="$(mktemp -d)"
    trap 'rm -rf "$obj"' EXIT
fi
verilator --cc --exe --build -O2 -j 2 --Mdir "$obj" --top-module aes_gcm \
    aes_gcm.v aes_core.v ghash_mul.v aes_sbox.v "$(pwd)/tb/tb_aes_gcm.cpp" -o tb_aes_gcm >/dev/null
"$obj/tb_aes_gcm"
