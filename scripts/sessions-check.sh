#!/usr/bin/env bash
# sessions-check.sh — the history checker: sessions stay consistent while clients hop between instances.
#
# Three Ferry instances share the standalone kfake process (perf/peers/kfake) with --kafka-brokers, so
# transactions are on, as with a cluster. CLIENTS MQTT 5 clients with persistent sessions hop between the
# instances at random, often within a millisecond of a SUBSCRIBE or UNSUBSCRIBE, now and then with Clean
# Start 1 (ferry-chaos sessions). Every CONNACK, SUBACK and UNSUBACK is recorded and each client's session —
# does it exist, which filters it holds — is checked as a register with Porcupine: Session Present must be 1
# exactly when the session exists, and no acknowledged subscription may be lost or come back after its
# UNSUBACK. Model and limits: docs/sessions.md, "History checker".
#
# Environment: DURATION [30s]  CLIENTS [40]  KEEP [0]  FERRY_BIN (a prebuilt ferry instead of ./cmd/ferry)
# Verdict: "sessions: PASS|FAIL …"; exit 1 on a violation or when an instance does not start.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-30s}
CLIENTS=${CLIENTS:-40}
source scripts/lib/fault.sh
fault_init sessions kfake

KAFKA=$(free_port)
"$work/kfake" --addr "127.0.0.1:$KAFKA" --partitions 6 >"$work/kfake.log" 2>&1 &
pids+=("$!")
wait_port "$KAFKA" || { echo "sessions: FAIL kfake did not listen"; exit 1; }
targets=()
for i in 1 2 3; do
  mqtt=$(free_port); admin=$(free_port)
  "$work/ferry" --mqtt "tcp://127.0.0.1:$mqtt" --kafka-brokers "127.0.0.1:$KAFKA" --admin "127.0.0.1:$admin" \
    --instance-id "check-$i" --kafka-transactional-id "check-$i-$RANDOM" --log-level warn >"$work/ferry-$i.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz" && break; sleep 0.1; done
  curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz" || { echo "sessions: FAIL instance $i did not become ready"; tail "$work/ferry-$i.log"; exit 1; }
  targets+=("127.0.0.1:$mqtt")
done

rc=0
(IFS=,; "$work/ferry-chaos" sessions --targets "${targets[*]}" --clients "$CLIENTS" --duration "$DURATION" \
  --viz "$work/sessions-violation.html") >"$work/sessions.out" 2>"$work/sessions.err" || rc=$?
summary=$(grep '^sessions: [0-9]* operations' "$work/sessions.out" | sed 's/^sessions: //' || true)
if ((rc == 0)); then
  echo "sessions: PASS duration=$DURATION clients=$CLIENTS $summary"
else
  echo "sessions: FAIL duration=$DURATION clients=$CLIENTS $summary"
  head -40 "$work/sessions.out"; tail -5 "$work/sessions.err"
  KEEP=1
  exit 1
fi
