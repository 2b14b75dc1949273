package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
	"github.com/ferrymq/ferry/server/auth"
)

// Redirect (redirect.go): instances on one Kafka shard clients by client id with rendezvous hashing over the
// live instances' advertised addresses. The advertised addresses are names only the test knows ("a.test"),
// as they would be behind NAT: the test maps them to the instances.

// redirectPair starts two instances with redirect by client id and fast heartbeats (dead after 1 s), and
// waits until each has been live for a death window in the other's view, so redirects answer 0x9D.
func redirectPair(t *testing.T) (a, b *instance) {
	_, kafka := startKafka(t)
	opts := func(adv string) []server.Opt {
		return []server.Opt{server.Heartbeats(200*time.Millisecond, time.Second), server.RedirectBy("client-id"),
			server.Advertise(adv)}
	}
	a = startInstance(t, kafka, opts("a.test:1883")...)
	b = startInstance(t, kafka, opts("b.test:1883")...)
	waitStablePeers(t, a, "b.test:1883", b, "a.test:1883")
	return a, b
}

// waitStablePeers waits until a takes b (advertised at bAddr) for a stable live instance and b takes a (at
// aAddr) for one: each has read the other's heartbeats for a whole death window.
func waitStablePeers(t *testing.T, a *instance, bAddr string, b *instance, aAddr string) {
	t.Helper()
	waitFor(t, "both instances see each other live for a death window", func() bool {
		return server.StableShardPeer(a.srv, bAddr) && server.StableShardPeer(b.srv, aAddr)
	})
}

// shardIDs connects client ids to in until it has found n ids it serves and n it redirects with 0x9D, and
// returns them. Every redirect must name want.
func shardIDs(t *testing.T, in *instance, want string, n int) (local, moved []string) {
	t.Helper()
	for i := 0; i < 200 && (len(local) < n || len(moved) < n); i++ {
		id := fmt.Sprintf("dev-%d", i)
		ack := sendConnect(t, dialRaw(t, in.addr), nil, 5, id)
		switch ack.Reason {
		case mqttcodec.Success:
			local = append(local, id)
		case mqttcodec.ServerMoved:
			if ref := string(ack.Props.ServerReference); ref != want || !ack.Props.Has(mqttcodec.PropServerReference) {
				t.Fatalf("%s: 0x9D with Server Reference %q, want %q", id, ref, want)
			}
			moved = append(moved, id)
		default:
			t.Fatalf("%s: CONNACK %s, want success or 0x9D Server Moved", id, ack.Reason)
		}
	}
	if len(local) < n || len(moved) < n {
		t.Fatalf("of 200 client ids, %d served and %d redirected", len(local), len(moved))
	}
	return local, moved
}

// A v5 client whose id hashes to B gets 0x9D + B's address on A, then connects to B; the ids A serves are
// the ones B redirects to A; v3 clients are served where they land.
func TestRedirectByClientID(t *testing.T) {
	a, b := redirectPair(t)
	onA, toB := shardIDs(t, a, "b.test:1883", 3)
	for _, id := range toB {
		if ack := sendConnect(t, dialRaw(t, b.addr), nil, 5, id); ack.Reason != mqttcodec.Success {
			t.Fatalf("%s on its own instance B: CONNACK %s", id, ack.Reason)
		}
	}
	for _, id := range onA {
		ack := sendConnect(t, dialRaw(t, b.addr), nil, 5, id)
		if ack.Reason != mqttcodec.ServerMoved || string(ack.Props.ServerReference) != "a.test:1883" {
			t.Fatalf("%s on B: CONNACK %s to %q, want 0x9D to a.test:1883", id, ack.Reason, ack.Props.ServerReference)
		}
	}
	// v3 cannot be redirected: served on A.
	if ack := sendConnect(t, dialRaw(t, a.addr), nil, 4, toB[0]); ack.Reason != 0 {
		t.Fatalf("v3 client on the other instance: return code %d, want 0", ack.Reason)
	}
	// A server-assigned client id is not sharded.
	for range 5 {
		if ack := sendConnect(t, dialRaw(t, a.addr), nil, 5, ""); ack.Reason != mqttcodec.Success {
			t.Fatalf("empty client id: CONNACK %s", ack.Reason)
		}
	}
	if n := a.srv.Metrics().Snapshot().Refused[mqttcodec.ServerMoved]; n < 3 {
		t.Fatalf("0x9D counted %d times on A", n)
	}
}

