#!/usr/bin/env bash
# soak.sh — nothing grows without bound over a long mixed run.
#
# Ferry (with --kafka-brokers on the standalone kfake process, so that Ferry's RSS is Ferry's alone: kfake keeps
# every record in memory) serves for DURATION a mixed workload (ferry-chaos soak): QoS 0, 1 and 2 publishers,
# retained messages on 10 topics, wildcard and exact subscribers, 10 persistent sessions that leave and come
# back every 15–30 s, and a short-lived client every 500 ms that reads the retained messages and leaves.
# Ferry's RSS (/proc/PID/smaps_rollup), goroutines (go_goroutines in /metrics) and open fds (/proc/PID/fd) are
# sampled every EVERY. After the warm-up (the first 20 %), the median of the last quarter of the samples must
# not exceed the median of the second quarter by more than: RSS +10 % + 8 MiB, goroutines +10 % + 20,
# fds +5 % + 10. The least-squares slope per minute is printed too. A dropped connection, a persistent
# session not found on return, or a short-lived client missing retained messages also fails the run.
#
# Ferry's recent-records cache is a bounded memory that fills at the workload's pace (about 16 minutes for the
# default 64 MiB here); it runs with RECENT_CACHE [8 MiB] so that it is full within the warm-up and its filling
# is not mistaken for growth. (The cache's own bound is tested in kafkamux.)
#
# MODE=embedded runs Ferry with its embedded Kafka instead (--data-dir in the work directory), so that Ferry's
# RSS includes the broker's: its index of stored batches, bounded by retention (docs/operations.md, "Standalone
# mode"). FERRY_ARGS, flags added to Ferry's, defaults to "--embedded-retention 2m --embedded-clean-interval 15s"
# in this mode, so that retention reaches its steady state within the warm-up of a run of 15 minutes or more
# (WARMUP [0.2] of DURATION); a shorter run sees the index still filling. FERRY_ARGS="" runs Ferry's defaults
# (24h, 1 GiB: the index then grows for the whole of any short run).
#
# Environment: DURATION [10m]  EVERY [5s]  MODE [kfake|embedded]  RATE [450] (msg/s of the QoS 0/1/2 publishers)
# WARMUP [0.2]  RSS_ABS [8388608] (bytes of RSS growth allowed on top of 10 %)  RECENT_CACHE [8388608]  FERRY_BIN (a prebuilt ferry)  FERRY_ARGS  KEEP [0]
# Verdict: "soak: PASS|FAIL …" with the figures; exit 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10m}
EVERY=${EVERY:-5s}
MODE=${MODE:-kfake}
source scripts/lib/fault.sh
case $MODE in
kfake) fault_init soak kfake ;;
embedded) fault_init soak ;;
*) echo "soak: FAIL MODE=$MODE: want kfake or embedded"; exit 2 ;;
esac

MQTT=$(free_port); KAFKA=$(free_port); ADMIN=$(free_port)
if [[ $MODE == kfake ]]; then
  "$work/kfake" --addr "127.0.0.1:$KAFKA" --partitions 6 >"$work/kfake.log" 2>&1 &
  pids+=($!)
  wait_port "$KAFKA" || { echo "soak: FAIL kfake did not listen"; exit 1; }
  kafka_args=(--kafka-brokers "127.0.0.1:$KAFKA")
else
  kafka_args=(--embedded-kafka-addr "127.0.0.1:$KAFKA" --data-dir "$work/data")
  FERRY_ARGS=${FERRY_ARGS---embedded-retention 2m --embedded-clean-interval 15s}
fi
# shellcheck disable=SC2086 # FERRY_ARGS is a list of flags
"$work/ferry" --mqtt "tcp://127.0.0.1:$MQTT" "${kafka_args[@]}" --admin "127.0.0.1:$ADMIN" \
  --recent-cache-bytes "${RECENT_CACHE:-8388608}" ${FERRY_ARGS:-} \
  --log-level warn >"$work/ferry.log" 2>&1 &
fpid=$!; pids+=("$fpid")
for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz" && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz" || { echo "soak: FAIL Ferry did not become ready"; tail "$work/ferry.log"; exit 1; }
rc=0
"$work/ferry-chaos" soak --target "127.0.0.1:$MQTT" --admin "127.0.0.1:$ADMIN" --ferry-pid "$fpid" \
  --duration "$DURATION" --every "$EVERY" --samples "$work/samples.txt" --run "s$RANDOM" \
  --rate "${RATE:-450}" --warmup "${WARMUP:-0.2}" --rss-abs "${RSS_ABS:-8388608}" \
  >"$work/soak.out" 2>"$work/soak.err" || rc=$?
line=$(grep '^soak:' "$work/soak.out" | sed 's/^soak: //' || true)
if [[ $MODE == embedded ]]; then
  m=$(curl -sf "http://127.0.0.1:$ADMIN/metrics" | grep -E '^ferry_embedded_kafka_(disk_bytes|index_entries|index_memory_bytes|clean_passes_total|records_deleted_total)' | tr '\n' ' ' || true)
  line="$line mode=embedded rate=${RATE:-450} $m"
fi
if ((rc == 0)); then
  echo "soak: PASS $line"
else
  echo "soak: FAIL $line — $(grep FAIL "$work/soak.err" | tail -1)"
  echo "--- last lines of ferry.log"; tail -15 "$work/ferry.log"
  KEEP=1
fi
exit $rc
