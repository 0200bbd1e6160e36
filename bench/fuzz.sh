#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) to RUNS executions (default 10
# million) or MAX_SECS seconds (default 3600), whichever comes first, and writes
# the counts (executions, time, executions/s, crashes) as a section of
# docs/benchmarks.md between its marker comments (or prints it with --print).
# Needs the nightly toolchain and cargo-fuzz (as fuzz/run-bounded). A crash
# stops that target; its input is left in fuzz/artifacts/TARGET/.
# Usage: bench/fuzz.sh [--runs N] [--max-secs S] [--print] [TARGET...]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS=10000000
MAX_SECS=3600
PRINT=0
TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --max-secs) MAX_SECS="$2"; shift 2 ;;
        --print) PRINT=1; shift ;;
        -*) echo "bench/fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done
if [ ${#TARGETS[@]} = 0 ]; then
    mapfile -t TARGETS < <(cd "$REPO/fuzz" && cargo +nightly fuzz list)
fi
BEGIN_MARK='<!-- bench/fuzz.sh: begin -->'
END_MARK='<!-- bench/fuzz.sh: end -->'
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

declare -A WHAT=(
    [dhcp4]="DHCPv4 request: decode, classify, reply built and encoded"
    [dhcp6]="DHCPv6 message and relay chain, options, classification"
    [tftp]="TFTP packet, file name, option negotiation, netascii"
    [ndp]="router solicitation / advertisement"
    [rmcp]="RMCP/ASF/IPMI 1.5/RMCP+/RAKP, integrity, AES"
    [iso]="ISO 9660 + Rock Ridge/Joliet and UDF trees, family detection, file reads"
    [wim]="WIM header and XML"
    [install_vars]="install variables (JSON/TOML): validate and render"
    [workflow]="workflow definition files (TOML)"
    [image_manifest]="image manifest (agent) and image format detection"
    [lldp]="LLDP frames (agent)"
    [parttable]="MBR and GPT (agent)"
)
rows=()
for t in "${TARGETS[@]}"; do
    echo "bench/fuzz.sh: $t: up to $RUNS executions or $MAX_SECS s" >&2
    start=$(date +%s)
    status=0
    FUZZ_FLAGS="-runs=$RUNS" "$REPO/fuzz/run-bounded" "$MAX_SECS" "$t" >"$logs/$t.log" 2>&1 || status=$?
    secs=$(( $(date +%s) - start ))
    execs=$(awk -F': ' '/stat::number_of_executed_units/ { n = $2 } END { print n + 0 }' "$logs/$t.log")
    rate=$(awk -F': ' '/stat::average_exec_per_sec/ { n = $2 } END { print n + 0 }' "$logs/$t.log")
    if [ "$status" = 0 ]; then crashes=0; else
        crashes=$(grep -c 'Test unit written to\|^==[0-9]*== ERROR: libFuzzer' "$logs/$t.log" || true)
        [ "$crashes" -gt 0 ] || crashes="run failed (exit $status)"
        tail -20 "$logs/$t.log" >&2
    fi
    echo "bench/fuzz.sh: $t: $execs executions in $secs s ($rate/s), crashes: $crashes" >&2
    rows+=("| \`$t\` | ${WHAT[$t]:-} | $execs | $secs | $rate | $crashes |")
done

section() {
    echo "$BEGIN_MARK"
    echo "## Fuzzing: executions per decoder"
    echo
    echo "\`bench/fuzz.sh --runs $RUNS --max-secs $MAX_SECS\`, $(date -u +%Y-%m-%d), $(nproc) vCPUs,"
    echo "cargo-fuzz (libFuzzer), optimised with debug assertions and overflow checks, no"
    echo "sanitizer (safe Rust: the crashes are panics), one process per target, seeded from"
    echo "fuzz/seeds/. A target stops at $RUNS executions or"
    echo "$MAX_SECS s, whichever comes first: fewer executions than $RUNS means the time ran out."
    echo
    echo "| target | what | executions | time (s) | executions/s | crashes |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "$END_MARK"
}
doc="$REPO/docs/benchmarks.md"
if [ "$PRINT" = 1 ]; then section; exit 0; fi
section >"$logs/section.md"
if grep -qF "$BEGIN_MARK" "$doc" && grep -qF "$END_MARK" "$doc"; then
    awk -v b="$BEGIN_MARK" -v e="$END_MARK" -v sec="$logs/section.md" '
        $0 == b { while ((getline line < sec) > 0) print line; skip = 1; next }
        $0 == e { skip = 0; next }
        !skip' "$doc" >"$doc.tmp"
    mv "$doc.tmp" "$doc"
else
    { echo; cat "$logs/section.md"; } >>"$doc"
fi
echo "bench/fuzz.sh: wrote the fuzz section of $doc" >&2
