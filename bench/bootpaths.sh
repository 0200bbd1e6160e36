#!/usr/bin/env bash
# bench/bootpaths.sh: power-on to kernel for each boot path rackboot serves (IPv4 UEFI
# PXE → iPXE, IPv6-only UEFI PXE → iPXE, UEFI HTTP boot, Secure Boot shim → GRUB), on
# one OVMF machine in the lab, through `rackboot serve` alone. Runs the ignored test
# bootpaths_benchmark (crates/rackboot/tests/e2e_bootpaths.rs) and splices its Markdown
# section into docs/benchmarks.md (between its marker comments, or appended).
#
# Run as root:  bench/bootpaths.sh [--rounds N] [--out FILE]
# The test builds and tears down its own labs (namespaces, QEMU, servers). About 3
# minutes per round on 2 cores; the default 3 rounds take about 10 minutes.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=3
OUT="$REPO/docs/benchmarks.md"
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "bench/bootpaths.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench/bootpaths.sh: must run as root (network namespaces)" >&2; exit 1; }

SECTION="$(mktemp)"
trap 'rm -f "$SECTION"' EXIT
cd "$REPO"
# RACKBOOT_TEST_PRIV=1: the test needs root and namespaces (crates/rackboot-testenv).
RACKBOOT_TEST_PRIV=1 BOOTPATHS_ROUNDS="$ROUNDS" BOOTPATHS_OUT="$SECTION" \
    cargo test -p rackboot --test e2e_bootpaths -- --ignored --nocapture bootpaths_benchmark >&2
[ -s "$SECTION" ] || { echo "bench/bootpaths.sh: the benchmark wrote no section" >&2; exit 1; }

BEGIN_MARK='<!-- bench/bootpaths.sh: begin -->'
END_MARK='<!-- bench/bootpaths.sh: end -->'
if [ -f "$OUT" ] && grep -qF "$BEGIN_MARK" "$OUT" && grep -qF "$END_MARK" "$OUT"; then
    awk -v b="$BEGIN_MARK" -v e="$END_MARK" -v sec="$SECTION" '
        $0 == b { while ((getline line < sec) > 0) print line; skip = 1; next }
        $0 == e { skip = 0; next }
        !skip' "$OUT" >"$OUT.tmp"
    mv "$OUT.tmp" "$OUT"
else
    { echo; cat "$SECTION"; } >>"$OUT"
fi
echo "bench/bootpaths.sh: wrote the boot paths section of $OUT" >&2
