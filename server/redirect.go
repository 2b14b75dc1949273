package server

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/ratelimit"
	"github.com/ferrymq/ferry/server/sessions"
)

// Redirect shards clients over the live instances. With --redirect-by, each client has one owning instance:
// the live instance that wins rendezvous (highest-random-weight) hashing of the client's shard key — its
// client id, or its authenticated identity — against the instances' advertised addresses. Every instance
// computes the same owner from the same heartbeats, and when an instance joins or leaves only the clients it
// wins or held move (about 1/N of them), unlike hash-modulo-N, which moves almost all.
//
//   - A v5 CONNECT that lands on another instance than its owner gets CONNACK 0x9D Server Moved when the owner
//     is stable (live for at least --dead-after's window, so the answer is not about to change), else 0x9C
//     Use Another Server, with a Server Reference property naming the owner's advertised address. Clients
//     that follow it connect there; the others keep being refused here, so only deploy redirect with clients
//     that follow Server Reference.
//   - v3 clients cannot be told: they are served where they land. So are v5 clients with a server-assigned
//     client id (nothing to shard by) and clients whose owner is unknown or dead: an instance that stops
//     heartbeating drops out of every instance's view after the death window, and its clients are then owned
//     by the survivors.
//   - A drain (SIGTERM) tells each v5 client DISCONNECT 0x9C with a Server Reference of its owner among the
//     other live instances, instead of 0x8B; the draining instance first marks its heartbeat "draining", so
//     the others stop sending clients to it.
//
// Each instance writes its advertised address (--advertise host:port, the address clients should use to reach
// it, which behind NAT or a load balancer differs from the listen address) in its heartbeat record "i:<instance
// id>" in the sessions topic, so every instance knows the others'. Instances without --advertise are never
// redirect targets. Views of the heartbeats can differ for a moment (a heartbeat read by one instance before
// another), so a client may be sent back and forth once while membership changes; it settles within one
// heartbeat interval.

// Redirect modes.
const (
	redirectClientID = "client-id"
	redirectIdentity = "identity"
)

// RedirectBy shards sessions over the live instances: "client-id" hashes the client identifier, "identity"
// (alias "identity-pattern") the authenticated identity — the value {identity} stands for in authorization
// patterns such as place/{identity}/# — falling back to the client id for a client without one. v5 clients
// on another instance than their shard's get CONNACK 0x9D/0x9C with a Server Reference. Requires Advertise.
// Default "" = off.
func RedirectBy(mode string) Opt {
	return opt(func(c *cfg) {
		if mode == "identity-pattern" {
			mode = redirectIdentity
		}
		c.redirectBy = mode
	})
}

// Advertise is the host:port clients should use to reach this instance, published in its heartbeat so other
// instances can redirect clients here. Default "" = none (the instance is never a redirect target).
func Advertise(hostPort string) Opt { return opt(func(c *cfg) { c.advertise = hostPort }) }

func (c *cfg) validateRedirect() error {
	switch c.redirectBy {
	case "", redirectClientID, redirectIdentity:
	default:
		return fmt.Errorf("redirect by %q: want client-id or identity", c.redirectBy)
	}
	if c.advertise != "" {
		host, port, err := net.SplitHostPort(c.advertise)
		if err != nil || host == "" {
			return fmt.Errorf("advertised address %q: want host:port", c.advertise)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return fmt.Errorf("advertised address %q: port %q is not a number from 1 to 65535", c.advertise, port)
		}
	}
	if c.redirectBy != "" && c.advertise == "" {
		return fmt.Errorf("redirect by %s needs this instance's advertised address (advertise host:port)", c.redirectBy)
	}
	return nil
}

func (srv *Server) heartbeat() *sessions.HeartbeatRec {
	return &sessions.HeartbeatRec{V: sessionkey.Version, At: time.Now().UnixMilli(), Addr: srv.cfg.advertise, Draining: srv.draining.Load(), Run: srv.store.Incarnation}
}

// fnv64 is FNV-1a: the same on every instance and every build, which rendezvous hashing needs (maphash is
// seeded per process).
func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// rendezvous is the weight of the instance advertised at addr for a key hashed to kh: the key belongs to the
// live instance of highest weight.
func rendezvous(kh uint64, addr string) uint64 { return ratelimit.Mix64(kh ^ fnv64(addr)) }

// shardOwner returns the advertised address of the live instance that owns key, whether that instance is
// stable (live for a whole death window), and whether it is this instance. With others, this instance is not
// a candidate (a drain looks for where its clients go next). addr is "" when no instance qualifies. Takes the
// store lock.
func (srv *Server) shardOwner(key string, others bool) (addr string, stable, self bool) {
	now := time.Now()
	kh := fnv64(key)
	var best uint64
	consider := func(a string, st, me bool) {
		score := rendezvous(kh, a)
		if addr == "" || score > best || (score == best && a < addr) {
			addr, best, stable, self = a, score, st, me
		}
	}
	if !others && !srv.draining.Load() {
		consider(srv.cfg.advertise, true, true)
	}
	srv.store.Peers(func(id string, p sessions.Peer) {
		if live, st := srv.shardPeer(id, p, now); live {
			consider(p.Addr, st, false)
		}
	})
	return addr, stable, self
}

