package server

import (
	"fmt"
	"testing"
)

// Rendezvous hashing: keys spread evenly, and adding a fourth instance moves only the keys it wins (about a
// quarter), removing one moves only the keys it held.
func TestRedirectRendezvousMovesFew(t *testing.T) {
	owner := func(key string, nodes []string) string {
		kh := fnv64(key)
		best, bestW := "", uint64(0)
		for _, n := range nodes {
			if w := rendezvous(kh, n); best == "" || w > bestW {
				best, bestW = n, w
			}
		}
		return best
	}
	three := []string{"a:1883", "b:1883", "c:1883"}
	four := append(three[:3:3], "d:1883")
	const n = 30000
	count := map[string]int{}
	moved, movedNotToD := 0, 0
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("device-%d", i)
		o3, o4 := owner(k, three), owner(k, four)
		count[o3]++
		if o3 != o4 {
			moved++
			if o4 != "d:1883" {
				movedNotToD++
			}
		}
		if o2 := owner(k, three[:2]); o3 != "c:1883" && o2 != o3 {
			t.Fatalf("key %s moved from %s when c left", k, o3)
		}
	}
	for _, nd := range three {
		if c := count[nd]; c < n/3*9/10 || c > n/3*11/10 {
			t.Errorf("instance %s owns %d of %d keys, want about a third", nd, c, n)
		}
	}
	if movedNotToD != 0 || moved < n/4*8/10 || moved > n/4*12/10 {
		t.Fatalf("adding a fourth instance moved %d of %d keys (%d not to it), want about a quarter, all to it", moved, n, movedNotToD)
	}
}

// The publish-rate check allocates nothing after a connection's first PUBLISH, and pauses the connection
// once its burst is spent.
func TestLimitPublishRateAllocs(t *testing.T) {
	srv := &Server{}
	srv.cfg.defaults()
	srv.cfg.pubRate, srv.cfg.pubBurst = 1e6, 1<<20
	l := &loop{srv: srv, now: 100}
	c := &conn{l: l}
	if err := c.publishRate(); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { _ = c.publishRate() }); n != 0 {
		t.Fatalf("%v allocations per PUBLISH", n)
	}
	srv.cfg.pubRate, srv.cfg.pubBurst = 2, 2
	d := &conn{l: l}
	for i := range 2 {
		if err := d.publishRate(); err != nil || d.paused {
			t.Fatalf("publish %d within the burst: %v, paused %v", i+1, err, d.paused)
		}
	}
	if err := d.publishRate(); err != nil || !d.paused || !d.throttled() || len(l.throttled) != 1 {
		t.Fatalf("publish over the burst: %v, paused %v, throttled %v", err, d.paused, d.throttled())
	}
	// Still over the rate at every tick for the grace period (5 s by default): disconnected.
	var err error
	for s := 1; s <= 5 && err == nil; s++ {
		l.now++
		d.paused = false
		l.pubLimits[d].milli, l.pubLimits[d].at = 0, l.now
		err = d.publishRate()
		if s < 5 && err != nil {
			t.Fatalf("disconnected after %d s over the rate: %v", s, err)
		}
	}
	if err != errMessageRate {
		t.Fatalf("after the grace: %v, want errMessageRate", err)
	}
	d.forgetLimits()
	if d.throttled() || len(l.pubLimits) != 1 {
		t.Fatal("limit state of a closed connection kept")
	}
}

func BenchmarkPublishRateCheck(b *testing.B) {
	srv := &Server{}
	srv.cfg.defaults()
	srv.cfg.pubRate, srv.cfg.pubBurst = 1e9, 1<<20
	l := &loop{srv: srv, now: 100}
	c := &conn{l: l}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		l.now = int64(100 + i>>20)
		_ = c.publishRate()
	}
}
