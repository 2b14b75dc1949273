#!/usr/bin/env bash
# fuzz.sh — runs every fuzz target of the repository, one at a time, and prints one verdict line with the totals.
#
#   scripts/fuzz.sh                        # every target, 60 s each
#   FUZZTIME=10s scripts/fuzz.sh           # shorter (any -fuzztime value: 30s, 5m, 100000x)
#   FUZZ_PARALLEL=1 scripts/fuzz.sh        # fuzz workers per target (default: GOMAXPROCS)
#   FUZZ_MATCH=Connection scripts/fuzz.sh  # only targets whose name matches this regular expression
#
# Targets are discovered with grep ("^func Fuzz" in *_test.go), so a new one is picked up without editing this
# file. A failing input is written by go test under <package>/testdata/fuzz/<Target>/: plain `go test` then
# replays it as a regression case. Per-target logs are kept in $FUZZ_LOGS (default: a temporary directory,
# removed when everything passed).
#
# Go 1.26's fuzz coordinator can end a run with a bare "context deadline exceeded" right at the -fuzztime
# boundary although nothing was found (golang/go#75804). Such a run (that message, no failing input written, no
# panic, no test failure line) is retried once and then counted as a flake; any other failure fails the script.
# (The codec's short CI run is .ci/fuzz-codec.sh.)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

fuzztime="${FUZZTIME:-60s}"
match="${FUZZ_MATCH:-.}"
parallel=()
if [[ -n "${FUZZ_PARALLEL:-}" ]]; then parallel=(-parallel "$FUZZ_PARALLEL"); fi
logs="${FUZZ_LOGS:-$(mktemp -d)}"
mkdir -p "$logs"

# "<package dir> <target>" per line, sorted; vendored code, testdata and hidden directories are skipped.
targets=$(grep -rn --include='*_test.go' '^func Fuzz' . 2>/dev/null |
	grep -vE '(^|/)(vendor|testdata|\.[^/]+)/' |
	sed -E 's#^(.*)/[^/]+_test\.go:[0-9]+:func (Fuzz[A-Za-z0-9_]*)\(.*#\1 \2#' |
	sort -u | awk -v m="$match" '$2 ~ m')
if [[ -z "$targets" ]]; then
	echo "fuzz: no fuzz targets found (grep '^func Fuzz' --include=*_test.go)"
	exit 1
fi

is_deadline_flake() {
	grep -q 'context deadline exceeded' "$1" &&
		! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$1"
}

# execs prints the executions of a run: the count on go test's last "fuzz: elapsed" line.
execs() {
	grep -oE 'fuzz: elapsed: [^,]+, execs: [0-9]+' "$1" | tail -1 | sed -E 's/.*execs: //' | grep . || echo 0
}

n=0 passed=0 failed=0 flakes=0 total=0
failures=()
start=$SECONDS
while read -r dir name; do
	n=$((n + 1))
	log="$logs/$(echo "$dir" | tr '/.' '__')_$name.log"
	result=""
	for attempt in 1 2; do
		printf '== %-28s %-12s %s%s\n' "$name" "$dir" "$fuzztime" "$([[ $attempt == 2 ]] && echo ', retry')"
		go test "$dir" -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "${parallel[@]}" >"$log" 2>&1
		rc=$?
		runs=$(execs "$log")
		total=$((total + runs))
		if [[ $rc == 0 ]]; then
			result=ok
			break
		fi
		if ! is_deadline_flake "$log"; then
			result=fail
			break
		fi
		result=flake
	done
	case $result in
	ok)
		passed=$((passed + 1))
		echo "   ok: $runs execs"
		;;
	flake)
		flakes=$((flakes + 1))
		echo "   warning: hit the -fuzztime deadline race twice (golang/go#75804); nothing was found"
		;;
	fail)
		failed=$((failed + 1))
		failures+=("$dir:$name")
		echo "   FAIL after $runs execs; log: $log"
		if ! grep -qE -- '--- FAIL|_test\.go:[0-9]+:|panic:|Failing input written' "$log"; then
			tail -8 "$log" | sed 's/^/   | /' # a build failure or a crash of go test itself
		else
			grep -E -- '--- FAIL|_test\.go:[0-9]+:|panic:|Failing input written|To re-run' "$log" | head -20 | sed 's/^/   | /'
		fi
		;;
	esac
done <<<"$targets"

elapsed=$((SECONDS - start))
verdict=PASS
if [[ $failed -gt 0 ]]; then verdict=FAIL; fi
echo "fuzz: $verdict — $n targets, $passed passed, $failed failed, $flakes deadline flakes; $total execs in ${elapsed}s ($fuzztime each)${failures[*]:+; failed: ${failures[*]}}"
if [[ $failed -gt 0 ]]; then
	exit 1
fi
if [[ -z "${FUZZ_LOGS:-}" ]]; then rm -rf "$logs"; fi
exit 0
