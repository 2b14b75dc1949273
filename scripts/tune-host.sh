#!/usr/bin/env bash
# Kernel settings for a host that holds many MQTT sockets (a Ferry edge node) or opens them (a load
# generator), each one explained, with values computed for --connections N and this host's memory.
#
#   scripts/tune-host.sh                         # print the settings and why; needs no root, changes nothing
#   scripts/tune-host.sh --connections 2000000   # ... sized for 2,000,000 connections (default 1,000,000)
#   scripts/tune-host.sh --dry-run               # print the exact file --apply would write; changes nothing
#   sudo scripts/tune-host.sh --apply            # write /etc/sysctl.d/60-ferry.conf, run sysctl --system
#
# Rules: a ceiling (file-max, backlogs, tcp_mem...) is never lowered, so a host tuned higher keeps its values;
# the per-socket buffer defaults and tcp_fin_timeout are lowered on purpose. --apply replaces the file as a
# whole and is safe to run again. Keys the kernel refuses (in containers: the ones that are not per network
# namespace) are reported, and the others still applied; the exit status is then 1.
# To undo: delete /etc/sysctl.d/60-ferry.conf; the previous values come back at the next boot.
# Open-file limits of processes are not sysctls: see the notes printed at the end (and deploy/ferry.service).
set -euo pipefail
cd "$(dirname "$0")/.."

CONF=/etc/sysctl.d/60-ferry.conf
FD_HEADROOM=16384 # descriptors a Ferry process needs besides its MQTT sockets (Kafka, data dir, admin, logs)

die() {
	echo "tune-host: $*" >&2
	exit 2
}

usage() {
	awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"
}

