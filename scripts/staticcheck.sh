#!/usr/bin/env bash
# staticcheck ./... for both modules (the product and perf/), with staticcheck at the version pinned below:
# installed with `go install` into GOBIN (or GOPATH/bin) when it is missing there or another version.
# Arguments go to staticcheck. CI runs it (.ci/run); a finding fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v0.8.2 # staticcheck 2026.2.2; Go 1.26 needs 2026.1 (v0.7.0) or later
bin=$(go env GOBIN)
if [ -z "$bin" ]; then bin=$(go env GOPATH)/bin; fi
sc=$bin/staticcheck
if ! [ -x "$sc" ] || ! "$sc" -version 2>/dev/null | grep -qF "(${version#v})"; then
  echo "installing staticcheck $version into $bin" >&2
  (cd /tmp && go install "honnef.co/go/tools/cmd/staticcheck@$version")
fi
"$sc" "$@" ./...
(cd perf && "$sc" "$@" ./...)
