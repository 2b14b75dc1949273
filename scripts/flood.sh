#!/usr/bin/env bash
# flood.sh — floods do not stall the others.
#
# A probe client does QoS 1 publish → receive round trips (through Kafka) every 10 ms the whole time; its
# p50/p99 are reported per phase against a quiet baseline:
#   baseline        the probe alone (BASE)
#   connect-flood   CONNS connections opened as fast as possible, spread over load processes of at most
#                   PER_PROC connections (one fd each here, one each in Ferry: this machine's hard limit is
#                   20,000 per process), each process on its own 127.0.x.y source addresses; then held HOLD
#   storm           Ferry is killed (SIGKILL) and restarted: every connection reconnects at once; then held HOLD
#   publish-flood   one client publishes QoS 0 as fast as it can for FLOOD (MQTT 5). If `ferry --help` lists
#                   --max-publish-rate, Ferry runs with --max-publish-rate PUB_RATE and the flooder must be
#                   disconnected with 0x96 Message Rate Too High; otherwise the flood is only measured.
# Fails when not every connection opens or comes back, or the probe gets no answer at all in a phase where
# Ferry is up (baseline, connect-flood, publish-flood), or the rate limit does not answer with 0x96.
#
# Environment: CONNS [18000]  PER_PROC [6000]  BASE [10s]  HOLD [5s]  FLOOD [10s]  PUB_RATE [1000]
#   FERRY_BIN (a prebuilt ferry)  KEEP [0]
# Verdict: "flood: PASS|FAIL …" with the figures; exit 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-18000}
PER_PROC=${PER_PROC:-6000}
BASE=${BASE:-10s}
HOLD=${HOLD:-5s}
FLOOD=${FLOOD:-10s}
PUB_RATE=${PUB_RATE:-1000}
source scripts/lib/fault.sh
fault_init flood

MQTT=$(free_port); KAFKA=$(free_port); ADMIN=$(free_port)
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
fargs=(--mqtt "tcp://127.0.0.1:$MQTT" --embedded-kafka-addr "127.0.0.1:$KAFKA" --data-dir "$work/data" --admin "127.0.0.1:$ADMIN" --log-level warn)
ratelimit=0
if "$work/ferry" --help 2>&1 | grep -q -- '-max-publish-rate'; then
  ratelimit=1
  fargs+=(--max-publish-rate "$PUB_RATE")
fi
start_ferry() {
  "$work/ferry" "${fargs[@]}" >>"$work/ferry.log" 2>&1 &
  echo $! >"$work/ferry.pid"
  for _ in $(seq 600); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz" && return 0; sleep 0.1; done
  echo "flood: FAIL Ferry did not become ready"; tail "$work/ferry.log"; return 1
}
start_ferry
"$work/ferry-chaos" sample --pid-file "$work/ferry.pid" --out "$work/rss.txt" --every 500ms >/dev/null 2>&1 &
pids+=($!)
"$work/ferry-chaos" probe --target "127.0.0.1:$MQTT" --out "$work/probe.txt" --max 30m >"$work/probe.out" 2>&1 &
probe=$!; pids+=("$probe")
phase() { echo "$1 $2 $(now_ms)" >>"$work/phases.txt"; }
connected_all() { # sum of the status files = CONNS
  local sum=0 f n
  for f in "$work"/status.*; do
    [[ -f $f ]] || continue
    n=$(awk '{print $2}' "$f" 2>/dev/null || echo 0)
    sum=$((sum + ${n:-0}))
  done
  echo "$sum"
  ((sum >= CONNS))
}
wait_all() { # seconds
  local i
  for ((i = 0; i < $1 * 4; i++)); do connected_all >/dev/null && return 0; sleep 0.25; done
  return 1
}
fail=()
sleep 1
t=$(now_ms); sleep "$BASE"; phase baseline "$t"

# (a) connection flood
t=$(now_ms)
nproc=$(( (CONNS + PER_PROC - 1) / PER_PROC ))
left=$CONNS
for ((k = 0; k < nproc; k++)); do
  n=$(( left < PER_PROC ? left : PER_PROC )); left=$((left - n))
  src=$(for j in 1 2 3 4 5 6 7 8; do printf '127.0.%d.%d,' $((20 + k)) "$j"; done); src=${src%,}
  "$work/ferry-chaos" flood-conns --target "127.0.0.1:$MQTT" --conns "$n" --src "$src" --id "f$k" \
    --status "$work/status.$k" --max 30m >"$work/flood.$k.out" 2>&1 &
  pids+=($!); floods+=($!)
done
if wait_all 180; then open_ms=$(( $(now_ms) - t )); else open_ms=-1; fail+=("only $(connected_all || true) of $CONNS connections opened"); fi
sleep "$HOLD"; phase connect-flood "$t"
conns_rss=$(awk '{print $2}' "$work/rss.txt" | tail -1)

# (b) reconnect storm after a restart
t=$(now_ms)
kill -9 "$(cat "$work/ferry.pid")"; wait "$(cat "$work/ferry.pid")" 2>/dev/null || true
start_ferry
if wait_all 180; then back_ms=$(( $(now_ms) - t )); else back_ms=-1; fail+=("only $(connected_all || true) of $CONNS connections came back"); fi
sleep "$HOLD"; phase storm "$t"
for p in "${floods[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${floods[@]}"; do wait "$p" 2>/dev/null || true; done

# (c) one client far above the allowed rate
t=$(now_ms)
pargs=(--target "127.0.0.1:$MQTT" --duration "$FLOOD" --max-msgs 3000000) # bounded: the embedded Kafka holds every record in memory
((ratelimit)) && pargs+=(--expect-reason 0x96)
prc=0
"$work/ferry-chaos" flood-pub "${pargs[@]}" >"$work/floodpub.out" 2>"$work/floodpub.err" || prc=$?
phase publish-flood "$t"
((prc == 0)) || fail+=("publish flood: $(grep FAIL "$work/floodpub.err" | tail -1)")
t=$(now_ms); sleep 3; phase after "$t"
kill -TERM "$probe"; wait "$probe" || true

report=$("$work/ferry-chaos" probe-report --samples "$work/probe.txt" --phases "$work/phases.txt" | sed 's/^probe: //')
for ph in baseline connect-flood publish-flood; do
  grep -q "$ph: p50=n/a" <<<"$report" && fail+=("the probe got no answer during $ph")
done
peak=$(awk '$2>m{m=$2} END{printf "%.1fMiB", m/1048576}' "$work/rss.txt")
conns_line=$(cat "$work"/flood.*.out | grep '^flood-conns:' | sed 's/^flood-conns: //' | tr '\n' ';' | sed 's/;$//')
pub_line=$(grep '^flood-pub:' "$work/floodpub.out" | sed 's/^flood-pub: //' || true)
rl="publish_rate_limit=none"
((ratelimit)) && rl="publish_rate_limit=${PUB_RATE}/s"
verdict=PASS; ((${#fail[@]} == 0)) || verdict=FAIL
echo "flood: $verdict conns=$CONNS procs=$nproc all_open_ms=$open_ms all_back_after_restart_ms=$back_ms peak_rss=$peak $rl probe [$report] publish_flood [$pub_line] per_proc [$conns_line]${fail:+ — ${fail[*]}}"
if [[ $verdict != PASS ]]; then tail -15 "$work/ferry.log"; KEEP=1; exit 1; fi
