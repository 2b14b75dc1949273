#!/usr/bin/env bash
# Release build of the ferry binary: static (no cgo, no libc), stripped, without local paths, with the version
# stamped in. Checks the result is static and that 'ferry version' prints the version, then prints its size
# and SHA-256 (also written next to it, in sha256sum format).
#
#   scripts/build.sh                      # dist/ferry-<version>-linux-<host arch>
#   GOARCH=arm64 scripts/build.sh         # cross-compile; 'ferry version' is then checked only if it runs here
#   VERSION=1.2.0 scripts/build.sh        # default: git describe --tags --always, -dirty with local changes, else "dev"
#
# Releases are git tags vMAJOR.MINOR.PATCH on main, with their CHANGELOG.md section: a build of the tagged commit
# is named after the tag. "-dirty" is added for changes to tracked files (go.mod and go.sum included: CI no longer
# builds with -mod=mod, which rewrote go.sum, and checks both with go mod tidy -diff).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
	echo "build: FAILED: $*" >&2
	exit 1
}

if [ -z "${VERSION:-}" ]; then
	if VERSION=$(git describe --tags --always 2>/dev/null); then
		if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
			VERSION="$VERSION-dirty"
		fi
	else
		VERSION=dev
	fi
fi
[[ $VERSION =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || fail "VERSION '$VERSION' is not usable in a file name"
GOARCH=${GOARCH:-$(go env GOARCH)}
export GOOS=linux GOARCH CGO_ENABLED=0
out="dist/ferry-$VERSION-linux-$GOARCH"

mkdir -p dist
go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$out" ./cmd/ferry

# Static: no program interpreter (ld.so) and no shared libraries.
static="not checked (neither file nor ldd is installed)"
if command -v file >/dev/null; then
	desc=$(file -b "$out")
	case "$desc" in
	*"statically linked"*) static="static (file: statically linked)" ;;
	*) fail "$out is not static: $desc" ;;
	esac
elif command -v ldd >/dev/null; then
	if ldd "$out" 2>&1 | grep -qE 'not a dynamic executable|statically linked'; then
		static="static (ldd: not a dynamic executable)"
	else
		fail "$out is not static: $(ldd "$out" 2>&1 | head -3 | tr '\n' ' ')"
	fi
fi

# The version stamp, when the binary can run on this machine.
if [ "$GOARCH" = "$(go env GOHOSTARCH)" ] && [ "$(go env GOHOSTOS)" = linux ]; then
	got=$("$out" version)
	[ "$got" = "ferry $VERSION" ] || fail "'$out version' printed '$got', want 'ferry $VERSION'"
	vcheck="'ferry version' prints '$got'"
else
	vcheck="'ferry version' not run (cross-compiled for $GOARCH)"
fi

size=$(stat -c %s "$out")
(cd dist && sha256sum "$(basename "$out")" >"$(basename "$out").sha256")
sum=$(cut -d' ' -f1 <"$out.sha256")
echo "built $out"
echo "  size    $size bytes ($((size / 1048576)) MiB)"
echo "  sha256  $sum   (also in $out.sha256)"
echo "build: ok: $out, $static, $vcheck, $size bytes"
