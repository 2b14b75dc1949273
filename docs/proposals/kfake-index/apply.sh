#!/usr/bin/env bash
# apply.sh — make a patched copy of the kfake that go.mod pins, run the patch's tests in it, and say how to
# build Ferry against it. It changes nothing in the repository: go.mod stays as it is.
#
# usage: docs/proposals/kfake-index/apply.sh [DIR]      (DIR: where the patched copy goes [/tmp/ferry-kfake-index])
# Environment: PATCHES [all: "1 2 3"]  TESTS [the patch's tests and kfake's persistence, retention, compaction,
#   fetch, ListOffsets, OffsetForLeaderEpoch and share-group tests]  FULL [0]
#   PATCHES picks the numbered patches beside this script, applied in order (PATCHES=1: the one-line fix alone);
#   TESTS is a `go test -run` pattern; FULL=1 runs kfake's whole suite instead (about 2 minutes on 2 quiet cores).
# Output: the copy's directory, the tests' result, and the `go mod edit -replace` line for a scratch checkout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
dest=${1:-/tmp/ferry-kfake-index}
mod=github.com/twmb/franz-go/pkg/kfake

cd "$root"
version=$(go list -m -f '{{.Version}}' "$mod")
src=$(go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "apply.sh: cannot find $mod@$version in the module cache" >&2; exit 1; }
[ -e "$dest" ] && { echo "apply.sh: $dest exists; remove it or name another directory" >&2; exit 1; }

mkdir -p "$dest"
cp -R "$src/." "$dest/"
chmod -R u+w "$dest"
all=$(cd "$here" && ls [0-9]*-*.patch | sed 's/-.*//' | sort -n | tr '\n' ' ')
for n in ${PATCHES:-$all}; do
  p=$(ls "$here/$n"-*.patch)
  (cd "$dest" && patch -p1 --quiet --forward <"$p")
  echo "apply.sh: $(basename "$p") applied"
done
echo "apply.sh: $mod@$version patched in $dest"

# kfake's own go.mod names older franz-go modules than this kfake needs (it builds inside Ferry because Ferry
# requires newer ones): run its tests with the versions Ferry's build selects.
requires=()
for dep in $(cd "$dest" && go mod edit -json | sed -n 's/^[[:space:]]*"Path": "\(.*\)",*$/\1/p'); do
  [ "$dep" = "$mod" ] && continue
  if v=$(go list -m -f '{{.Version}}' "$dep" 2>/dev/null) && [ -n "$v" ]; then
    requires+=("-require=$dep@$v")
  fi
done
testdir=$(mktemp -d "${TMPDIR:-/tmp}/kfake-index-test.XXXXXX")
trap 'rm -rf "$testdir"' EXIT
cp -R "$dest/." "$testdir/"
(
  cd "$testdir"
  go mod edit "${requires[@]}"
  cat "$root/go.sum" >>go.sum
  run=${TESTS:-'TestPersist|Retention|Compact|Fetch|ListOffsets|LeaderEpoch|Share'}
  if [ "${FULL:-0}" = 1 ]; then run=.; fi
  GOFLAGS=-mod=mod go test -count=1 -timeout 15m -run "$run" .
)

echo "apply.sh: to build Ferry against it, in a scratch checkout (not in main's go.mod):"
echo "  go mod edit -replace=$mod=$dest && go build ./cmd/ferry"
