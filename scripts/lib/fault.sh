# Shared by the fault scripts (crash.sh, outage.sh, flood.sh, soak.sh); source it from the repository root.
# fault_init NAME [kfake]: a work directory /tmp/ferry-NAME.XXXXXX (removed at exit unless KEEP=1), the
# binaries built into it (FERRY_BIN: a prebuilt ferry instead of ./cmd/ferry; kfake: also the standalone Kafka
# of perf/peers/kfake), and an exit trap that stops every process listed in pids (and $work/ferry.pid).

fault_init() {
  work=$(mktemp -d "/tmp/ferry-$1.XXXXXX")
  pids=()
  trap fault_cleanup EXIT
  if [[ -n ${FERRY_BIN:-} ]]; then cp "$FERRY_BIN" "$work/ferry"; else go build -o "$work/ferry" ./cmd/ferry; fi
  go -C perf build -o "$work/ferry-chaos" ./cmd/ferry-chaos # perf/ is its own module
  if [[ ${2:-} == kfake ]]; then (cd perf/peers/kfake && go build -o "$work/kfake" .); fi
}

fault_cleanup() {
  exec 2>/dev/null # no "Killed" job notices
  local p
  for p in "${pids[@]}"; do
    kill -CONT "$p" 2>/dev/null || true # a Kafka stopped by outage.sh
    kill -9 "$p" 2>/dev/null || true
  done
  if [[ -f "$work/ferry.pid" ]]; then kill -9 "$(cat "$work/ferry.pid")" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  if [[ "${KEEP:-0}" == 1 ]]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { local i; for ((i = 0; i < 300; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
