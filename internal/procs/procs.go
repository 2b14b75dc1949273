// Package procs reserves Ps (GOMAXPROCS) for gnet event loops, so that Go's network poller always has one.
//
// A gnet event loop waits for its sockets in a raw epoll_wait system call. The Go runtime counts a goroutine in
// a system call as still holding its P (processor), and sysmon takes that P back only when one call outlasts a
// whole sysmon tick. With even a few busy clients every loop wakes every millisecond or two, so with the
// runtime's default GOMAXPROCS (one P per CPU) and one loop per CPU no P is ever free. Go's own network
// poller — which franz-go's Kafka connections, the embedded Kafka, the admin server and TLS handshakes wait
// in — is then polled by nobody but sysmon's fallback, every 10 ms: every Kafka round trip waits up to 10 ms
// for a P, and a PUBACK at 1,000 msg/s takes 10–40 ms instead of half a millisecond.
//
// So Ferry gives the runtime one P more per event loop than its default: the loops may all sit in epoll_wait
// and the runtime still has its default number of Ps for Go code and its network poller. A loop that is
// computing uses a CPU like any thread; the extra Ps only keep the runtime's scheduler from mistaking a loop's
// wait for work. See docs/architecture.md, "Event loops and Go's poller".
//
// GOMAXPROCS is process-wide, so the reservation is too: every running Server adds its loops, and the last
// one to stop gives the runtime its default back. Setting GOMAXPROCS turns off the runtime's own updates of it
// (Go 1.25+ follows a container's CPU limit as it changes), so the reservation follows the runtime's default
// itself: whenever the CPU affinity or the cgroup's CPU limit changes (checked every procsCheckEvery, plus a
// full re-derivation every procsRederiveEvery) it asks the runtime for its default again and adds the loops to
// that. A GOMAXPROCS environment variable is the base instead of the default and is not followed, as the
// runtime does not follow it either.
package procs

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	procsCheckEvery    = 2 * time.Second
	procsRederiveEvery = time.Minute
)

// process is the process's one reservation of Ps for event loops, which Reserve and Release change.
var process Reservation

// Reserve adds n event loops to the process's reservation (see [Reservation.Reserve]).
func Reserve(n int) { process.Reserve(n) }

// Release gives back n event loops of the process's reservation (see [Reservation.Release]).
func Release(n int) { process.Release(n) }

// Reservation is a reservation of Ps for event loops: the runtime's default number plus one per loop. The
// process has one (Reserve, Release); tests make their own. Safe for concurrent use.
type Reservation struct {
	mu      sync.Mutex
	loops   int       // event loops of all running Servers
	base    int       // the runtime's default (or GOMAXPROCS from the environment) when last derived
	envBase bool      // base came from the GOMAXPROCS environment variable: not followed
	print   string    // fingerprint of the CPU affinity and cgroup limits at the last derivation
	stop    chan bool // stops the follower; nil when no loops are reserved
	derived time.Time
}

// reserve adds n event loops to the reservation and sets GOMAXPROCS to the base plus all reserved loops.
// It runs on the goroutine that starts a Server.
func (p *Reservation) Reserve(n int) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.loops == 0 {
		p.deriveLocked()
		p.stop = make(chan bool)
		go p.follow(p.stop)
	}
	p.loops += n
	runtime.GOMAXPROCS(p.base + p.loops)
}

// release gives back n event loops; the last release hands GOMAXPROCS back to the runtime's default (and its
// automatic updates), or to the environment's value.
func (p *Reservation) Release(n int) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.loops -= n
	if p.loops > 0 {
		runtime.GOMAXPROCS(p.base + p.loops)
		return
	}
	p.loops = 0
	close(p.stop)
	p.stop = nil
	if p.envBase {
		runtime.GOMAXPROCS(p.base)
	} else {
		runtime.SetDefaultGOMAXPROCS()
	}
}

// reserved returns the base and the reserved loops (tests and metrics).
func (p *Reservation) Reserved() (base, loops int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.base, p.loops
}

// deriveLocked asks the runtime for its default number of Ps (or reads the environment's). p.mu is held.
func (p *Reservation) deriveLocked() {
	p.print = cpuFingerprint()
	p.derived = time.Now()
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		// The runtime parsed it at start; GOMAXPROCS(0) still shows it unless a reservation changed it.
		if !p.envBase {
			p.base, p.envBase = runtime.GOMAXPROCS(0), true
		}
		return
	}
	runtime.SetDefaultGOMAXPROCS() // sets the default and re-enables the runtime's updates until the next set
	p.base = runtime.GOMAXPROCS(0)
}

// follow runs on its own goroutine while loops are reserved: it re-derives the base when the machine's CPU
// limits change, and now and then regardless, and resets GOMAXPROCS when the base moved.
func (p *Reservation) follow(stop chan bool) {
	t := time.NewTicker(procsCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			p.mu.Lock()
			if p.stop == stop && !p.envBase && (cpuFingerprint() != p.print || now.Sub(p.derived) >= procsRederiveEvery) {
				p.deriveLocked()
				runtime.GOMAXPROCS(p.base + p.loops)
			}
			p.mu.Unlock()
		}
	}
}

// cpuFingerprint describes what the runtime's default GOMAXPROCS depends on: the CPU affinity mask and the CPU
// limits (cgroup v2 cpu.max, or v1 cfs quota and period) of this process's cgroup and its ancestors. Only a
// change matters, so it is a string of what was read; unreadable files read as empty.
func cpuFingerprint() string {
	var b strings.Builder
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err == nil {
		b.WriteString(strings.Repeat("c", set.Count()))
	}
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return b.String()
	}
	for _, line := range bytes.Split(cg, []byte{'\n'}) {
		// "0::/path" for v2; "N:cpu,cpuacct:/path" for v1's cpu controller
		parts := strings.SplitN(string(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			for dir := parts[2]; ; dir = filepath.Dir(dir) {
				b.WriteString(readSmall(filepath.Join("/sys/fs/cgroup", dir, "cpu.max")))
				if dir == "/" || dir == "." {
					break
				}
			}
		case strings.Contains(","+parts[1]+",", ",cpu,"):
			for _, mnt := range []string{"cpu,cpuacct", "cpu"} {
				d := filepath.Join("/sys/fs/cgroup", mnt, parts[2])
				b.WriteString(readSmall(filepath.Join(d, "cpu.cfs_quota_us")))
				b.WriteString(readSmall(filepath.Join(d, "cpu.cfs_period_us")))
			}
		}
	}
	return b.String()
}

func readSmall(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}
