#!/usr/bin/env bash
# Runs every mqttcodec fuzz target briefly, one after the other.
#   .ci/fuzz-codec.sh                 # 3 s each (CI)
#   FUZZTIME=60s .ci/fuzz-codec.sh    # longer local run
#   FUZZ_PARALLEL=1 ...               # fuzz workers per target (default: GOMAXPROCS)
# A failing input is written under mqttcodec/testdata/fuzz/<Target>/ by go test: commit it and it
# becomes a regression test that plain `go test` runs.
#
# Go 1.26's fuzz coordinator can fail a run with a bare "context deadline exceeded" right at the
# -fuzztime boundary although nothing was found (golang/go#75804, fixed in Go 1.27). Such a run
# (that message, no failing input written, no panic) is retried once and then reported as a flake;
# any other failure fails the script.
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-3s}"
parallel=()
if [[ -n "${FUZZ_PARALLEL:-}" ]]; then parallel=(-parallel "$FUZZ_PARALLEL"); fi
targets=$(go test ./mqttcodec -list '^Fuzz' | grep '^Fuzz') || { echo "cannot list fuzz targets"; exit 1; }

is_deadline_flake() {
	grep -q 'context deadline exceeded' "$1" && ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$1"
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
flakes=0
for t in $targets; do
	for attempt in 1 2; do
		label=""
		if [[ $attempt == 2 ]]; then label=", retry"; fi
		echo "== $t ($fuzztime$label)"
		if go test ./mqttcodec -run '^$' -fuzz "^${t}\$" -fuzztime "$fuzztime" "${parallel[@]}" 2>&1 | tee "$log"; then
			break
		fi
		if ! is_deadline_flake "$log"; then
			echo "FAIL: $t found a failing input (see above)"
			exit 1
		fi
		if [[ $attempt == 2 ]]; then
			echo "warning: $t hit the fuzztime deadline race twice (golang/go#75804); nothing was found"
			flakes=$((flakes + 1))
		fi
	done
done
echo "fuzz-codec: all targets ran ($flakes deadline flakes)"
