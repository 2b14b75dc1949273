package procs

import (
	"runtime"
	"testing"
)

// The reservation the latency fix relies on: with every event loop waiting in epoll_wait (each holding a P),
// the runtime still has its default number of Ps for Go code and its network poller.
func TestProcsReserveOnePPerLoop(t *testing.T) {
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.SetDefaultGOMAXPROCS() })
	var p Reservation
	want := func(step string, n int) {
		t.Helper()
		if got := runtime.GOMAXPROCS(0); got != n {
			t.Fatalf("%s: GOMAXPROCS %d, want %d (default %d)", step, got, n, def)
		}
	}
	for _, n := range []int{1, 2, 3, 8} {
		p.Reserve(n)
		want("reserved", def+n)
		if base, loops := p.Reserved(); base != def || loops != n {
			t.Fatalf("reserved() = %d, %d; want %d, %d", base, loops, def, n)
		}
		p.Release(n)
		want("released", def)
	}
	// Two servers in one process: their loops add up, and the last stop gives the default back.
	p.Reserve(2)
	p.Reserve(1)
	want("two servers", def+3)
	p.Release(2)
	want("one stopped", def+1)
	p.Release(1)
	want("both stopped", def)
	if p.stop != nil {
		t.Fatal("the follower still runs with nothing reserved")
	}
}

// On a one-CPU machine (here: GOMAXPROCS=1 from the environment) one loop still leaves one P to the poller.
func TestProcsReserveOneCPU(t *testing.T) {
	t.Setenv("GOMAXPROCS", "1")
	runtime.GOMAXPROCS(1) // what the runtime parsed from the variable at start
	t.Cleanup(func() { runtime.SetDefaultGOMAXPROCS() })
	var p Reservation
	p.Reserve(1)
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Fatalf("GOMAXPROCS %d with one loop on one CPU, want 2", got)
	}
	p.Release(1)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("GOMAXPROCS %d after the loop stopped, want the environment's 1", got)
	}
}

// The follower re-derives the base from the runtime when asked, and keeps the loops on top of it.
func TestProcsFollowRederives(t *testing.T) {
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.SetDefaultGOMAXPROCS() })
	var p Reservation
	p.Reserve(2)
	defer p.Release(2)
	runtime.GOMAXPROCS(1) // something else moved it
	p.mu.Lock()
	p.print = "changed" // as if the CPU limits had changed
	p.deriveLocked()
	runtime.GOMAXPROCS(p.base + p.loops)
	p.mu.Unlock()
	if got := runtime.GOMAXPROCS(0); got != def+2 {
		t.Fatalf("GOMAXPROCS %d after re-derivation, want %d", got, def+2)
	}
	if cpuFingerprint() == "" {
		t.Fatal("empty CPU fingerprint: neither the affinity nor a cgroup limit could be read")
	}
}
