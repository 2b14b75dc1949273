package ratelimit

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// The connection-rate table holds a fixed number of addresses: a flood from a million addresses neither grows
// it nor refuses an address that is new (under its rate); the evictions it forces are counted.
func TestLimitRateTableBounded(t *testing.T) {
	var evictions atomic.Uint64
	tb := NewConnTable(1, 2, &evictions)
	entries := len(tb.sets) * rateWays
	now := time.Now().UnixNano()
	bad := netip.MustParseAddr("203.0.113.7")
	for i := 0; i < 2; i++ {
		if !tb.Allow(bad, now) {
			t.Fatalf("connection %d within the burst of 2 refused", i+1)
		}
	}
	if tb.Allow(bad, now) {
		t.Fatal("third connection at once allowed with burst 2")
	}
	for i := 0; i < 1_000_000; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !tb.Allow(a, now+int64(i)) {
			t.Fatalf("address %v, new to the table, refused", a)
		}
	}
	if len(tb.sets)*rateWays != entries {
		t.Fatal("table grew")
	}
	t.Logf("1,000,000 addresses through a %d-entry table: %d evictions of still-limiting entries", entries, evictions.Load())
	// Refill: one token per second.
	if !tb.Allow(netip.MustParseAddr("198.51.100.1"), now) {
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
