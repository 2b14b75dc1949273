#!/usr/bin/env bash
# The tests of both Go modules of this repository: the product (`go test ./...` at the root) and the load
# harness (`perf/`, a module of its own so that its plotting and history-checking dependencies stay out of the
# product's go.mod). Arguments go to both runs; without any, -race.
#   scripts/test.sh                              # what the README means by "run the tests"
#   scripts/test.sh -race -count=1 -timeout 20m  # as CI runs it
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
if [ ${#args[@]} -eq 0 ]; then args=(-race); fi
go test "${args[@]}" ./...
go -C perf test "${args[@]}" ./...
