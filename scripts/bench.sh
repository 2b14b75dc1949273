#!/usr/bin/env bash
# bench.sh — the standard Ferry comparison, side by side on this machine:
#   ferry             bin/ferry with its embedded Kafka
#   ferry-kafka       bin/ferry with --kafka-brokers on a separate Kafka process (perf/peers/kfake; transactions
#                     on, as with any cluster): the stand-in for a Kafka cluster
#   mosquitto         Mosquitto 2.x from Debian (installed if missing)
#   mochi             Mochi MQTT v2 with defaults (perf/peers/mochi)
#   mosquitto+bridge  Mosquitto + perf/peers/bridge (paho → franz-go, acks=all,
#                     5 ms linger) into perf/peers/kfake (the Kafka Ferry embeds)
#   echo-sink         ferry-bench's trivial in-harness target: the generator's own ceiling
#   floor             perf/peers/floor: the fan-out floor (gnet, Ferry's loops, no Kafka, no sessions; fanout
#                     only): what an event-loop broker's fan-out latency cannot go below on this machine
# Every target is started fresh for every run, every figure is the median of
# RUNS runs with the spread, and ratios are Ferry ÷ peer. Results (JSON, PNG,
# summary) go to $OUT; the tables replace the results section of BENCHMARKS.md.
#
# Environment (defaults in brackets):
#   QUICK=1            few-minute version: 3 s windows, 3,000 idle conns, 200 fan-out subs
#   RUNS [3]           runs per figure          DURATION [10s]   measurement window
#   IDLE_CONNS [15000] IDLE_SUBS [10]           IDLE_HOLD [10s]  IDLE_RATE [5000] conn/s
#   IDLE_SETTLE [2s]   idle scenarios: wait after the last CONNACK (and SUBACK) before reading server memory;
#                      10s shows where an idle server settles after the connect storm
#   TLS_CONNS [8000]   TLS_RATE [1000] conn/s   (idle-tls*: TLS 1.3, one ECDSA P-256 certificate made here
#                      and served by every target; each target on its defaults)
#                      idle-tls, idle-tls-resume: Go's TLS client, whose ClientHello carries a post-quantum
#                      X25519MLKEM768 key share (Ferry chooses it, Mosquitto's OpenSSL 3.0 X25519);
#                      TLS_GROUPS sets the groups it offers instead (ferry-bench --tls-groups)
#                      idle-tls-device, idle-tls-resume-device: clients offering TLS_DEVICE_GROUPS
#                      [X25519,CurveP256], as OpenSSL 3.0 or mbedTLS devices: both servers do the same
#                      key exchange (X25519)
#   FANIN_PUBS [100]   FANOUT_SUBS [1000]       FIXED_RATE [20000] msg/s
#   SCENARIOS          subset of: idle idle-tls idle-tls-resume idle-tls-device idle-tls-resume-device fanin-qos0 fanin-qos1 fanin-qos1-fixed fanout kafka-ingest kafka-ingest-fixed echo
#                      latency-1k latency-20k
#   TARGETS            subset of: ferry ferry-kafka mosquitto mochi bridge floor
#   SET=latency        the latency set: SCENARIOS="latency-1k latency-20k fanout fanin-qos0 fanin-qos1",
#                      TARGETS="ferry ferry-kafka mosquitto" (unless given); PUBACK and delivery p50/p99 of
#                      10 publishers at 1,000 msg/s, 100 → 1 at 20,000 msg/s, fan-out 1 → 1,000 at 100 msg/s and
#                      saturated fan-in, Ferry (embedded and separate Kafka) against Mosquitto
#   OUT [perf/results/<time>]   WRITE_BENCHMARKS [1]   PLOTS [1]
#   PORT_BASE [random in 20000–29999]   first port tried for the targets' listeners
#   FERRY_BIN [bin/ferry, built here]   another Ferry binary to measure (e.g. a base build for an A/B)
#   FERRY_ARGS                          extra flags for both Ferry targets (e.g. "--kafka-linger 1ms")
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [[ "${QUICK:-0}" == 1 ]]; then
  : "${DURATION:=3s}" "${IDLE_CONNS:=3000}" "${IDLE_HOLD:=2s}" "${FANOUT_SUBS:=200}"
fi
if [[ "${SET:-}" == latency ]]; then
  : "${SCENARIOS:=latency-1k latency-20k fanout fanin-qos0 fanin-qos1}" "${TARGETS:=ferry ferry-kafka mosquitto}"
