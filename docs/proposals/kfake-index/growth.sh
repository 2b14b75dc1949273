#!/usr/bin/env bash
# growth.sh — issue 14's row "RSS growth per million stored messages before retention": Ferry in standalone
# mode with its default flags (a fresh --data-dir) takes RATE msg/s of QoS 1, 64-byte payloads from PUBS
# publishers with one subscriber (`ferry-bench fanin`); when the messages it has taken (ferry_messages_in_total)
# pass each of AT, its RSS (/proc/PID/smaps_rollup), live heap (go_heap_live_bytes), the embedded Kafka's index
# entries and the records retention deleted are printed. The growth per million is given two ways between the
# first and the last point: the difference of the two points, and the least-squares slope over a sample taken
# every half second (RSS and live heap move in steps: the collector's cycles, and the embedded Kafka's index of
# a partition's active segment, which grows until the segment is sealed).
#
# usage: FERRY_BIN=path/to/ferry docs/proposals/kfake-index/growth.sh
# Environment: FERRY_BIN (required)  RATE [5000]  PUBS [20]  AT ["1000000 2000000"]  PORTS (three ports, e.g.
#              "25001 25002 25003"; default: free ones)  FERRY_ARGS (flags added to Ferry's)  FETCH [1]  KEEP [0]
#              PROFILE (a directory: a heap profile, /debug/pprof/heap?gc=1, is saved there at each point as
#              heap-N.pb.gz; Ferry gets --pprof)  SAMPLES (a file: the half-second samples are kept there, one
#              line each: messages taken, RSS, live heap, index entries, records deleted)
# Then, with FETCH=1, the load stops and fetchlat (beside this script) reads the messages topic back through the
# embedded Kafka's address as a catching-up Kafka reader would, once from the start of every partition and
# once at 600 random offsets, and prints the fetches' latency.
# Output: "growth: at N …" per point with the rate reached so far, "growth: … MiB per million" with the rate
# between the points, and with FETCH=1 two "fetchlat: …" lines.
set -euo pipefail
cd "$(dirname "$0")/../../.."
source scripts/lib/fault.sh
[[ -n ${FERRY_BIN:-} ]] || { echo "growth: FAIL set FERRY_BIN to a built ferry"; exit 2; }
fault_init growth
go -C perf build -o "$work/ferry-bench" ./cmd/ferry-bench
go build -o "$work/fetchlat" ./docs/proposals/kfake-index/fetchlat
RATE=${RATE:-5000}
read -r -a at <<<"${AT:-1000000 2000000}"
read -r MQTT KAFKA ADMIN <<<"${PORTS:-$(free_port) $(free_port) $(free_port)}"

if [[ -n ${PROFILE:-} ]]; then mkdir -p "$PROFILE"; FERRY_ARGS="${FERRY_ARGS:-} --pprof"; fi
# shellcheck disable=SC2086 # FERRY_ARGS is a list of flags
"$work/ferry" --mqtt "tcp://127.0.0.1:$MQTT" --embedded-kafka-addr "127.0.0.1:$KAFKA" --data-dir "$work/data" \
  --admin "127.0.0.1:$ADMIN" ${FERRY_ARGS:-} --log-level warn >"$work/ferry.log" 2>&1 &
fpid=$!; pids+=("$fpid")
for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz" && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz" || { echo "growth: FAIL Ferry did not become ready"; tail "$work/ferry.log"; exit 1; }

last=${at[${#at[@]}-1]}
secs=$(( last / RATE * 13 / 10 + 30 )) # room for a rate below RATE; the run stops at the last point
"$work/ferry-bench" fanin --target "127.0.0.1:$MQTT" --qos 1 --pubs "${PUBS:-20}" --subs 1 --payload 64 \
  --rate "$RATE" --duration "${secs}s" --progress 0 >"$work/bench.txt" 2>&1 &
bpid=$!; pids+=("$bpid")

metric() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%d", s}' "$work/metrics"; }
start=$(date +%s.%N)
i=0; prev_n=0; prev_rss=0; prev_live=0; prev_t=0
: >"$work/samples"
while (( i < ${#at[@]} )); do
  kill -0 "$bpid" 2>/dev/null || { echo "growth: FAIL ferry-bench ended before ${at[i]} messages"; cat "$work/bench.txt"; exit 1; }
  curl -sf "http://127.0.0.1:$ADMIN/metrics" >"$work/metrics" || true
  n=$(metric ferry_messages_in_total)
  rss=$(awk '/^Rss:/ {print $2 * 1024}' "/proc/$fpid/smaps_rollup")
  live=$(metric go_heap_live_bytes)
  if (( i > 0 )); then echo "$n $rss $live $(metric ferry_embedded_kafka_index_entries) $(metric ferry_embedded_kafka_records_deleted_total)" >>"$work/samples"; fi
  if (( n >= at[i] )); then
    t=$(echo "$(date +%s.%N) - $start" | bc)
    if [[ -n ${PROFILE:-} ]]; then curl -sf -o "$PROFILE/heap-${at[i]}.pb.gz" "http://127.0.0.1:$ADMIN/debug/pprof/heap?gc=1" || true; fi
    printf 'growth: at %d messages (%.0f s, %.0f msg/s): RSS %.1f MiB, live heap %.1f MiB, index entries %d, records deleted %d\n' \
      "$n" "$t" "$(echo "$n / $t" | bc -l)" "$(echo "$rss / 1048576" | bc -l)" "$(echo "$live / 1048576" | bc -l)" \
      "$(metric ferry_embedded_kafka_index_entries)" "$(metric ferry_embedded_kafka_records_deleted_total)"
    if (( i > 0 )); then
      printf 'growth: RSS %+.1f MiB per million, live heap %+.1f MiB per million (%d to %d messages, %.0f msg/s)\n' \
        "$(echo "($rss - $prev_rss) / 1048576 * 1000000 / ($n - $prev_n)" | bc -l)" \
        "$(echo "($live - $prev_live) / 1048576 * 1000000 / ($n - $prev_n)" | bc -l)" "$prev_n" "$n" \
        "$(echo "($n - $prev_n) / ($t - $prev_t)" | bc -l)"
    fi
    prev_n=$n; prev_rss=$rss; prev_live=$live; prev_t=$t
    i=$((i + 1))
  fi
  sleep 0.5
done
# least squares of RSS and live heap on messages, in MiB per million
awk '{n++; x += $1; xx += $1 * $1; r += $2; xr += $1 * $2; l += $3; xl += $1 * $3}
  END {d = n * xx - x * x; printf "growth: least squares over %d samples: RSS %+.1f MiB per million, live heap %+.1f MiB per million\n",
    n, (n * xr - x * r) / d * 1e6 / 1048576, (n * xl - x * l) / d * 1e6 / 1048576}' "$work/samples"
if [[ -n ${SAMPLES:-} ]]; then cp "$work/samples" "$SAMPLES"; fi
kill "$bpid" 2>/dev/null || true
wait "$bpid" 2>/dev/null || true
if [[ ${FETCH:-1} == 1 ]]; then
  sleep 2
  "$work/fetchlat" --kafka "127.0.0.1:$KAFKA" --mode catchup
  "$work/fetchlat" --kafka "127.0.0.1:$KAFKA" --mode random --n 600
fi
