#!/usr/bin/env bash
# Runs ctnet's whole test suite as root: static checks, unit tests, end-to-end tests in
# sandbox network namespaces (never the machine's own), a short soak and a short fuzz pass.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
"$(dirname "$0")/deps.sh"

echo "== go vet"
go vet ./...
go vet -tags soak ./...
(cd bench && go vet ./...) # a module of its own: the root's ./... does not reach it
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[ -z "$unformatted" ] || { echo "gofmt would change: $unformatted" >&2; exit 1; }
echo "== go test -race"
# The prerequisites are installed above: a test that would skip for lack of one fails.
export CTNET_REQUIRE_ALL=1
go test -race -count=1 -timeout 30m ./...
echo "== soak (short)"
CTNET_SOAK_CYCLES=${SOAK_CYCLES:-400} go test -race -count=1 -timeout 10m -tags soak -run '^TestSoak' ./e2e/
echo "== fuzz (short)"
"$(dirname "$0")/fuzz-short.sh" "${FUZZ_SECONDS:-5}"
echo "== all tests passed"