fi
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
IDLE_CONNS=${IDLE_CONNS:-15000}
IDLE_SUBS=${IDLE_SUBS:-10}
IDLE_HOLD=${IDLE_HOLD:-10s}
IDLE_RATE=${IDLE_RATE:-5000}
IDLE_SETTLE=${IDLE_SETTLE:-2s}
TLS_CONNS=${TLS_CONNS:-8000}
TLS_RATE=${TLS_RATE:-1000}
TLS_DEVICE_GROUPS=${TLS_DEVICE_GROUPS:-X25519,CurveP256}
FANIN_PUBS=${FANIN_PUBS:-100}
FANOUT_SUBS=${FANOUT_SUBS:-1000}
FIXED_RATE=${FIXED_RATE:-20000}
SCENARIOS=${SCENARIOS:-"idle idle-tls idle-tls-resume idle-tls-device idle-tls-resume-device fanin-qos0 fanin-qos1 fanin-qos1-fixed fanout kafka-ingest kafka-ingest-fixed echo"}
TARGETS=${TARGETS:-"ferry mosquitto mochi bridge"}
OUT=${OUT:-perf/results/$(date -u +%Y%m%dT%H%M%SZ)}
WRITE_BENCHMARKS=${WRITE_BENCHMARKS:-1}
PLOTS=${PLOTS:-1}
FERRY_BIN=${FERRY_BIN:-}
read -r -a FERRY_EXTRA <<<"${FERRY_ARGS:-}"
TMP=$(mktemp -d /tmp/ferry-bench.XXXXXX)
mkdir -p "$OUT" bin

log() { printf '\n== %s\n' "$*" >&2; }

# ---- build ------------------------------------------------------------------
log "building the harness and the peers"
go -C perf build -o "$ROOT/bin/ferry-bench" ./cmd/ferry-bench # perf/ is its own module
(cd perf/peers/mochi && go build -o "$ROOT/bin/mochi" .)
(cd perf/peers/bridge && go build -o "$ROOT/bin/bridge" .)
(cd perf/peers/kfake && go build -o "$ROOT/bin/kfake" .)
(cd perf/peers/floor && go build -o "$ROOT/bin/floor" .)

FERRY_OK=0
FERRY_WHY=""
if [[ " $TARGETS " == *" ferry "* || " $TARGETS " == *" ferry-kafka "* ]]; then
  if [[ -n $FERRY_BIN ]]; then
    [[ -x $FERRY_BIN ]] && FERRY_OK=1 || FERRY_WHY="FERRY_BIN=$FERRY_BIN is not an executable"
  else
    log "building Ferry"
    FERRY_BIN=bin/ferry
    if go build -o bin/ferry ./cmd/ferry 2>"$TMP/ferry-build.log"; then
      FERRY_OK=1
    else
      FERRY_WHY="go build ./cmd/ferry failed: $(head -c 400 "$TMP/ferry-build.log" | tr '\n' ' ')"
    fi
  fi
  if [[ $FERRY_OK != 1 ]]; then
    echo "FERRY IS NOT BUILDABLE YET — measuring the peers only. $FERRY_WHY" >&2
  fi
fi

if [[ " $TARGETS " == *" mosquitto "* || " $TARGETS " == *" bridge "* ]] && ! command -v mosquitto >/dev/null; then
  log "installing mosquitto from Debian"
  apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null
fi
MOSQ_VERSION=$(mosquitto -h 2>/dev/null | head -1 || true)

# ---- ports and processes ----------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Below the kernel's ephemeral range (32768–60999), so the harness's own thousands of client sockets cannot
# take a port between the check and the bind.
NEXT_PORT=${PORT_BASE:-$(( 20000 + RANDOM % 10000 ))}
PORT=0
alloc_port() { # sets PORT (no subshell, so NEXT_PORT advances)
  while ! port_free "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
  PORT=$NEXT_PORT; NEXT_PORT=$((NEXT_PORT + 1))
}
wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    if ! port_free "$1"; then return 0; fi
    sleep 0.1
  done
  return 1
}

# The TLS scenarios' certificate: ECDSA P-256, self-signed for 127.0.0.1; every target serves the same one
# (the harness does not verify it, as a device with a pinned key would not spend more on it).
# Mosquitto, started as root, drops to its own user: the throwaway key is readable by all.
if [[ " $SCENARIOS " == *" idle-tls"* ]]; then
  chmod 711 "$TMP"; mkdir -m 755 "$TMP/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" -keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" 2>/dev/null
  chmod 644 "$TMP/tls/key.pem" "$TMP/tls/cert.pem"
fi

