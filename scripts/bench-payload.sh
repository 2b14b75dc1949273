#!/usr/bin/env bash
# bench-payload.sh — the cost of payload contracts (issue 20): MQTT→Kafka QoS 1 PUBLISH→PUBACK throughput of
# bin/ferry (embedded Kafka) without a --payload rule, with JSON Schema validation and with JSON→Avro
# conversion (Confluent wire format, file schema with id=1: the same work as a registry schema, no registry
# process), the three interleaved in each run, fresh Ferry and data dir each time. Publishers send the JSON
# document of ferry-bench --json-payload (96 bytes); no subscribers, so only acknowledgements are measured.
# Prints the median of RUNS runs per mode and its ratio to "none".
#
# Environment: RUNS [3]  DURATION [10s]  PUBS [100]  WINDOW [16]  OUT [perf/results/payload-<time>]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-3} DURATION=${DURATION:-10s} PUBS=${PUBS:-100} WINDOW=${WINDOW:-16}
OUT=${OUT:-perf/results/payload-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT" bin
go build -o bin/ferry ./cmd/ferry
go -C perf build -o ../bin/ferry-bench ./cmd/ferry-bench
TMP=$(mktemp -d /tmp/ferry-payload.XXXXXX)
PID=""
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A RULE=(
  [none]=""
  [jsonschema]="bench/#=jsonschema:file:perf/payload/telemetry.schema.json"
  [avro]="bench/#=avro:file:perf/payload/telemetry.avsc;id=1"
)
MODES="none jsonschema avro"
for ((i = 1; i <= RUNS; i++)); do
  for m in $MODES; do
    p=$(free_port) kp=$(free_port)
    rm -rf "$TMP/data"
    args=(--mqtt "tcp://127.0.0.1:$p" --data-dir "$TMP/data" --embedded-kafka-addr "127.0.0.1:$kp")
    [[ -n ${RULE[$m]} ]] && args+=(--payload "${RULE[$m]}")
    (ulimit -n 20000; exec bin/ferry "${args[@]}") >"$TMP/ferry-$m-$i.log" 2>&1 &
    PID=$!
    for ((w = 0; w < 300; w++)); do (echo >/dev/tcp/127.0.0.1/"$p") 2>/dev/null && break; sleep 0.1; done
    echo "== $m, run $i/$RUNS" >&2
    bin/ferry-bench fanin --target "127.0.0.1:$p" --server-pid "$PID" --subs 0 --pubs "$PUBS" --qos 1 \
      --window "$WINDOW" --json-payload --payload 96 --duration "$DURATION" --label "payload-$m" \
      --target-name ferry --json "$OUT/$m-$i.json" >"$OUT/$m-$i.txt" 2>&1 || echo "run failed: $m $i" >&2
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  done
done

median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "nan"}'; }
printf '| payload rule | PUBLISH→PUBACK msg/s (median of %d) | runs | vs none |\n|---|---|---|---|\n' "$RUNS"
base=""
for m in $MODES; do
  vals=$(for f in "$OUT/$m"-*.json; do jq -r '.rates.acked' "$f"; done)
  med=$(echo "$vals" | median)
  [[ $m == none ]] && base=$med
  printf '| %s | %.0f | %s | %s |\n' "$m" "$med" "$(echo "$vals" | xargs printf '%.0f ' )" \
    "$(awk -v a="$med" -v b="$base" 'BEGIN { printf "%.0f %%", 100 * a / b }')"
done | tee "$OUT/summary.md"
