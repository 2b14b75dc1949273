#!/usr/bin/env bash
# Test of scripts/tune-host.sh without changing the host: print and dry-run modes name every key with a
# value, values follow --connections, bad arguments fail with one line, --apply refuses to run without root,
# and (when shellcheck is installed) both scripts are shellcheck-clean. Takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

script=scripts/tune-host.sh
fails=0 checks=0
ok() { checks=$((checks + 1)); }
bad() {
	checks=$((checks + 1)) fails=$((fails + 1))
	echo "FAIL: $*"
}
# check MESSAGE COMMAND...: the command must succeed, else MESSAGE is reported.
check() {
	local msg=$1
	shift
	if "$@"; then ok; else bad "$msg"; fi
}

# Print mode needs no root: when running as root, run it as nobody if the tree is readable to nobody.
as_user=() who=""
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null &&
	setpriv --reuid=65534 --regid=65534 --clear-groups -- test -r "$script"; then
	as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups --) who=", print mode run as user nobody"
fi
run() { "${as_user[@]}" bash "$script" "$@"; }

keys=(fs.file-max fs.nr_open net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.core.netdev_max_backlog
	net.ipv4.ip_local_port_range net.ipv4.tcp_fin_timeout net.ipv4.tcp_tw_reuse net.ipv4.tcp_max_orphans
	net.ipv4.tcp_mem net.ipv4.tcp_rmem net.ipv4.tcp_wmem)
[ -e /proc/sys/net/netfilter/nf_conntrack_max ] && keys+=(net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_buckets)

# value OUTPUT KEY prints the value given for KEY in print or dry-run output.
value() { sed -n "s/^-\{0,1\}${2//./\\.} = \([^ ]*\( [0-9][0-9]*\)*\).*/\1/p" <<<"$1" | head -1; }

had_conf=no
[ -e /etc/sysctl.d/60-ferry.conf ] && had_conf=yes
out=$(run) || bad "print mode exited with status $?"
for k in "${keys[@]}"; do
	if [[ $(value "$out" "$k") =~ ^[0-9]+( [0-9]+)*$ ]]; then ok; else bad "print mode has no numeric line '$k = ...'"; fi
done
check "print mode has no verdict line" grep -q '^tune-host: .* nothing changed' <<<"$out"
check "print mode does not explain the process open-file limit" grep -q 'LimitNOFILE' <<<"$out"

dry=$(run --dry-run) || bad "dry-run exited with status $?"
if [ $had_conf = no ] && [ -e /etc/sysctl.d/60-ferry.conf ]; then bad "print or dry-run mode wrote the file"; else ok; fi
for k in "${keys[@]}"; do
	check "dry-run file has no '$k = ...' line" [ -n "$(value "$dry" "$k")" ]
done
# Every line of the file is a comment, blank, or 'key = value' (sysctl.d syntax).
stray=$(grep -vE '^(#.*|-?[a-z0-9_.-]+ = [0-9]+( [0-9]+)*|)$' <<<"$dry" || true)
check "dry-run lines that are not sysctl.d syntax: $stray" [ -z "$stray" ]

# Values follow --connections (commas allowed).
big=$(run --connections 3,000,000)
check "fs.nr_open for 3,000,000 connections: $(value "$big" fs.nr_open)" [ "$(value "$big" fs.nr_open)" -ge 3016384 ]
check "fs.file-max for 3,000,000 connections: $(value "$big" fs.file-max)" [ "$(value "$big" fs.file-max)" -ge 6065536 ]
check "tcp_max_orphans for 3,000,000 connections" [ "$(value "$big" net.ipv4.tcp_max_orphans)" -ge 3000000 ]
check "verdict does not name 3,000,000 connections" grep -q '^tune-host: .* for 3,000,000 connections' <<<"$big"

# Bad arguments: exit 2 and one line.
for args in "--connections abc" "--connections 0" "--bogus" "--connections"; do
	# shellcheck disable=SC2086 # word splitting of $args is the point
	if err=$(run $args 2>&1); then
		bad "'$args' succeeded"
	else
		st=$?
		check "'$args': status $st, output '$err' (want status 2, one line)" [ "$st:$(wc -l <<<"$err")" = 2:1 ]
	fi
done

# --apply without root refuses before touching anything.
if [ ${#as_user[@]} -gt 0 ] || [ "$(id -u)" -ne 0 ]; then
	if err=$(run --apply 2>&1); then bad "--apply succeeded without root"; else
		check "--apply without root: '$err'" grep -q 'needs root' <<<"$err"
	fi
else
	echo "note: running as root without setpriv: the no-root checks ran as root"
fi

if command -v shellcheck >/dev/null; then
	check "shellcheck" shellcheck "$script" scripts/tune-host-test.sh
else
	echo "note: shellcheck is not installed; skipped (Debian: apt-get install shellcheck)"
fi

if [ "$fails" -eq 0 ]; then
	echo "tune-host-test: passed ($checks checks$who)"
else
	echo "tune-host-test: FAILED ($fails of $checks checks)"
	exit 1
fi