STARTED=()   # pids this script started; only these are ever killed
TARGET="" PIDS="" KAFKA="" METRICS=""
USE_TLS=0    # set by run_scenario: the target serves MQTT over TLS only
LISTEN=()
set_listen() { # port → TARGET and Ferry's listener flags
  if [[ $USE_TLS == 1 ]]; then
    TARGET=tls://127.0.0.1:$1
    LISTEN=(--mqtt "tls://127.0.0.1:$1" --tls-cert "$TMP/tls/cert.pem" --tls-key "$TMP/tls/key.pem")
  else
    TARGET=127.0.0.1:$1
    LISTEN=(--mqtt "tcp://127.0.0.1:$1")
  fi
}
start_target() { # name → sets TARGET PIDS KAFKA; returns 1 if it cannot start
  local name=$1 p kp ap
  alloc_port; p=$PORT
  PIDS="" KAFKA="" METRICS=""
  set_listen "$p"
  case $name in
    ferry)
      local try
      for try in 1 2 3; do # a port picked as free can be taken before Ferry binds it: pick again
        alloc_port; kp=$PORT
        alloc_port; ap=$PORT
        rm -rf "$TMP/ferry-data"
        (ulimit -n 20000; exec "$FERRY_BIN" "${LISTEN[@]}" "${FERRY_EXTRA[@]}" --data-dir "$TMP/ferry-data" \
          --embedded-kafka-addr "127.0.0.1:$kp" --admin "127.0.0.1:$ap") >"$TMP/ferry.log" 2>&1 &
        METRICS=http://127.0.0.1:$ap/metrics
        PIDS=$!; STARTED+=("$!"); KAFKA=127.0.0.1:$kp
        # Up when MQTT, Kafka and admin all listen and the process is still there a moment later.
        if wait_port "$p" 30 && wait_port "$kp" 10 && wait_port "$ap" 10 && sleep 0.3 && kill -0 "$PIDS" 2>/dev/null; then
          break
        fi
        if try_left=$((3 - try)) && ((try_left > 0)) && grep -q "address already in use" "$TMP/ferry.log"; then
          stop_target; alloc_port; p=$PORT; set_listen "$p"
          continue
        fi
        FERRY_WHY="bin/ferry did not listen on MQTT $p / Kafka $kp / admin $ap within 30 s: $(tail -c 400 "$TMP/ferry.log" | tr '\n' ' ')"
        echo "FERRY DOES NOT RUN — $FERRY_WHY" >&2
        stop_target; return 1
      done ;;
    ferry-kafka)
      alloc_port; kp=$PORT
      bin/kfake --addr "127.0.0.1:$kp" --topic bench-seed >"$TMP/kfake.log" 2>&1 &
      local kpid=$!; STARTED+=("$kpid")
      wait_port "$kp" 10 || { echo "kfake did not start" >&2; return 1; }
      alloc_port; ap=$PORT
      (ulimit -n 20000; exec "$FERRY_BIN" "${LISTEN[@]}" "${FERRY_EXTRA[@]}" --kafka-brokers "127.0.0.1:$kp" \
        --admin "127.0.0.1:$ap") >"$TMP/ferry.log" 2>&1 &
      METRICS=http://127.0.0.1:$ap/metrics
      PIDS=$!; STARTED+=("$!"); KAFKA=127.0.0.1:$kp
      if ! wait_port "$p" 30 || ! wait_port "$ap" 10; then
        echo "bin/ferry with --kafka-brokers did not listen on $p / admin $ap: $(tail -c 400 "$TMP/ferry.log" | tr '\n' ' ')" >&2
        kill "$kpid" 2>/dev/null; return 1
      fi
      PIDS="$PIDS,$kpid" ;;
    mosquitto|bridge)
      write_mosquitto_conf "$p" >"$TMP/mosquitto.conf"
      (ulimit -n 20000; exec mosquitto -c "$TMP/mosquitto.conf") >"$TMP/mosquitto.log" 2>&1 &
      PIDS=$!; STARTED+=("$!")
      wait_port "$p" 10 || { echo "mosquitto did not start: $(cat "$TMP/mosquitto.log")" >&2; return 1; }
      if [[ $name == bridge ]]; then
        alloc_port; kp=$PORT
        bin/kfake --addr "127.0.0.1:$kp" >"$TMP/kfake.log" 2>&1 &
        local kpid=$!; STARTED+=("$kpid")
        wait_port "$kp" 10 || { echo "kfake did not start" >&2; return 1; }
        bin/bridge --mqtt "tcp://127.0.0.1:$p" --kafka "127.0.0.1:$kp" >"$TMP/bridge.log" 2>&1 &
        local bpid=$!; STARTED+=("$bpid")
        sleep 1
        PIDS="$PIDS,$bpid,$kpid"; KAFKA=127.0.0.1:$kp
      fi ;;
    mochi)
      (ulimit -n 20000; exec bin/mochi --addr "127.0.0.1:$p") >"$TMP/mochi.log" 2>&1 &
      PIDS=$!; STARTED+=("$!")
      wait_port "$p" 10 || { echo "mochi did not start" >&2; return 1; } ;;
    floor)
      (ulimit -n 20000; exec bin/floor --addr "127.0.0.1:$p") >"$TMP/floor.log" 2>&1 &
      PIDS=$!; STARTED+=("$!")
      wait_port "$p" 10 || { echo "floor did not start: $(cat "$TMP/floor.log")" >&2; return 1; } ;;
  esac
}
stop_target() {
  local pid
  for pid in ${PIDS//,/ }; do kill "$pid" 2>/dev/null || true; done
  for pid in ${PIDS//,/ }; do wait "$pid" 2>/dev/null || true; done
  PIDS=""
}
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# Mosquitto's settings; each one is documented in BENCHMARKS.md.
write_mosquitto_conf() {
  cat <<EOF
listener $1 127.0.0.1
EOF
  if [[ $USE_TLS == 1 ]]; then
    printf 'certfile %s\nkeyfile %s\n' "$TMP/tls/cert.pem" "$TMP/tls/key.pem"
  fi
  cat <<EOF
allow_anonymous true
max_inflight_messages 1000
max_queued_messages 0
persistence false
log_dest stderr
log_type error
EOF
}

# ---- scenarios --------------------------------------------------------------
COLUMN() { case $1 in bridge) echo "mosquitto+bridge" ;; *) echo "$1" ;; esac; }

