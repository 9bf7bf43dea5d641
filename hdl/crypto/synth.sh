#!/bin/sh
# Yosys generic synthesis of the AES-GCM RTL (top aes_gcm). Any Yosys
# warning counts as a failure (-e '.*'). Prints the cell statistics.
set -eu
cd "$(dirname "$0")"
command -v yosys >/dev/null 2>&1 || {
    echo "crypto/synth.sh: yosys not found: install it with \`sudo apt-get install -y yosys\`" >&2
    exit 1
}
log="$(mktemp)"
stat="$(mktemp)"
trap 'rm -f "$log" "$stat"' EXIT
if ! yosys -e '.*' -l "$log" -q \
    -p "read_verilog aes_sbox.v ghash_mul.v aes_core.v aes_gcm.v; hierarchy -check -top aes_gcm; synth -top aes_gcm; check -assert; tee -q -o $stat stat"; then
    tail -n 40 "$log" >&2
    echo "crypto/synth.sh: yosys synthesis FAILED" >&2
    exit 1
fi
cat "$stat"
echo "crypto/synth.sh: yosys synth -top aes_gcm: ok"
