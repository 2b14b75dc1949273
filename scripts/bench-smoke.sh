#!/usr/bin/env bash
# Smoke run of the load harness against a freshly built Ferry: a few seconds per scenario, failing on any
# error or lost acknowledged message. CI runs it so the harness keeps working; it measures nothing worth quoting.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
go build -o "$work/ferry" ./cmd/ferry
go -C perf build -o "$work/ferry-bench" ./cmd/ferry-bench # perf/ is its own module
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
MQTT=$(free_port); KAFKA=$(free_port)
"$work/ferry" --mqtt "tcp://127.0.0.1:$MQTT" --embedded-kafka-addr "127.0.0.1:$KAFKA" --data-dir "$work/data" \
  --log-level warn >"$work/ferry.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$MQTT") 2>/dev/null && break
  sleep 0.1
done
fail() { echo "bench-smoke FAILED: $*"; tail -20 "$work/ferry.log"; exit 1; }
T=(--target "127.0.0.1:$MQTT" --server-pid "$pid" --smoke)
"$work/ferry-bench" idle "${T[@]}" --kafka "127.0.0.1:$KAFKA" >"$work/idle.out" 2>&1 || fail "idle: $(tail -5 "$work/idle.out")"
"$work/ferry-bench" fanin "${T[@]}" --qos 1 >"$work/fanin.out" 2>&1 || fail "fanin: $(tail -5 "$work/fanin.out")"
"$work/ferry-bench" fanout "${T[@]}" >"$work/fanout.out" 2>&1 || fail "fanout: $(tail -5 "$work/fanout.out")"
"$work/ferry-bench" kafka-ingest "${T[@]}" --kafka "127.0.0.1:$KAFKA" >"$work/ingest.out" 2>&1 || fail "kafka-ingest: $(tail -5 "$work/ingest.out")"
echo "bench-smoke: idle, fanin, fanout and kafka-ingest ran against Ferry with nothing lost"