# run_scenario label "targets" ferry-bench args… (--target/--server-pid/--kafka added per target)
run_scenario() {
  local label=$1 targets=$2; shift 2
  [[ " $SCENARIOS " == *" $label "* ]] || return 0
  local t i extra
  USE_TLS=0
  [[ $label == idle-tls* ]] && USE_TLS=1
  for t in $targets; do
    [[ " $TARGETS " == *" $t "* ]] || continue
    [[ ( $t == ferry || $t == ferry-kafka ) && $FERRY_OK != 1 ]] && continue
    for ((i = 1; i <= RUNS; i++)); do
      log "$label on $(COLUMN "$t"), run $i/$RUNS"
      start_target "$t" || continue
      extra=()
      [[ -n $KAFKA && ( $1 == kafka-ingest || $1 == idle ) ]] && extra+=(--kafka "$KAFKA")
      [[ $label == idle-tls-resume* ]] && extra+=(--tls-resume)
      if [[ $label == idle-tls*-device ]]; then
        extra+=(--tls-groups "$TLS_DEVICE_GROUPS")
      elif [[ $label == idle-tls* && -n ${TLS_GROUPS:-} ]]; then
        extra+=(--tls-groups "$TLS_GROUPS")
      fi
      [[ $PLOTS == 1 && $i == 1 ]] && extra+=(--plot "$OUT/plots")
      [[ -n $METRICS && $1 != idle ]] && extra+=(--metrics "$METRICS")
      bin/ferry-bench "$@" --target "$TARGET" --server-pid "$PIDS" "${extra[@]}" \
        --label "$label" --target-name "$(COLUMN "$t")" --json "$OUT/$label-$t-$i.json" \
        || echo "run failed: $label $t $i" >&2
      stop_target
      # The floor prints its own view on exit (stamp → read, each loop's writes, subscribers per loop).
      if [[ $t == floor ]]; then cp "$TMP/floor.log" "$OUT/$label-floor-$i.log"; fi
    done
  done
}

run_scenario idle "ferry mosquitto mochi" idle --conns "$IDLE_CONNS" --subs-per-conn "$IDLE_SUBS" \
  --hold "$IDLE_HOLD" --conn-rate "$IDLE_RATE" --settle "$IDLE_SETTLE"