# thousands prints 1000000 as 1,000,000.
thousands() {
	local s=$1 out=""
	while [ ${#s} -gt 3 ]; do
		out=",${s: -3}$out"
		s=${s:0:${#s}-3}
	done
	echo "$s$out"
}

max() { if [ "$1" -ge "$2" ]; then echo "$1"; else echo "$2"; fi; }
min() { if [ "$1" -le "$2" ]; then echo "$1"; else echo "$2"; fi; }

# current KEY prints the key's value as the kernel reports it, whitespace normalised; empty if absent.
current() {
	local p="/proc/sys/${1//.//}"
	[ -r "$p" ] || return 0
	tr '\t' ' ' <"$p" | tr -s ' ' | sed 's/^ //; s/ $//'
}

mode=print
conns_arg=1000000
while [ $# -gt 0 ]; do
	case "$1" in
	--connections)
		[ $# -ge 2 ] || die "--connections needs a number"
		conns_arg=$2
		shift 2
		;;
	--connections=*)
		conns_arg=${1#*=}
		shift
		;;
	--apply)
		mode=apply
		shift
		;;
	--dry-run)
		mode=dry-run
		shift
		;;
	--print)
		mode=print
		shift
		;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
N=${conns_arg//[,_]/}
[[ $N =~ ^[1-9][0-9]{0,8}$ ]] || die "--connections wants a whole number from 1 to 999,999,999, not '$conns_arg'"

# --- this host -------------------------------------------------------------------------------------------------
mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
[ -n "$mem_kb" ] || die "cannot read MemTotal from /proc/meminfo"
page=$(getconf PAGESIZE 2>/dev/null || echo 4096)
mem_pages=$((mem_kb * 1024 / page))
cpus=$(nproc 2>/dev/null || echo 1)
# Kernel memory of one idle TCP socket held by an epoll server: the TCP socket, its socket inode, struct file,
# dentry and epoll item. Read from /proc/slabinfo when it is readable (root), else the sum measured on
# Linux 6.x x86-64 (2368 + 832 + 192 + 192 + 128 bytes).
sock_bytes=3712
if [ -r /proc/slabinfo ]; then
	s=$(awk '$1=="TCP"||$1=="sock_inode_cache"||$1=="filp"||$1=="dentry"||$1=="eventpoll_epi" {t+=$4} END {print t+0}' \
		/proc/slabinfo 2>/dev/null || echo 0)
	[ "${s:-0}" -gt 1000 ] && sock_bytes=$s
fi

# --- the settings --------------------------------------------------------------------------------------------
# Each entry: key, value, whether failure to set it is tolerated at boot ("-" prefix in sysctl.d), why.
KEYS=() VALS=() OPTS=() WHYS=()
add() {
	KEYS+=("$1")
	VALS+=("$2")
	OPTS+=("$3")
	WHYS+=("$4")
}
cur() { # numeric current value of a scalar key, or the given fallback
	local v
	v=$(current "$1")
	[[ $v =~ ^[0-9]+$ ]] && echo "$v" || echo "$2"
}

need=$((2 * N + 65536))
add fs.file-max "$(max "$(cur fs.file-max 0)" "$need")" "" \
	"Open files of the whole system. Every MQTT connection is a file descriptor, and a load generator on the
same host holds one more per connection: 2 x $(thousands "$N") + 65,536 for everything else = $(thousands "$need")."

nr_open=$(((N + FD_HEADROOM + 1023) / 1024 * 1024))
nr_open=$(max "$nr_open" 1048576)
add fs.nr_open "$(max "$(cur fs.nr_open 0)" "$nr_open")" "" \
	"Ceiling of any one process's open-file limit (RLIMIT_NOFILE, systemd's LimitNOFILE=). Ferry needs one
descriptor per connection plus $(thousands "$FD_HEADROOM") for Kafka, its data directory and the admin
listener: $(thousands "$N") + $(thousands "$FD_HEADROOM"), rounded up, and at least 1,048,576 so that
deploy/ferry.service's LimitNOFILE=1048576 is allowed."

add net.core.somaxconn "$(max "$(cur net.core.somaxconn 0)" 65535)" "" \
	"Longest accept queue a listening socket may ask for. After a restart or a load-balancer failover,
clients reconnect all at once; completed handshakes wait here until an event loop accepts them, and
overflowing connections are dropped and retried by the client seconds later. 65,535 is the most Go and
gnet use (they read this value when the process starts: restart Ferry after changing it)."

add net.ipv4.tcp_max_syn_backlog "$(max "$(cur net.ipv4.tcp_max_syn_backlog 0)" 65535)" "" \
	"Half-open connections (SYN received, handshake not finished) kept per listener, for the same
reconnect storms; beyond it the kernel falls back to SYN cookies or drops SYNs (clients retry after 1 s,
then 3 s, 7 s...)."

add net.core.netdev_max_backlog "$(max "$(cur net.core.netdev_max_backlog 0)" 16384)" "" \
	"Packets queued per CPU between the network card and TCP. Keep-alive PINGREQs and reconnect SYNs of
$(thousands "$N") clients arrive in bursts of small packets; the default 1,000 drops them under load (netstat: 'dropped')."

range="10240 65535"
read -r lo hi _ <<<"$(current net.ipv4.ip_local_port_range) x x"
if [[ $lo =~ ^[0-9]+$ && $hi =~ ^[0-9]+$ ]] && [ "$lo" -le 10240 ] && [ "$hi" -ge 65535 ]; then
	range="$lo $hi"
fi
read -r lo hi <<<"$range"
ports=$((hi - lo + 1))
add net.ipv4.ip_local_port_range "$range" "" \
	"Ports the kernel picks for outgoing connections. Only load generators (and Ferry's few Kafka
connections) use them: one connection needs a distinct (source address, source port) per destination
address and port, so $(thousands "$ports") ports per source address means $(thousands "$N") connections need
$(((N + ports - 1) / ports)) source addresses (ferry-bench --src-ips, on loopback) or destination ports. Ferry's own
ports (1883, 8883, 9090, 9092) stay below the range; reserve any listener port inside it with
net.ipv4.ip_local_reserved_ports."

add net.ipv4.tcp_fin_timeout "$(min "$(cur net.ipv4.tcp_fin_timeout 60)" 15)" "" \
	"Seconds a socket we closed waits in FIN-WAIT-2 for the peer's FIN. Devices that vanished (mobile
networks) never send it, and a load generator closing thousands of connections leaves them all here:
15 s instead of 60 frees them four times sooner."

add net.ipv4.tcp_tw_reuse 1 "" \
	"Lets a new outgoing connection reuse a port in TIME-WAIT when TCP timestamps prove it safe. Matters
for load generators that reconnect many clients (and for Ferry's Kafka connections); it does not touch
incoming MQTT connections. (tcp_tw_recycle, which broke NATed clients, no longer exists.)"

add net.ipv4.tcp_max_orphans "$(max "$(cur net.ipv4.tcp_max_orphans 0)" "$N")" "" \
	"Closed sockets no process holds any more, still sending their FIN. Stopping a Ferry with
$(thousands "$N") connections orphans all of them at once; beyond this count the kernel resets connections
and logs 'too many orphaned sockets'."

# tcp_mem is in pages and counts every byte queued in any TCP socket. Idle MQTT sockets queue nothing, so
# this is what bursts may borrow: pressure mode (buffers shrink) at a quarter of RAM, hard limit at half.
read -r m0 m1 m2 _ <<<"$(current net.ipv4.tcp_mem) 0 0 0"
[[ $m0$m1$m2 =~ ^[0-9]+$ ]] || { m0=0 m1=0 m2=0; }
t0=$(max "$m0" $((mem_pages / 8)))
t1=$(max "$m1" $((mem_pages / 4)))
t2=$(max "$m2" $((mem_pages / 2)))
add net.ipv4.tcp_mem "$t0 $t1 $t2" "" \
	"Pages ($page bytes) all TCP sockets together may hold in buffers: below the first number no limit,
above the second the kernel shrinks buffers, at the third it refuses more. The default is about 1/16 of
RAM, made for a few busy sockets. Here ($(thousands $((mem_kb / 1024))) MiB): 1/8, 1/4 and 1/2 of RAM. If each of
$(thousands "$N") sockets held one page at once, that would be $(thousands $((N * page / 1048576))) MiB."

read -r _ _ rmax _ <<<"$(current net.ipv4.tcp_rmem) 0 0 0"
[[ $rmax =~ ^[0-9]+$ ]] || rmax=0
add net.ipv4.tcp_rmem "4096 16384 $(max "$rmax" 6291456)" "" \
	"Receive buffer per socket: minimum, initial, maximum bytes. The initial size is what a client can send
before Ferry reads; MQTT devices send small packets, and 16 KiB instead of the usual 128 KiB keeps a burst
from many clients at once within tcp_mem. Autotuning still grows the buffers of busy
connections (backend subscribers, fast publishers) up to the maximum, which is never lowered."

read -r _ _ wmax _ <<<"$(current net.ipv4.tcp_wmem) 0 0 0"
[[ $wmax =~ ^[0-9]+$ ]] || wmax=0
add net.ipv4.tcp_wmem "4096 16384 $(max "$wmax" 4194304)" "" \
	"Send buffer per socket, same three numbers. Ferry keeps its own bounded per-client queue
(--outbound-budget), so the kernel only needs a round trip's worth for an idle device; autotuning grows
it for busy subscribers up to the maximum."

conntrack=no
if [ -e /proc/sys/net/netfilter/nf_conntrack_max ]; then
	conntrack=yes
	ct=$(max "$(cur net.netfilter.nf_conntrack_max 0)" $((2 * N)))
	add net.netfilter.nf_conntrack_max "$ct" "-" \
		"Connections netfilter's connection tracking (loaded on this host) can follow. Each MQTT connection
takes an entry for its whole life and keeps it about 2 minutes after closing (TIME-WAIT); when the table is
full, new connections are dropped ('nf_conntrack: table full'). 2 x $(thousands "$N") lets every client
reconnect once within that window; an entry is about 256 bytes ($(thousands $((ct * 256 / 1048576))) MiB if
full). Better still: exempt the MQTT port from tracking (see the notes)."
	per_page=$((page / 8)) # the kernel rounds the bucket count up to whole pages of 8-byte heads
	buckets=$(((ct / 4 + per_page - 1) / per_page * per_page))
	add net.netfilter.nf_conntrack_buckets "$(max "$(cur net.netfilter.nf_conntrack_buckets 0)" "$buckets")" "-" \
		"Hash buckets of the conntrack table: a quarter of nf_conntrack_max (rounded up to whole pages) keeps
lookups short, at 8 bytes each. Only the initial network namespace may change it (containers cannot)."
fi

# --- output --------------------------------------------------------------------------------------------------
render_file() {
	echo "# Written by Ferry's scripts/tune-host.sh --connections $N (host: $((mem_kb / 1024)) MiB RAM, $cpus CPUs)."
	echo "# Regenerate with the script rather than editing: it explains every value. Delete this file to undo"
	echo "# (the previous values return at the next boot). A '-' prefix means: ignore failure (module not loaded)."
	echo "# Ceilings are never lowered: where the host already had more than needed, its value was kept."
	local i
	for i in "${!KEYS[@]}"; do
		echo
		why "${WHYS[$i]}" '# ' 
		echo "${OPTS[$i]}${KEYS[$i]} = ${VALS[$i]}"
	done
}

print_notes() {
	local hard
	hard=$(ulimit -Hn)
	cat <<EOF

Not sysctls (set these as well):
  Open-file limit of the Ferry process: fs.nr_open is only a ceiling. Under systemd set LimitNOFILE=$(max 1048576 "$nr_open")
    in the unit (deploy/ferry.service has LimitNOFILE=1048576, enough for $(thousands $((1048576 - FD_HEADROOM))) connections).
    Ferry raises its soft limit to the hard one at start and logs "open-file limit max_connections_possible=...".
  Without systemd (a shell, a load generator), /etc/security/limits.d/60-ferry.conf for logins through PAM:
      *  soft  nofile  $nr_open
      *  hard  nofile  $nr_open
    then log in again and check 'ulimit -Hn' (this shell: $hard). limits.d does not apply to systemd services.
  Memory: the kernel keeps about $sock_bytes bytes per idle socket and Ferry aims at 1 KiB, so $(thousands "$N")
    idle connections take about $(thousands $((N * (sock_bytes + 1024) / 1048576))) MiB of this host's $(thousands $((mem_kb / 1024))) MiB before any message is buffered.
EOF
	if [ $((N * (sock_bytes + 1024) / 1024)) -gt $((mem_kb / 2)) ]; then
		echo "    WARNING: that is more than half of RAM: this host is small for $(thousands "$N") connections."
	fi
	if [ "$conntrack" = yes ]; then
		cat <<'EOF'
  Connection tracking is loaded. A broker port needs no tracking; skip it rather than size for it, e.g.
      nft add table inet raw; nft add chain inet raw pre '{ type filter hook prerouting priority -300; }'
      nft add rule inet raw pre tcp dport 1883 notrack
    (and the same on the output hook for sport 1883), if no firewall rule relies on connection state there.
EOF
	fi
}

# why TEXT PREFIX prints an explanation as one paragraph, wrapped, each line prefixed.
why() {
	local line
	tr '\n' ' ' <<<"$1" | fmt -w $((112 - ${#2})) | while IFS= read -r line; do echo "$2$line"; done
}

count_changes() {
	local i n=0
	for i in "${!KEYS[@]}"; do
		[ "$(current "${KEYS[$i]}")" = "${VALS[$i]}" ] || n=$((n + 1))
	done
	echo "$n"
}

case "$mode" in
print)
	echo "Kernel settings for $(thousands "$N") MQTT connections on this host ($(thousands $((mem_kb / 1024))) MiB RAM, $cpus CPUs)."
	echo "Print mode: nothing is changed. 'now' is this host's current value. Ceilings are never lowered: where"
	echo "this host already has more than N needs, its value is kept."
	for i in "${!KEYS[@]}"; do
		now=$(current "${KEYS[$i]}")
		if [ "$now" = "${VALS[$i]}" ]; then note="now the same"; else note="now ${now:-absent}"; fi
		echo
		echo "${KEYS[$i]} = ${VALS[$i]}    ($note)"
		why "${WHYS[$i]}" '    ' 
	done
	[ "$conntrack" = yes ] || printf '\nnf_conntrack is not loaded: no conntrack settings needed (run this again if it gets loaded).\n'
	print_notes
	echo
	echo "tune-host: ${#KEYS[@]} settings for $(thousands "$N") connections, $(count_changes) differ from this host; nothing changed (print mode; --apply as root writes $CONF)"
	;;
dry-run)
	echo "# --apply would write $CONF with exactly this, then run 'sysctl --system':"
	render_file
	echo
	echo "# tune-host: dry run, ${#KEYS[@]} settings for $(thousands "$N") connections, $(count_changes) differ from this host; nothing changed"
	;;
apply)
	[ "$(id -u)" -eq 0 ] || die "--apply needs root: it writes $CONF and runs sysctl --system (print mode needs no root)"
	command -v sysctl >/dev/null || die "sysctl not found (Debian: apt-get install procps)"
	mkdir -p "$(dirname "$CONF")"
	tmp=$(mktemp "$CONF.XXXXXX")
	trap 'rm -f "$tmp"' EXIT
	render_file >"$tmp"
	chmod 0644 "$tmp"
	if cmp -s "$tmp" "$CONF" 2>/dev/null; then
		echo "tune-host: $CONF is already up to date"
		rm -f "$tmp"
	else
		mv -f "$tmp" "$CONF"
		echo "tune-host: wrote $CONF"
	fi
	echo "tune-host: running sysctl --system"
	out=$(sysctl --system 2>&1) || true
	failed=()
	for i in "${!KEYS[@]}"; do
		k=${KEYS[$i]} want=${VALS[$i]}
		got=$(current "$k")
		[ "$got" = "$want" ] && continue
		# Why: a file read after ours sets it again, or the kernel refuses it (ask it once more to get its words).
		later=$(grep -lE "^[[:space:]]*-?${k//./\\.}[[:space:]]*=" /etc/sysctl.conf /etc/sysctl.d/*.conf /run/sysctl.d/*.conf \
			/usr/local/lib/sysctl.d/*.conf /usr/lib/sysctl.d/*.conf 2>/dev/null | grep -vx "$CONF" | tr '\n' ' ' || true)
		err=$(sysctl -q -w "$k=$want" 2>&1 | head -1) || true
		got=$(current "$k")
		if [ -n "$later" ]; then
			why="also set by ${later% } (a file sysctl --system may read after ours); value now '${got:-absent}'"
		elif [ "$got" = "$want" ]; then
			continue # took on a second try
		else
			why="${err:-the kernel kept \"${got:-absent}\"}"
			[ -e "/proc/sys/${k//.//}" ] || why="no such key here (an older kernel, or a container: keys that are not per network namespace can only be set on the host)"
		fi
		echo "  NOT APPLIED $k = $want: $why"
		failed+=("$k")
	done
	if grep -q "sysctl:" <<<"$out"; then
		echo "  (sysctl --system also said: $(grep "sysctl:" <<<"$out" | head -3 | tr '\n' ' '))"
	fi
	print_notes
	echo
	applied=$((${#KEYS[@]} - ${#failed[@]}))
	if [ ${#failed[@]} -eq 0 ]; then
		echo "tune-host: applied all ${#KEYS[@]} settings for $(thousands "$N") connections ($CONF)"
	else
		echo "tune-host: applied $applied of ${#KEYS[@]} settings for $(thousands "$N") connections ($CONF); not applied here: ${failed[*]}"
		exit 1
	fi
	;;
esac