// shardPeer says whether the instance id, as its heartbeats show it in p, is a candidate for shards at now
// (live, advertised, not draining, not this instance) and whether it is stable (live for a whole death window).
func (srv *Server) shardPeer(id string, p sessions.Peer, now time.Time) (live, stable bool) {
	if id == srv.store.Instance || p.Addr == "" || p.Draining || now.Sub(p.Seen) >= srv.cfg.deadAfter ||
		p.Addr == srv.cfg.advertise { // this instance under an earlier id, or a misconfigured twin
		return false, false
	}
	return true, now.Sub(p.Since) >= srv.cfg.deadAfter
}

// shardKey is what c is sharded by: its authenticated identity under --redirect-by identity, else its
// client id. "" (a server-assigned id and no identity) is not sharded.
func (c *conn) shardKey(clientID string, assigned bool) string {
	if c.l.srv.cfg.redirectBy == redirectIdentity {
		if id := c.shardIdentity(); id != "" {
			return "identity:" + id
		}
	}
	if assigned {
		return ""
	}
	return clientID
}

// shardIdentity is the authenticated identity of c, or "": the identity of its principal (a JWT's identity
// claim, authz.go) when authentication is on, else that of a verified TLS client certificate. Authentication
// runs before the redirect check in onConnect. This is the one place to change if the shard key should come
// from elsewhere (another claim, a pattern over the client id).
func (c *conn) shardIdentity() string {
	if c.auth != nil {
		if id := c.auth.Identity(); id != "" {
			return id
		}
	}
	return c.certIdentity()
}

// redirectConnect answers a v5 CONNECT whose shard another live instance owns: CONNACK 0x9D (owner stable) or
// 0x9C with the owner's address as Server Reference, then closes. It reports whether it did. Runs on the loop.
func (c *conn) redirectConnect(version byte, clientID string, assigned bool) bool {
	srv := c.l.srv
	if srv.cfg.redirectBy == "" || version < mqttcodec.Version5 {
		return false
	}
	key := c.shardKey(clientID, assigned)
	if key == "" {
		return false
	}
	addr, stable, self := srv.shardOwner(key, false)
	if self || addr == "" {
		return false
	}
	reason := mqttcodec.UseAnotherServer
	if stable {
		reason = mqttcodec.ServerMoved
	}
	c.refuseWithReference(reason, addr)
	return true
}

// redirectDraining answers a v5 CONNECT that arrives during a drain with 0x9C and the address of the client's
// owner among the other live instances. It reports whether it did (false: no redirect configured, a v3
// client, or no other instance: the caller refuses with 0x88). Runs on the loop.
func (c *conn) redirectDraining(p *mqttcodec.Connect) bool {
	srv := c.l.srv
	if srv.cfg.redirectBy == "" || p.Version < mqttcodec.Version5 {
		return false
	}
	addr, _, _ := srv.shardOwner(c.shardKey(string(p.ClientID), false), true)
	if addr == "" {
		return false
	}
	c.refuseWithReference(mqttcodec.UseAnotherServer, addr)
	return true
}

func (c *conn) refuseWithReference(reason mqttcodec.ReasonCode, addr string) {
	var props mqttcodec.Properties
	props.ServerReference = []byte(addr) // Server Reference with 0x9C / 0x9D (MQTT 5 §3.2.2.3.18, §4.11: no numbered statement)
	props.Set(mqttcodec.PropServerReference)
	c.l.srv.metrics.connectRefused(reason)
	c.writeConnack(mqttcodec.Version5, false, reason, &props)
	c.closeLinger() // linger.go
}

// drainTarget is where a drain sends c: its owner among the other live instances, or "" (tell it 0x8B).
// Runs on c's loop.
func (c *conn) drainTarget() string {
	srv := c.l.srv
	if srv.cfg.redirectBy == "" || c.version < mqttcodec.Version5 || c.sess == nil {
		return ""
	}
	addr, _, _ := srv.shardOwner(c.shardKey(c.sess.id, false), true)
	return addr
}

// announceDraining writes this instance's heartbeat marked draining and waits (up to a second) until it has
// read it back from the sessions topic — the others read it at about the same time — so clients the drain
// sends away are not sent back here. Only with redirect configured.
func (srv *Server) announceDraining(ctx context.Context) {
	if srv.cfg.redirectBy == "" {
		return
	}
	srv.store.Put(sessionkey.Instance, srv.store.Instance, srv.heartbeat())
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if p, ok := srv.store.PeerOf(srv.store.Instance); ok && p.Draining {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
