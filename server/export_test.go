package server

import (
	"time"

	"github.com/ferrymq/ferry/server/sessions"
)

// HoldReadLag makes the loops see the shared reader lag by d, whatever it reads, until called again with a
// negative d (readlag.go). d = 0 holds "no lag".
func HoldReadLag(s *Server, d time.Duration) {
	switch {
	case d < 0:
		s.lag.held.Store(0)
	case d == 0:
		s.lag.held.Store(-1) // age reports max(held, 0)
	default:
		s.lag.held.Store(int64(d))
	}
}

// SetWillHook makes fn run just before the server publishes a will due at once whose claim it read back as the
// winner; fn returning true stands for the process killed there (the will is not published).
func SetWillHook(s *Server, fn func() bool) { s.willHook.Store(&fn) }

// SetReassertHook makes fn run just before the server writes its owner record of a connection again after a
// late record of an older connection (reassertOwner); fn returning true stands for the process killed there.
func SetReassertHook(s *Server, fn func() bool) { s.reassertHook.Store(&fn) }

// SetClaimHook makes fn run when Kafka holds the pending will of a claim this server writes, before the claim
// itself is written; fn returns true if it killed the server there (the claim is then not written).
func SetClaimHook(s *Server, fn func() bool) { s.store.ClaimHook.Store(&fn) }

// StableShardPeer says whether s takes the instance advertised at addr for a stable candidate for shards:
// redirects to it answer 0x9D (redirect.go).
func StableShardPeer(s *Server, addr string) bool {
	stable := false
	now := time.Now()
	s.store.Peers(func(id string, p sessions.Peer) {
		if live, st := s.shardPeer(id, p, now); live && st && p.Addr == addr {
			stable = true
		}
	})
	return stable
}
