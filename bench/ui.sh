#!/usr/bin/env bash
# bench/ui.sh: the web dashboard's page weight and speed. One `rackboot serve`
# (API on loopback, SQLite in a temporary state directory) gets N machines
# (default 10,000) by `rackboot machine import`; headless Chromium (Debian's,
# over WebDriver) then measures:
#   - first load: files, bytes transferred and decoded, and time to the load
#     event of the sign-in page, from a cold cache;
#   - the fleet table: from navigation to the table drawn (its first page of 50
#     rows, counted out of N), signed in, with a cold and a warm cache (median of 3);
#   - in the page: a 1,000-row page, a label filter and a sort, each from request
#     to table drawn.
# It is the ignored test fleet_page_weight_and_render_time_at_10000_machines of
# crates/rackboot/tests/e2e_ui.rs.
#
# Run from the repository (root not needed):  bench/ui.sh [--machines N] [--out FILE]
#               [--rackboot PATH]
#               bench/ui.sh --splice SECTION_FILE DOC_FILE
# The server is the release build (target/release/rackboot, built if missing) unless
# --rackboot names another. --out FILE gets a Markdown section (default: stdout);
# --splice puts it into DOC_FILE between its marker comments, or appends it.
set -euo pipefail

BEGIN_MARK='<!-- bench/ui.sh: begin -->'
END_MARK='<!-- bench/ui.sh: end -->'
if [ "${1:-}" = --splice ]; then
    [ $# = 3 ] && [ -s "$2" ] || { echo "usage: bench/ui.sh --splice SECTION_FILE DOC_FILE" >&2; exit 2; }
    if [ -f "$3" ] && grep -qF "$BEGIN_MARK" "$3" && grep -qF "$END_MARK" "$3"; then
        awk -v b="$BEGIN_MARK" -v e="$END_MARK" -v sec="$2" '
            $0 == b { while ((getline line < sec) > 0) print line; skip = 1; next }
            $0 == e { skip = 0; next }
            !skip' "$3" >"$3.tmp"
        mv "$3.tmp" "$3"
    else
        { echo; cat "$2"; } >>"$3"
    fi
    exit 0
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MACHINES=10000
OUT=""
RACKBOOT_BIN="$REPO/target/release/rackboot"
while [ $# -gt 0 ]; do
    case "$1" in
        --machines) MACHINES="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --rackboot) RACKBOOT_BIN="$2"; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "bench/ui.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ "$MACHINES" =~ ^[0-9]+$ ]] && [ "$MACHINES" -ge 100 ] && [ "$MACHINES" -le 100000 ] \
    || { echo "bench/ui.sh: --machines must be 100-100000" >&2; exit 2; }
RACKBOOT_BIN=$(realpath -m "$RACKBOOT_BIN")   # the test runs in crates/rackboot
cd "$REPO"
if [ ! -x "$RACKBOOT_BIN" ]; then
    cargo build --release -p rackboot >&2
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
RACKBOOT_BIN="$RACKBOOT_BIN" UI_BENCH_MACHINES="$MACHINES" cargo test -q -p rackboot --test e2e_ui -- \
    --ignored --exact fleet_page_weight_and_render_time_at_10000_machines --nocapture 2>&1 | tee "$log" >&2
val() { awk -F= -v k="$1" '$1 == k { print $2; exit }' "$log"; }
kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }
[ -n "$(val fleet_table_cold_ms)" ] || { echo "bench/ui.sh: the benchmark printed no figures" >&2; exit 1; }
section=$(cat <<MD
$BEGIN_MARK
## Dashboard: page weight and speed ($(date -u '+%Y-%m-%d %H:%M') UTC)

\`bench/ui.sh\`: headless Chromium $(chromium --version 2>/dev/null | awk '{print $2}') over WebDriver, \`rackboot serve\`
($(basename "$RACKBOOT_BIN") build) on loopback with $(printf "%'d" "$(val machines)") machines enrolled by \`rackboot machine import\`
($(val import_secs) s). Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg).

| what | figure |
|---|---|
| first load (sign-in page, cold cache) | $(val first_load_files) files, $(kib "$(val first_load_bytes)") transferred ($(kib "$(val first_load_decoded_bytes)") uncompressed), load event at $(val first_load_ms) ms |
| fleet table at $(printf "%'d" "$(val machines)") machines, navigation to table drawn (50 rows, median of 3) | $(val fleet_table_cold_ms) ms cold cache, $(val fleet_table_warm_ms) ms warm |
| a 1,000-row page, request to table drawn | $(val rows_1000_ms) ms |
| label filter (server-side, 1,000-row page), request to table drawn | $(val filter_label_ms) ms |
| sort by state (server-side), request to table drawn | $(val sort_state_ms) ms |

The assets are not compressed (no gzip on this listener); every one is revalidated
with its ETag on later loads (\`304\`).
$END_MARK
MD
)
if [ -n "$OUT" ]; then echo "$section" >"$OUT"; else echo "$section"; fi
