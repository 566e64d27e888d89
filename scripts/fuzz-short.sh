#!/usr/bin/env bash
# fuzz-short.sh [SECONDS] — run every fuzz target of the module for SECONDS each
# (default 5), one at a time, and stop at the first failure.
#
# A failing input is saved under the package's testdata/fuzz/FuzzXxx/, where the next
# plain `go test` runs it as a regression test: commit it with the fix. Plain
# `go test` already runs the committed seed corpora; this script adds the fuzzing.
set -euo pipefail

seconds=${1:-5}
case $seconds in
'' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

# Packages whose tests declare fuzz targets; go test -list gives their exact names.
packages=$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u)
count=0
for pkg in $packages; do
	for target in $(go test -list='^Fuzz' "$pkg" | grep '^Fuzz'); do
		echo "== $pkg $target (${seconds}s)"
		go test -run='^$' -fuzz="^${target}\$" -fuzztime="${seconds}s" "$pkg"
		count=$((count + 1))
	done
done
if [ "$count" -eq 0 ]; then
	echo "no fuzz targets found" >&2
	exit 1
fi
echo "fuzzed $count targets for ${seconds}s each"
