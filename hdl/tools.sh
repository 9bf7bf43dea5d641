# Shared by the hdl lint, synthesis and test-bench scripts; sourced, never run.
# The caller has set `-eu` and changed into its own folder, and names itself in
# $me for the messages.

# need TOOL: stop with an install hint unless TOOL is on the PATH.
need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "$me: $1 not found: install it with \`sudo apt-get install -y $1\`" >&2
        exit 1
    }
}

# synth_top TOP PREPARE [YOSYS_ARG...]: Yosys generic synthesis of TOP after
# the passes PREPARE (reading or parametrising the design), with any warning a
# failure (-e '.*'); prints the cell statistics, or the log's tail and stops.
synth_top() {
    top="$1"
    prepare="$2"
    shift 2
    need yosys
    log="$(mktemp)"
    stat="$(mktemp)"
    trap 'rm -f "$log" "$stat"' EXIT
    if ! yosys -e '.*' -l "$log" -q "$@" \
        -p "$prepare; hierarchy -check -top $top; synth -top $top; check -assert; tee -q -o $stat stat"; then
        tail -n 40 "$log" >&2
        echo "$me: yosys synthesis FAILED" >&2
        exit 1
    fi
    cat "$stat"
}
