#!/usr/bin/env bash
# Runs every test: the reference-model card, the Verilator-built RTL, the
# state-core simulations, the daemon's multi-process clusters and the CLIs.
# Installs Verilator, Yosys, nftables, conntrack and conntrackd from the
# distribution's packages when missing (as root), or stops and says how.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v verilator >/dev/null 2>&1 || need+=(verilator)
command -v yosys >/dev/null 2>&1 || need+=(yosys)
# the lab's workload pings across the cluster (`clusterd lab run`)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
# the kernel baseline lab (host/stack/tests/kernel_baseline.rs)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v conntrackd >/dev/null 2>&1 || need+=(conntrackd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${need[*]} from the distribution's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "error: ${need[*]} not found. Install with: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi

# Known-answer vectors (AES-GCM, ESP) live outside the repository; tests that
# need them read KAT_DIR. Default to the shared test data next to the checkout.
if [ -z "${KAT_DIR:-}" ] && [ -d ../shared/testdata/kat ]; then
  KAT_DIR="$(cd ../shared/testdata/kat && pwd)"
fi
export KAT_DIR="${KAT_DIR:-}"

echo "==> RTL lint and synthesis"
for s in hdl/lint.sh hdl/synth.sh hdl/crypto/lint.sh hdl/crypto/synth.sh; do
  if [ -f "$s" ]; then bash "$s"; fi
done

echo "==> AES-GCM RTL against the NIST vectors (Verilator test bench)"
sh hdl/crypto/run_tb.sh

echo "==> cargo test (every crate, Verilator co-simulation on)"
cargo test --workspace --all-features --locked 2>&1
