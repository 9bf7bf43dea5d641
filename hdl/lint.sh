#!/bin/sh
# Verilator lint of the card RTL (top card_top), every warning enabled.
# Exits non-zero on any warning or error. Called from .ci/run.
set -eu
cd "$(dirname "$0")"
command -v verilator >/dev/null 2>&1 || {
    echo "lint.sh: verilator not found: install it with \`sudo apt-get install -y verilator\`" >&2
    exit 1
}
verilator --lint-only -Wall -Igenerated --top-module card_top *.v crypto/*.v
echo "lint.sh: verilator --lint-only -Wall: clean"
