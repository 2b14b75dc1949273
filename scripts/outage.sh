#!/usr/bin/env bash
# outage.sh — a Kafka outage under QoS 1 load loses nothing and stays within budget.
#
# Ferry runs with --kafka-brokers against the standalone kfake process (perf/peers/kfake), which is stopped
# with SIGSTOP for OUTAGE (its sockets stay open but nothing answers: unreachable, nothing lost) and then
# continued. Meanwhile PUBS QoS 1 publishers (keep-alive 5 s), one QoS 0 publisher and one subscriber run
# (ferry-chaos outage). Checked: no connection drops and every PINGREQ is answered within the keep-alive;
# no PUBACK while Kafka is stopped; /readyz not-ready during the outage and ready after; Ferry's RSS (VmRSS,
# sampled every 200 ms) stays under baseline + the bound derived from the configured budgets; afterwards
# every acknowledged message is in Kafka (read_committed) and at the subscriber, in order per topic.
# QoS 0 publishes dropped during the outage are counted from /metrics (ferry_dropped_total) and printed.
#
# Environment: OUTAGE [30s]  PUBS [50]  WINDOW [64]  RATE [100] msg/s per publisher  QOS0_RATE [2000]
#   INFLIGHT_RECORDS [1000]  INFLIGHT_BYTES [1048576]  OUTBOUND_BUDGET [1048576]  LOOPS [2]  KEEP [0]
#   FERRY_BIN (a prebuilt ferry instead of building ./cmd/ferry)
# Verdict: "outage: PASS|FAIL …" with the figures; exit 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
OUTAGE=${OUTAGE:-30s}
PUBS=${PUBS:-50}
WINDOW=${WINDOW:-64}
RATE=${RATE:-100}
QOS0_RATE=${QOS0_RATE:-2000}
INFLIGHT_RECORDS=${INFLIGHT_RECORDS:-1000}
INFLIGHT_BYTES=${INFLIGHT_BYTES:-1048576}
OUTBOUND_BUDGET=${OUTBOUND_BUDGET:-1048576}
LOOPS=${LOOPS:-2}
source scripts/lib/fault.sh
fault_init outage kfake

MQTT=$(free_port); KAFKA=$(free_port); ADMIN=$(free_port)

"$work/kfake" --addr "127.0.0.1:$KAFKA" --partitions 6 >"$work/kfake.log" 2>&1 &
kpid=$!; pids+=("$kpid")
wait_port "$KAFKA" || { echo "outage: FAIL kfake did not listen"; exit 1; }
"$work/ferry" --mqtt "tcp://127.0.0.1:$MQTT" --kafka-brokers "127.0.0.1:$KAFKA" --admin "127.0.0.1:$ADMIN" \
  --event-loops "$LOOPS" --inflight-records "$INFLIGHT_RECORDS" --inflight-bytes "$INFLIGHT_BYTES" \
  --outbound-budget "$OUTBOUND_BUDGET" --kafka-ready-timeout 2s --log-level warn >"$work/ferry.log" 2>&1 &
fpid=$!; pids+=("$fpid")
for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz" && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz" || { echo "outage: FAIL Ferry did not become ready"; tail "$work/ferry.log"; exit 1; }

# What Ferry may hold beyond its baseline while Kafka is away: each event loop's in-flight bytes, counted twice
# (the lane's records and the producer's encoded batches); the subscriber's outbound budget; a read buffer of
# up to 64 KiB per connection; and 32 MiB for the garbage collector's headroom.
conns=$((PUBS + 2))
budget=$(( 2 * LOOPS * INFLIGHT_BYTES + OUTBOUND_BUDGET + conns * 65536 + 32 * 1048576 ))
desc="2x${LOOPS}loopsx${INFLIGHT_BYTES}B_inflight+1x${OUTBOUND_BUDGET}B_outbound+${conns}connsx64KiB+32MiB_gc"
rc=0
"$work/ferry-chaos" outage --target "127.0.0.1:$MQTT" --admin "127.0.0.1:$ADMIN" --kafka "127.0.0.1:$KAFKA" \
  --kafka-pid "$kpid" --ferry-pid "$fpid" --outage "$OUTAGE" --pubs "$PUBS" --window "$WINDOW" --rate "$RATE" \
  --qos0-rate "$QOS0_RATE" --keepalive 5 --budget-bytes "$budget" --budget-desc "$desc" --run "o$RANDOM" \
  >"$work/outage.out" 2>"$work/outage.err" || rc=$?
line=$(grep '^outage:' "$work/outage.out" | sed 's/^outage: //' || true)
if ((rc == 0)); then
  echo "outage: PASS $line"
else
  echo "outage: FAIL $line — $(grep FAIL "$work/outage.err" | tail -1)"
  echo "--- last lines of ferry.log"; tail -15 "$work/ferry.log"
  KEEP=1
fi
exit $rc