// A drain with redirect tells v5 clients DISCONNECT 0x9C with B's address, and answers CONNECTs meanwhile
// with CONNACK 0x9C to B; B then serves every shard.
func TestRedirectDrain(t *testing.T) {
	a, b := redirectPair(t)
	onA, _ := shardIDs(t, a, "b.test:1883", 2)
	r := hostileConnect(t, a.addr, mqttcodec.Version5, onA[0], 60)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.srv.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	fh, body := r.packet()
	var d mqttcodec.Disconnect
	if fh.Type != mqttcodec.DISCONNECT || d.Decode(fh, body, 5) != nil {
		t.Fatalf("got %s, want DISCONNECT", mqttcodec.TypeName(fh.Type))
	}
	if d.Reason != mqttcodec.UseAnotherServer || string(d.Props.ServerReference) != "b.test:1883" {
		t.Fatalf("DISCONNECT %s to %q, want 0x9C Use Another Server to b.test:1883", d.Reason, d.Props.ServerReference)
	}
	if n := a.srv.Metrics().Limits().DrainRedirects; n < 1 { // shardIDs left its own connections open too
		t.Fatalf("drain redirects counted: %d", n)
	}
	ack := sendConnect(t, dialRaw(t, a.addr), nil, 5, onA[1])
	if ack.Reason != mqttcodec.UseAnotherServer || string(ack.Props.ServerReference) != "b.test:1883" {
		t.Fatalf("CONNECT during the drain: CONNACK %s to %q, want 0x9C to b.test:1883", ack.Reason, ack.Props.ServerReference)
	}
	// B stopped sending clients to the draining A: it serves A's shard now.
	for _, id := range onA {
		if ack := sendConnect(t, dialRaw(t, b.addr), nil, 5, id); ack.Reason != mqttcodec.Success {
			t.Fatalf("%s on B after A began draining: CONNACK %s to %q", id, ack.Reason, ack.Props.ServerReference)
		}
	}
}

// When an instance dies, its shard is served by the survivors once its heartbeats have expired.
func TestRedirectInstanceDeath(t *testing.T) {
	a, b := redirectPair(t)
	_, toB := shardIDs(t, a, "b.test:1883", 1)
	start := time.Now()
	b.crash()
	for {
		ack := sendConnect(t, dialRaw(t, a.addr), nil, 5, toB[0])
		if ack.Reason == mqttcodec.Success {
			break
		}
		if time.Since(start) > 30*time.Second { // a bound for "ever", not a timing: the log says how long it took
			t.Fatalf("%s still redirected to the dead instance after %v: CONNACK %s", toB[0], time.Since(start), ack.Reason)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the dead instance's shard served by the survivor %v after the crash (dead after 1 s)", time.Since(start))
}

// --redirect-by identity shards by the authenticated identity (a JWT's sub here): every client id of one
// identity gets the same answer, and an identity's clients are redirected together.
func TestRedirectByIdentity(t *testing.T) {
	_, kafka := startKafka(t)
	pol, err := auth.NewPolicy(auth.Settings{Issuer: "ferry-test", Audience: "mqtt"}, hmacKeys(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	opts := func(adv string) []server.Opt {
		return []server.Opt{server.Heartbeats(200*time.Millisecond, time.Second), server.RedirectBy("identity-pattern"),
			server.Advertise(adv), server.Auth(auth.NewAuthority(pol))}
	}
	a := startInstance(t, kafka, opts("a.test:1883")...)
	b := startInstance(t, kafka, opts("b.test:1883")...)
	waitStablePeers(t, a, "b.test:1883", b, "a.test:1883")
	connect := func(id, identity string) mqttcodec.Connack {
		r := dialRaw(t, a.addr)
		p := mqttcodec.Connect{Version: 5, CleanStart: true, KeepAlive: 30, ClientID: []byte(id),
			PasswordFlag: true, Password: []byte(hs(t, map[string]any{"sub": identity}))}
		r.send(mqttcodec.AppendConnect(nil, &p))
		fh, body := r.packet()
		var ack mqttcodec.Connack
		if fh.Type != mqttcodec.CONNACK || ack.Decode(fh, body, 5) != nil {
			t.Fatalf("got %s, want CONNACK", mqttcodec.TypeName(fh.Type))
		}
		return ack
	}
	seen := map[mqttcodec.ReasonCode]bool{}
	for i := 0; i < 40 && len(seen) < 2; i++ {
		identity := fmt.Sprintf("place-%d", i)
		first := connect("sensor-"+identity, identity).Reason
		for j := range 5 {
			if r := connect(fmt.Sprintf("dev-%d-%d", i, j), identity).Reason; r != first {
				t.Fatalf("identity %s: client ids get CONNACK %s and %s", identity, first, r)
			}
		}
		if first != mqttcodec.Success && first != mqttcodec.ServerMoved {
			t.Fatalf("identity %s: CONNACK %s", identity, first)
		}
		seen[first] = true
	}
	if len(seen) != 2 {
		t.Fatalf("40 identities all got %v on A", seen)
	}
}