run_scenario idle-tls "ferry mosquitto" idle --conns "$TLS_CONNS" --hold "$IDLE_HOLD" --conn-rate "$TLS_RATE" --settle "$IDLE_SETTLE"
run_scenario idle-tls-resume "ferry mosquitto" idle --conns "$TLS_CONNS" --hold "$IDLE_HOLD" --conn-rate "$TLS_RATE" --settle "$IDLE_SETTLE"
run_scenario idle-tls-device "ferry mosquitto" idle --conns "$TLS_CONNS" --hold "$IDLE_HOLD" --conn-rate "$TLS_RATE" --settle "$IDLE_SETTLE"
run_scenario idle-tls-resume-device "ferry mosquitto" idle --conns "$TLS_CONNS" --hold "$IDLE_HOLD" --conn-rate "$TLS_RATE" --settle "$IDLE_SETTLE"
run_scenario latency-1k "ferry ferry-kafka mosquitto" fanin --qos 1 --window 16 --pubs 10 --subs 1 --payload 64 \
  --rate 1000 --duration "$DURATION"
run_scenario latency-20k "ferry ferry-kafka mosquitto" fanin --qos 1 --window 16 --pubs 100 --subs 1 --payload 64 \
  --rate 20000 --duration "$DURATION"
run_scenario fanin-qos0 "ferry mosquitto mochi" fanin --qos 0 --pubs "$FANIN_PUBS" --subs 1 --payload 64 --duration "$DURATION"
run_scenario fanin-qos1 "ferry mosquitto mochi" fanin --qos 1 --window 16 --pubs "$FANIN_PUBS" --subs 1 --payload 64 --duration "$DURATION"
run_scenario fanin-qos1-fixed "ferry mosquitto mochi" fanin --qos 1 --window 16 --pubs "$FANIN_PUBS" --subs 1 --payload 64 \
  --rate "$FIXED_RATE" --duration "$DURATION"
run_scenario fanout "floor ferry mosquitto mochi" fanout --qos 1 --subs "$FANOUT_SUBS" --rate 100 --payload 64 --duration "$DURATION"
run_scenario kafka-ingest "ferry bridge" kafka-ingest --qos 1 --window 16 --pubs "$FANIN_PUBS" --payload 64 --duration "$DURATION" --drain 5s
run_scenario kafka-ingest-fixed "ferry bridge" kafka-ingest --qos 1 --window 16 --pubs "$FANIN_PUBS" --payload 64 \
  --rate "$FIXED_RATE" --duration "$DURATION" --drain 5s

# The generator's own ceiling: the same fan-in against the in-harness sink.
if [[ " $SCENARIOS " == *" echo "* ]]; then
  for q in 0 1; do
    for ((i = 1; i <= RUNS; i++)); do
      log "echo check fanin-qos$q, run $i/$RUNS"
      bin/ferry-bench fanin --echo --qos "$q" --window 16 --pubs "$FANIN_PUBS" --subs 1 --payload 64 \
        --duration "$DURATION" --label "fanin-qos$q" --target-name echo-sink --json "$OUT/fanin-qos$q-echo-$i.json" \
        || echo "echo run failed" >&2
    done
  done
fi

# ---- report -----------------------------------------------------------------
SUMMARY="$OUT/summary.md"
{
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB, Linux $(uname -r); ${MOSQ_VERSION}; Mochi $(cd perf/peers/mochi && go list -m -f '{{.Version}}' github.com/mochi-mqtt/server/v2)."
  echo
  echo "Command: \`${SET:+SET=$SET }${FERRY_ARGS:+FERRY_ARGS=\"$FERRY_ARGS\" }TARGETS=\"$TARGETS\" SCENARIOS=\"$SCENARIOS\" QUICK=${QUICK:-0} RUNS=$RUNS DURATION=$DURATION IDLE_CONNS=$IDLE_CONNS IDLE_SETTLE=$IDLE_SETTLE TLS_CONNS=$TLS_CONNS FANOUT_SUBS=$FANOUT_SUBS scripts/bench.sh\`; raw results in \`$OUT\`."
  if [[ $FERRY_OK != 1 && " $TARGETS " == *" ferry "* ]]; then
    echo
    echo "**Ferry was not measured:** ${FERRY_WHY:-it did not build or run}"
  fi
  bin/ferry-bench summarize "$OUT"/*.json
} >"$SUMMARY"
cat "$SUMMARY"

if [[ $WRITE_BENCHMARKS == 1 && -f BENCHMARKS.md ]] && grep -q '<!-- results:begin -->' BENCHMARKS.md; then
  awk -v f="$SUMMARY" '
    /<!-- results:begin -->/ { print; while ((getline l < f) > 0) print l; skip = 1; next }
    /<!-- results:end -->/   { skip = 0 }
    !skip' BENCHMARKS.md >"$TMP/B.md" && cp "$TMP/B.md" BENCHMARKS.md
  log "BENCHMARKS.md updated from $SUMMARY"
fi
