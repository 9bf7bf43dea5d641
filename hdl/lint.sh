#!/bin/sh
# Verilator lint of the card RTL (top card_top), every warning enabled.
# Exits non-zero on any warning or error. Called from .ci/run.
set -eu
cd "$(dirname "$0")"
me=lint.sh
. ./tools.sh
need verilator
verilator --lint-only -Wall -Igenerated --top-module card_top *.v crypto/*.v
echo "$me: verilator --lint-only -Wall: clean"
