package server

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// The connection-rate table holds a fixed number of addresses: a flood from a million addresses neither grows
// it nor refuses an address that is new (under its rate); the evictions it forces are counted.
func TestLimitRateTableBounded(t *testing.T) {
	var m limitMetrics
	tb := newConnRateTable(1, 2, &m)
	entries := len(tb.sets) * rateWays
	now := time.Now().UnixNano()
	bad := netip.MustParseAddr("203.0.113.7")
	for i := 0; i < 2; i++ {
		if !tb.allow(bad, now) {
			t.Fatalf("connection %d within the burst of 2 refused", i+1)
		}
	}
	if tb.allow(bad, now) {
		t.Fatal("third connection at once allowed with burst 2")
	}
	for i := 0; i < 1_000_000; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !tb.allow(a, now+int64(i)) {
			t.Fatalf("address %v, new to the table, refused", a)
		}
	}
	if len(tb.sets)*rateWays != entries {
		t.Fatal("table grew")
	}
	t.Logf("1,000,000 addresses through a %d-entry table: %d evictions of still-limiting entries", entries, m.rateEvictions.Load())
	// Refill: one token per second.
	if !tb.allow(netip.MustParseAddr("198.51.100.1"), now) {
		t.Fatal("another address refused")
	}
}

// IPv6 addresses are limited per /64; IPv4-mapped addresses count as their IPv4 address.
func TestLimitAddrGroup(t *testing.T) {
	same := [][2]string{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"},
		{"192.0.2.1", "::ffff:192.0.2.1"},
	}
	for _, p := range same {
		if addrGroup(netip.MustParseAddr(p[0])) != addrGroup(netip.MustParseAddr(p[1])) {
			t.Errorf("%s and %s should be limited together", p[0], p[1])
		}
	}
	diff := [][2]string{
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"192.0.2.1", "192.0.2.2"},
		{"0.0.0.1", "::1"},
	}
	for _, p := range diff {
		if addrGroup(netip.MustParseAddr(p[0])) == addrGroup(netip.MustParseAddr(p[1])) {
			t.Errorf("%s and %s should be limited apart", p[0], p[1])
		}
	}
}

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
