#!/usr/bin/env bash
# restart.sh — what a restart of Ferry in standalone mode costs on a big data dir: time to /readyz and memory.
#
# Ferry starts with its embedded Kafka on DATA (created if missing) with no retention bound (so nothing is
# deleted while it fills), `ferry-chaos fill` writes BYTES of 64-byte payloads into the messages topic in
# record batches of PER_BATCH records per partition (Ferry under a steady MQTT load writes 1–3 per batch; the
# embedded Kafka keeps an in-memory index entry per batch), and Ferry's RSS is read ("warm"). Then Ferry is
# stopped — gracefully (SIGTERM), or with SIGKILL when KILL=1, as in a crash or power cut — and started again on
# the same data dir, RESTARTS times: each restart prints the seconds to a 200 from /readyz, RSS at ready, peak
# RSS (VmHWM) and RSS 10 s later. With DATA set to an existing filled dir and FILL=0, only the restarts run.
#
# Environment: DATA [work dir/data]  BYTES [1073741824]  PER_BATCH [2]  FILL [1]  KILL [0]  RESTARTS [3]
#              FERRY_BIN (a prebuilt ferry)  FERRY_ARGS (flags added to Ferry's)  KEEP [0]
# Output: one "restart: …" line per restart, and "restart: fill …" with the data dir's size and batch count.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/fault.sh
fault_init restart
DATA=${DATA:-$work/data}
MQTT=$(free_port); KAFKA=$(free_port); ADMIN=$(free_port)

rss() { awk '/^Rss:/ {print int($2/1024)}' "/proc/$1/smaps_rollup"; }
hwm() { awk '/^VmHWM:/ {print int($2/1024)}' "/proc/$1/status"; }
start_ferry() {
  # shellcheck disable=SC2086 # FERRY_ARGS is a list of flags
  "$work/ferry" --mqtt "tcp://127.0.0.1:$MQTT" --embedded-kafka-addr "127.0.0.1:$KAFKA" --data-dir "$DATA" \
    --admin "127.0.0.1:$ADMIN" --embedded-retention 0 --embedded-retention-bytes 0 ${FERRY_ARGS:-} \
    --log-level warn >>"$work/ferry.log" 2>&1 &
  fpid=$!; pids+=("$fpid")
}
wait_ready() { # → seconds to ready, or "never" after 300 s
  local t0 t1
  t0=$(date +%s.%N)
  for _ in $(seq 3000); do
    if curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz"; then
      t1=$(date +%s.%N); echo "$t1 - $t0" | bc; return 0
    fi
    kill -0 "$fpid" 2>/dev/null || { echo "exited"; return 1; }
    sleep 0.05
  done
  echo never; return 1
}
stop_ferry() {
  if [[ ${KILL:-0} == 1 ]]; then kill -9 "$fpid"; else kill -TERM "$fpid"; fi
  wait "$fpid" 2>/dev/null || true
}

start_ferry
wait_ready >/dev/null || { echo "restart: FAIL Ferry did not become ready"; tail -5 "$work/ferry.log"; exit 1; }
if [[ ${FILL:-1} == 1 ]]; then
  "$work/ferry-chaos" fill --kafka "127.0.0.1:$KAFKA" --bytes "${BYTES:-1073741824}" --per-batch "${PER_BATCH:-2}" \
    >"$work/fill.out"
  sleep 2
fi
warm=$(rss "$fpid")
size=$(du -sb "$DATA/partitions" | cut -f1)
batches=$(find "$DATA/partitions" -name '*.idx' -printf '%s\n' | awk '{s += $1} END {printf "%d", s / 15}')
echo "restart: fill $(cat "$work/fill.out" 2>/dev/null || true) data_dir_bytes=$size batches=$batches warm_rss_mib=$warm"
for i in $(seq "${RESTARTS:-3}"); do
  stop_ferry
  start_ferry
  t=$(wait_ready) || { echo "restart: FAIL run $i: Ferry did not become ready ($t)"; tail -5 "$work/ferry.log"; exit 1; }
  r=$(rss "$fpid"); h=$(hwm "$fpid")
  sleep 10
  echo "restart: run=$i kill=${KILL:-0} ready_s=$t rss_ready_mib=$r peak_rss_mib=$h rss_10s_mib=$(rss "$fpid") warm_rss_mib=$warm data_dir_bytes=$size batches=$batches"
done
