#!/usr/bin/env bash
# bench-shared.sh — shared subscriptions, share-group mode against consumer-group mode, in one run:
# bin/ferry (embedded Kafka) started fresh per run with --shared-subscriptions MODE; ferry-bench fanin at
# QoS 1, PUBS publishers → one share group of SUBS members ($share/bench/bench/#). Reports, per mode, the
# delivered msg/s (all members together) and the delivery latency p50/p99 (payload stamp → arrival at a
# member), median of RUNS runs.
#
# ferry-bench counts loss per subscriber as if each received every message; in a share group each member
# receives a share, so its "lost" figure is meaningless here and not reported. Loss in share groups is
# checked by server/share_group_test.go (TestShareGroup100k).
#
# Environment (defaults in brackets): RUNS [3]  DURATION [10s]  PUBS [10]  SUBS [10]  RATE [0 = as fast as
# acks allow]  MODES ["share-group consumer-group"]  OUT [perf/results/shared-<time>]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
PUBS=${PUBS:-10}
SUBS=${SUBS:-10}
RATE=${RATE:-0}
MODES=${MODES:-"share-group consumer-group"}
OUT=${OUT:-perf/results/shared-$(date -u +%Y%m%dT%H%M%SZ)}
TMP=$(mktemp -d /tmp/ferry-bench-shared.XXXXXX)
mkdir -p "$OUT" bin

go build -o bin/ferry ./cmd/ferry
go -C perf build -o ../bin/ferry-bench ./cmd/ferry-bench

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { local p=$(( 20000 + RANDOM % 20000 )); while ! port_free "$p"; do p=$((p + 1)); done; echo "$p"; }
wait_port() { local i; for ((i = 0; i < $2 * 10; i++)); do port_free "$1" || return 0; sleep 0.1; done; return 1; }

PID=""
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "nan"}'; }

printf '| mode | delivered msg/s | delivery p50 ms | delivery p99 ms | PUBLISH→PUBACK p99 ms |\n|---|---|---|---|---|\n' >"$OUT/summary.md"
for mode in $MODES; do
  for ((run = 1; run <= RUNS; run++)); do
    p=$(free_port); kp=$(free_port); ap=$(free_port)
    rm -rf "$TMP/data"
    bin/ferry --mqtt "tcp://127.0.0.1:$p" --data-dir "$TMP/data" --embedded-kafka-addr "127.0.0.1:$kp" \
      --admin "127.0.0.1:$ap" --shared-subscriptions "$mode" >"$TMP/ferry-$mode-$run.log" 2>&1 &
    PID=$!
    wait_port "$p" 30 || { echo "ferry did not start: $(tail -c 400 "$TMP/ferry-$mode-$run.log")" >&2; exit 1; }
    grep -o 'msg="shared subscriptions".*' "$TMP/ferry-$mode-$run.log" | head -1 >&2 || true
    bin/ferry-bench fanin --target "127.0.0.1:$p" --server-pid "$PID" --qos 1 --window 16 --pubs "$PUBS" \
      --subs "$SUBS" --filter '$share/bench/bench/#' --payload 64 --rate "$RATE" --duration "$DURATION" \
      --progress 0 --json "$OUT/$mode-$run.json" >/dev/null
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  done
  get() { for f in "$OUT/$mode"-*.json; do jq -r "$1" "$f"; done | median; }
  printf '| %s | %.0f | %.1f | %.1f | %.1f |\n' "$mode" "$(get .rates.delivered)" "$(get .delivery_latency.p50_ms)" \
    "$(get .delivery_latency.p99_ms)" "$(get '.ack_latency.p99_ms // "nan"')" >>"$OUT/summary.md"
done
echo "# $PUBS publishers → $SUBS members of one share group, QoS 1, ${DURATION} windows, median of $RUNS ($(nproc) cores)"
cat "$OUT/summary.md"
