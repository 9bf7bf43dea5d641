#!/usr/bin/env bash
# Runs every fuzz target for a while (default 60 s each). cargo-fuzz needs nightly-only compiler
# flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
#   cargo install cargo-fuzz --locked
#   fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
for t in packet_parse event_decode sync_frame esp_decap pcap_read text_configs record_parse load_report raft_step card_frame; do
  mkdir -p "corpus/$t"
  echo "==> $t (${secs} s)"
  RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=4096 2>&1 | grep -E 'DONE|ERROR|panicked|SUMMARY' || true
done
