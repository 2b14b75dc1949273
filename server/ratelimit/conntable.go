// Package ratelimit is the connection-rate table of --max-connection-rate: token buckets of the source
// addresses that connected recently, in a fixed-size table shared by the event loops (ConnTable), and the
// bucket size both of Ferry's rate limits use (Burst). The server applies it at CONNECT (server/limits.go).
package ratelimit

import (
	"crypto/rand"
	"encoding/binary"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Burst is the bucket size for a rate and a configured burst (0 = one second's worth, at least 1).
func Burst(rate float64, burst int) float64 {
	if burst > 0 {
		return float64(burst)
	}
	return max(1, math.Ceil(rate))
}

// ConnTable is the token buckets of the source addresses that connected recently, in a fixed-size,
// set-associative table shared by the event loops: gnet spreads one address's connections over every loop,
// so a table per loop would let an address through once per loop. Each set of rateWays entries has its own
// mutex, held for a few compares and never across I/O, so loops contend only when two CONNECTs hash to the
// same one of connRateSets sets at the same moment: there is no global lock.
//
// Memory is fixed when the server starts: connRateSets × rateWays entries (65,536 addresses, about 1.6 MB),
// whatever the number of addresses. When an address's set is full, the entry used longest ago is replaced:
// that address starts again with a full bucket when it comes back. A flood from more addresses than the
// table holds therefore weakens the limit for the flooding addresses (each gets about a burst per eviction
// cycle) but never refuses an address that is under its rate, and never grows memory. Replacing an entry that
// was still limiting its address is counted (ferry_connection_rate_evictions_total); a steady count means the
// table is too small for the flood, and the listener's max-connections and the CONNECT timeout remain the
// backstop. Entries need no pruning: an idle one is simply the first to be replaced.
type ConnTable struct {
	rate  float64 // tokens per nanosecond
	burst float64
	seed  uint64 // random: which set an address lands in cannot be chosen from outside
	sets  []rateSet
	evict *atomic.Uint64 // replacements of entries that still limited their address
}

const (
	connRateSets = 8192
	rateWays     = 8
)

type rateSet struct {
	mu sync.Mutex
	e  [rateWays]rateEntry
}

type rateEntry struct {
	key    uint64 // mixed address group; 0 = free
	at     int64  // unix ns of the last refill
	tokens float64
}

// NewConnTable returns a table that allows perSecond connections per second per source address, with bursts
// of burst (0 = one second's worth, at least 1), and counts in evictions the entries it replaces while they
// still limited their address.
func NewConnTable(perSecond float64, burst int, evictions *atomic.Uint64) *ConnTable {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails on Linux
	seed := binary.LittleEndian.Uint64(b[:])
	return &ConnTable{rate: perSecond / 1e9, burst: Burst(perSecond, burst), seed: seed,
		sets: make([]rateSet, connRateSets), evict: evictions}
}

// addrGroup is the part of an address that is limited as one source: the IPv4 address, or the /64 of an
// IPv6 address. IPv4-mapped IPv6 addresses count as IPv4.
func addrGroup(a netip.Addr) uint64 {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return 1<<32 | uint64(binary.BigEndian.Uint32(b[:])) // 0:1::/32 is unassigned IPv6 space: no overlap
	}
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8])
}

// Mix64 is splitmix64's finalizer: a bijection that spreads every input bit over the output. The server's
// redirect by rendezvous hashing uses it too.
func Mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Allow takes a token for one connection from a, at unix ns now. It may run on any loop.
func (t *ConnTable) Allow(a netip.Addr, now int64) bool {
	if !a.IsValid() {
		return true // no address to count (a PROXY LOCAL header without one): not limited
	}
	key := Mix64(addrGroup(a)^t.seed) | 1 // never 0, which marks a free entry
	s := &t.sets[(key>>1)%connRateSets]
	s.mu.Lock()
	defer s.mu.Unlock()
	var victim *rateEntry
	for i := range s.e {
		e := &s.e[i]
		if e.key == key {
			e.tokens = min(t.burst, e.tokens+float64(now-e.at)*t.rate)
			e.at = now
			if e.tokens < 1 {
				return false
			}
			e.tokens--
			return true
		}
		if victim == nil || e.key == 0 || (victim.key != 0 && e.at < victim.at) {
			victim = e
		}
	}
	if victim.key != 0 && victim.tokens+float64(now-victim.at)*t.rate < t.burst {
		t.evict.Add(1) // it still limited its address
	}
	*victim = rateEntry{key: key, at: now, tokens: t.burst - 1}
	return true
}
