#!/usr/bin/env bash
# Checks the Dockerfile without Docker (CI has none):
#   1. its structure: a build stage, a distroless/static (or scratch + CA certificates) runtime stage, a non-root
#      USER, the data dir as a VOLUME, the admin port EXPOSEd, an ENTRYPOINT, CGO_ENABLED=0;
#   2. the build stage's `go build` line, run as plain shell on this checkout: the binary must be static and
#      print the version it was given;
#   3. the image's FERRY_* environment against that binary (ferry check-config): every variable is a setting,
#      the image refuses anonymous clients on its 0.0.0.0 listener unless FERRY_AUTH_ANONYMOUS=true, and the
#      probes' admin port is the one EXPOSEd.
# Takes seconds once the Go build cache is warm.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
	echo "check-image: FAILED: $*"
	exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The Dockerfile's instructions, comments dropped and continuation lines joined, one per line.
instructions=$(sed -e '/^[[:space:]]*#/d' Dockerfile | sed -e ':a' -e '/\\$/N; s/\\\n[[:space:]]*/ /; ta' | sed '/^[[:space:]]*$/d')
froms=$(grep -E '^FROM ' <<<"$instructions" || true)
[ "$(wc -l <<<"$froms")" -ge 2 ] || fail "want a multi-stage build (a build stage and a runtime stage), found: $froms"
grep -qiE '^FROM [^ ]+ AS build$' <<<"$(head -1 <<<"$froms")" || fail "the first stage is not 'FROM … AS build'"
runtime_from=$(tail -1 <<<"$froms" | awk '{print $2}')
# The runtime stage: everything after the last FROM.
runtime=$(awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' <<<"$instructions")
build=$(awk '/^FROM /{n++} n==1' <<<"$instructions")
case "$runtime_from" in
gcr.io/distroless/static*) base="distroless static" ;;
scratch)
	grep -qE '^COPY .*ca-certificates' <<<"$runtime" || fail "a scratch image needs the CA certificates copied in"
	base="scratch + CA certificates"
	;;
*) fail "runtime image $runtime_from is neither gcr.io/distroless/static nor scratch" ;;
esac

user=$(sed -n 's/^USER //p' <<<"$runtime" | tail -1)
[ -n "$user" ] || fail "the runtime stage has no USER: it would run as root"
case "${user%%:*}" in root | 0) fail "USER $user is root" ;; esac

# ENV K=V pairs of the runtime stage (no spaces inside values).
declare -A env=()
while read -r kv; do
	[ -n "$kv" ] && env[${kv%%=*}]=${kv#*=}
done < <(sed -n 's/^ENV //p' <<<"$runtime" | tr ' ' '\n')
data_dir=${env[FERRY_DATA_DIR]:-}
[ -n "$data_dir" ] || fail "the runtime stage does not set FERRY_DATA_DIR"
grep -qE "^VOLUME .*\"?$data_dir\"?" <<<"$runtime" || fail "the data dir $data_dir is not a VOLUME"
admin=${env[FERRY_ADMIN]:-}
[ -n "$admin" ] || fail "the runtime stage does not set FERRY_ADMIN (probes and metrics need it)"
admin_port=${admin##*:}
grep -qE "^EXPOSE .*\b$admin_port\b" <<<"$runtime" || fail "the admin port $admin_port is not EXPOSEd"
mqtt_port=${env[FERRY_MQTT]##*:}
grep -qE "^EXPOSE .*\b$mqtt_port\b" <<<"$runtime" || fail "the MQTT port $mqtt_port is not EXPOSEd"
entry=$(sed -n 's/^ENTRYPOINT //p' <<<"$runtime")
[[ $entry == *'"/usr/local/bin/ferry"'* ]] || fail "ENTRYPOINT is not the ferry binary: $entry"
grep -qE '^COPY --from=build [^ ]*ferry /usr/local/bin/ferry$' <<<"$runtime" || fail "the runtime stage does not copy the binary from the build stage"
echo "check-image: structure ok: $base ($runtime_from), USER $user, VOLUME $data_dir, EXPOSE $mqtt_port $admin_port"

# --- 2. the build stage's go build line, as plain shell ----------------------------------------------------------
gobuild=$(sed -n 's/^RUN \(.*go build .*\)$/\1/p' <<<"$build")
[ "$(wc -l <<<"$gobuild")" -eq 1 ] && [ -n "$gobuild" ] || fail "want exactly one 'RUN … go build …' in the build stage"
[[ $gobuild == *CGO_ENABLED=0* ]] || fail "the build does not set CGO_ENABLED=0: $gobuild"
[[ $gobuild == *"-o /out/ferry "* ]] || fail "the build does not write /out/ferry: $gobuild"
version="check-image-$(date +%s)"
cmdline=${gobuild//'${VERSION}'/$version}
cmdline=${cmdline//'-o /out/ferry '/"-o $work/ferry "}
echo "check-image: running the build stage's command: $cmdline"
bash -c "$cmdline" || fail "the build stage's go build failed"
bin="$work/ferry"
if command -v file >/dev/null; then
	file -b "$bin" | grep -q "statically linked" || fail "the binary is not static: $(file -b "$bin")"
elif command -v ldd >/dev/null; then
	ldd "$bin" 2>&1 | grep -qE 'not a dynamic executable|statically linked' || fail "the binary is not static"
fi
[ "$("$bin" version)" = "ferry $version" ] || fail "'ferry version' printed '$("$bin" version)', want 'ferry $version'"

# --- 3. the image's environment ----------------------------------------------------------------------------------
image_env=()
for k in "${!env[@]}"; do image_env+=("$k=${env[$k]}"); done
mkdir -p "$work/data"
run_env() { env -i PATH="$PATH" HOME="$work" "${image_env[@]}" FERRY_DATA_DIR="$work/data" "$@"; }
status=0
out=$(run_env "$bin" check-config 2>&1) || status=$?
[ "$status" -eq 2 ] && [[ $out == *FERRY_MQTT*auth-anonymous* ]] ||
	fail "the image's defaults must refuse anonymous clients on ${env[FERRY_MQTT]} (status $status): $out"
out=$(run_env FERRY_AUTH_ANONYMOUS=true "$bin" check-config 2>&1) || fail "the image's environment with FERRY_AUTH_ANONYMOUS=true: $out"
echo "check-image: ok (static binary, 'ferry version' = $version; the image's FERRY_* settings load, anonymous access only when asked for)"
