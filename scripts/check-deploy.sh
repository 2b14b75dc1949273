#!/usr/bin/env bash
# Checks the files in deploy/ against the real binary and systemd:
#   1. deploy/ferry.yaml loads: the built ferry starts with --config deploy/ferry.yaml (only ports and the data
#      directory are overridden, so it runs unprivileged in a temporary directory), says "serving MQTT",
#      answers /healthz, /readyz and an MQTT CONNECT, and exits 0 after SIGTERM.
#   2. deploy/ferry.service passes `systemd-analyze verify` (installed from Debian's systemd package if
#      missing), and its stop timeout and open-file limit fit the YAML file's settings.
# Takes well under a minute once the Go build cache is warm.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pid=""
cleanup() {
	if [ -n "$pid" ]; then
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
fail() {
	echo "check-deploy: FAILED: $*"
	if [ -s "$work/ferry.log" ]; then
		echo "--- ferry log (last 20 lines)"
		tail -n 20 "$work/ferry.log"
	fi
	exit 1
}
start=$SECONDS

# The binary goes where the unit's ExecStart expects it, inside a temporary root used for step 2.
root="$work/root"
bin="$root/usr/local/bin/ferry"
mkdir -p "$(dirname "$bin")"
go build -o "$bin" ./cmd/ferry || fail "go build ./cmd/ferry"

# --- 1. the example configuration ------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
mqtt_port=$(free_port) kafka_port=$(free_port) admin_port=$(free_port)
"$bin" --config deploy/ferry.yaml --mqtt "tcp://127.0.0.1:$mqtt_port" --embedded-kafka-addr "127.0.0.1:$kafka_port" \
	--admin "127.0.0.1:$admin_port" --data-dir "$work/data" >"$work/ferry.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
	grep -q "serving MQTT" "$work/ferry.log" && break
	kill -0 "$pid" 2>/dev/null || fail "ferry exited at start with deploy/ferry.yaml"
	sleep 0.1
done
grep -q "serving MQTT" "$work/ferry.log" || fail "ferry did not say 'serving MQTT' within 30 s"
# log-format: json comes from the file, so this also shows the file's values were applied.
grep -q '"msg":"ferry is serving MQTT"' "$work/ferry.log" || fail "the log is not JSON: log-format from deploy/ferry.yaml was not applied"

# The example is meant to show every setting, as a key or a commented-out "# key: value" line: name any that
# `ferry --help` has and the file lacks (a note here; TestFlagsDocumented in cmd/ferry makes it a failure).
missing=$("$bin" --help | sed -n 's/^  -\([a-z0-9-]*\).*/\1/p' | grep -vx config | while read -r name; do
	grep -qE "^(# ?)?$name:" deploy/ferry.yaml || echo "$name"
done | tr '\n' ' ')
[ -z "$missing" ] || echo "check-deploy: note: settings of ferry --help not in deploy/ferry.yaml: ${missing% }"

# http_get PATH: the body of an HTTP/1.0 GET on the admin listener.
http_get() {
	local resp
	# shellcheck disable=SC2016 # $1 and $2 belong to the inner bash
	resp=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"; printf "GET %s HTTP/1.0\r\nHost: x\r\n\r\n" "$2" >&3; cat <&3' _ "$admin_port" "$1") || return 1
	sed '1,/^\r$/d' <<<"$resp"
}
[ "$(http_get /healthz)" = ok ] || fail "GET /healthz on the admin listener did not answer 'ok'"
[ "$(http_get /readyz)" = ready ] || fail "GET /readyz on the admin listener did not answer 'ready'"

# An MQTT 3.1.1 CONNECT (clean session, keep-alive 60 s, client id "chk") must get CONNACK "accepted".
# shellcheck disable=SC2016 # $1 belongs to the inner bash
connack=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"
	printf "\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03chk" >&3
	head -c 4 <&3 | od -An -tx1' _ "$mqtt_port" | tr -s ' ' | sed 's/^ //; s/ $//') || true
[ "$connack" = "20 02 00 00" ] || fail "MQTT CONNECT got '$connack', want CONNACK accepted (20 02 00 00)"

stop_at=$SECONDS
kill -TERM "$pid"
for _ in $(seq 450); do
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "ferry still running 45 s after SIGTERM"
status=0
wait "$pid" || status=$?
pid=""
[ "$status" -eq 0 ] || fail "ferry exited with status $status after SIGTERM, want 0"
stop_secs=$((SECONDS - stop_at))
mv "$work/ferry.log" "$work/ferry-config-check.log" # later failures are not about this run
echo "check-deploy: deploy/ferry.yaml: ferry served MQTT, /healthz, /readyz and a CONNACK, and stopped cleanly in ${stop_secs}s"

# --- 2. the systemd unit -----------------------------------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null; then
	echo "check-deploy: installing Debian's systemd package for systemd-analyze"
	SUDO=""
	[ "$(id -u)" -ne 0 ] && SUDO="sudo"
	$SUDO apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
# Verify the unit file unchanged, in a temporary root (--root): ExecStart=/usr/local/bin/ferry then resolves to
# the binary built above instead of whatever this machine has (or lacks) there, and the targets the unit
# names (network-online.target, multi-user.target) come from a copy of this machine's systemd units. A
# container without systemd running is fine: verify only loads and checks unit files.
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/bin"
cp deploy/ferry.service "$root/etc/systemd/system/ferry.service"
# ExecReload=/bin/kill must exist in the root too (verify checks every Exec*= command): procps' kill.
killbin=$(type -P kill || true)
[ -n "$killbin" ] || fail "no kill executable (procps) on this machine to stand for the unit's /bin/kill"
cp "$killbin" "$root/bin/kill"
sysunits=/usr/lib/systemd/system
[ -d "$sysunits" ] || sysunits=/lib/systemd/system
cp -a "$sysunits" "$root/usr/lib/systemd/" || fail "cannot copy $sysunits into the temporary root"
vstatus=0
verify=$(systemd-analyze verify --root="$root" ferry.service 2>&1) || vstatus=$?
# Parse errors in a unit are only warnings for systemd (the line is ignored), so any message about the unit
# fails the check, as does a non-zero status. Messages about other units are shown, not fatal.
ours=$(grep -E 'ferry\.service' <<<"$verify" || true)
others=$(grep -vE 'ferry\.service' <<<"$verify" || true)
[ -z "$others" ] || printf 'check-deploy: note: systemd-analyze said about other units:\n%s\n' "$others"
if [ "$vstatus" -ne 0 ] || [ -n "$ours" ]; then
	fail "systemd-analyze verify deploy/ferry.service (status $vstatus): ${ours:-$verify}"
fi

# The unit must give Ferry longer to stop than Ferry gives itself, and enough descriptors for max-connections.
unit_key() { sed -n "s/^$1=//p" deploy/ferry.service | tail -1; }
yaml_key() { sed -n "s/^$1:[[:space:]]*//p" deploy/ferry.yaml | tail -1; }
seconds() { [[ $1 =~ ^([0-9]+)s?$ ]] && echo "${BASH_REMATCH[1]}"; }
stop_unit=$(seconds "$(unit_key TimeoutStopSec)") || fail "TimeoutStopSec is not plain seconds"
stop_ferry=$(seconds "$(yaml_key shutdown-timeout)") || fail "shutdown-timeout is not plain seconds"
[ "$stop_unit" -gt "$stop_ferry" ] || fail "TimeoutStopSec=${stop_unit}s is not above shutdown-timeout ${stop_ferry}s"
nofile=$(unit_key LimitNOFILE) maxconn=$(yaml_key max-connections)
if ! [ "$maxconn" -gt 0 ] || ! [ "$maxconn" -le $((nofile - 64)) ]; then
	fail "max-connections $maxconn does not fit LimitNOFILE=$nofile (Ferry keeps 64 descriptors for itself)"
fi

exposure=""
if sec=$(systemd-analyze security --offline=true --root="$root" ferry.service 2>/dev/null); then
	exposure=$(sed -n 's/.*Overall exposure level for ferry.service: \([0-9.]* [A-Z]*\).*/\1/p' <<<"$sec")
fi
sd=$(systemd-analyze --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')
echo "check-deploy: deploy/ferry.service: systemd-analyze verify clean (systemd $sd)${exposure:+, systemd-analyze security exposure $exposure}"
echo "check-deploy: ok (ferry.yaml loads and serves, ferry.service verifies; $((SECONDS - start))s)"
