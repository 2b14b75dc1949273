package server_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
	"github.com/ferrymq/ferry/server/auth"
	"github.com/ferrymq/ferry/server/share"
)

// Shared subscriptions, the MQTT side (server/share.go): QoS 0 members, SUBACK and UNSUBSCRIBE, a server
// without them, v3.1.1 and persistent members, authorization, and the options. Helpers: share_test.go.

// QoS 0 shared subscription: each message to one member, none lost on a healthy instance; a QoS 1
// message reaches a QoS 0 member at QoS 0 [MQTT-3.8.4-6].
func TestSharedQoS0(t *testing.T) {
	f := startFerry(t)
	const n = 300
	ms := []*v5{shareMember(t, f.addr, "q0-a", 0), shareMember(t, f.addr, "q0-b", 0)}
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "q0-pub", CleanStart: true})
	tl := newTally(len(ms))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go tl.collect(i, m, stop, &wg)
	}
	publishAll(t, pub, spreadTopics(3), n, 4, 1)
	tl.waitUnique(t, n, 20*time.Second)
	close(stop)
	wg.Wait()
	if tl.total != n {
		t.Errorf("%d deliveries for %d messages", tl.total, n)
	}
	c := tl.counts()
	if c[0] == 0 || c[1] == 0 {
		t.Errorf("messages per member %v: one member got nothing", c)
	}
	pub.pub(t, &paho.Publish{Topic: "jobs/x", QoS: 1, Payload: []byte("q")})
	var got *paho.Publish
	select {
	case got = <-ms[0].msgs:
	case got = <-ms[1].msgs:
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
	if got.QoS != 0 {
		t.Errorf("MQTT-3.8.4-6: QoS %d through a QoS 0 shared subscription", got.QoS)
	}
}

// SUBACK grants shared subscriptions at min(requested, server maximum); retained messages are not sent for
// them; UNSUBSCRIBE removes the member (0x00, then 0x11); --max-share-groups refuses one group too many.
func TestSharedSubackUnsubscribe(t *testing.T) {
	f := startFerry(t, server.MaximumQoS(1), server.Share(share.MaxGroups(2)))
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "sa-pub", CleanStart: true})
	// The watcher getting the retained message live shows the shared reader is past it: a subscription made
	// before that would get it live too (as any subscription does with what the reader reads after it), which is
	// not the retained copy this test is about.
	watch := dialV5(t, f.addr, &paho.Connect{ClientID: "sa-watch", CleanStart: true})
	watch.sub(t, paho.SubscribeOptions{Topic: "jobs/kept", QoS: 1})
	pub.pub(t, &paho.Publish{Topic: "jobs/kept", QoS: 1, Retain: true, Payload: []byte("retained")})
	if m := watch.next(t); string(m.Payload) != "retained" {
		t.Fatalf("watcher got %q", m.Payload)
	}
	c := dialV5(t, f.addr, &paho.Connect{ClientID: "sa", CleanStart: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "$share/g1/jobs/#", QoS: 2}, {Topic: "$share/g2/jobs/#", QoS: 0}, {Topic: "$share/g3/jobs/#", QoS: 1},
	}})
	if sa == nil {
		t.Fatalf("subscribe: %v", err)
	}
	want := []byte{1, 0, byte(mqttcodec.QuotaExceeded)}
	if string(sa.Reasons) != string(want) {
		t.Fatalf("SUBACK reasons %v, want %v", sa.Reasons, want)
	}
	c.none(t, 300*time.Millisecond) // no retained message for a shared subscription
	// Both groups take the message: each share group is a subscription of its own.
	pub.pub(t, &paho.Publish{Topic: "jobs/1", QoS: 1, Payload: []byte("one")})
	for i := 0; i < 2; i++ {
		if m := c.next(t); string(m.Payload) != "one" {
			t.Fatalf("got %q", m.Payload)
		}
	}
	c.none(t, 200*time.Millisecond)
	ua, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"$share/g1/jobs/#"}})
	if err != nil || len(ua.Reasons) != 1 || ua.Reasons[0] != 0 {
		t.Fatalf("UNSUBACK %v, %v", ua, err)
	}
	ua, _ = c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"$share/g1/jobs/#"}})
	if ua == nil || len(ua.Reasons) != 1 || ua.Reasons[0] != byte(mqttcodec.NoSubscriptionExisted) {
		t.Fatalf("second UNSUBACK %v, want 0x11", ua)
	}
	pub.pub(t, &paho.Publish{Topic: "jobs/2", QoS: 1, Payload: []byte("two")})
	if m := c.next(t); string(m.Payload) != "two" {
		t.Fatalf("got %q", m.Payload)
	}
	c.none(t, 300*time.Millisecond) // only g2 is left
	// The freed group slot can be used again.
	if sa := c.sub(t, paho.SubscribeOptions{Topic: "$share/g3/jobs/#", QoS: 1}); sa.Reasons[0] != 1 {
		t.Fatalf("SUBACK %v after a group was freed", sa.Reasons)
	}
}

// With shared subscriptions off, CONNACK says so and SUBSCRIBE is refused (v3: 0x80).
func TestSharedDisabled(t *testing.T) {
	f := startFerry(t, server.Share(share.Enabled(false)))
	c := dialV5(t, f.addr, &paho.Connect{ClientID: "off", CleanStart: true})
	if c.connack.Properties.SharedSubAvailable {
		t.Fatal("CONNACK says Shared Subscription Available = 1 with shared subscriptions off")
	}
	v3 := dialV3(t, f.addr, "off-v3", true, nil)
	tok := v3.Subscribe("$share/g/x", 1, nil)
	if !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("no SUBACK")
	}
	if r := tok.(*mqtt.SubscribeToken).Result()["x"]; r != 0x80 {
		t.Fatalf("v3 SUBACK return code %#x, want 0x80", r)
	}
}

// A v3.1.1 client can be a member, next to a v5 one.
func TestSharedV3Member(t *testing.T) {
	f := startFerry(t)
	const n = 200
	got3 := make(chan string, n)
	v3 := dialV3(t, f.addr, "v3-worker", true, func(_ mqtt.Client, m mqtt.Message) { got3 <- string(m.Payload()) })
	if tok := v3.Subscribe(shareFilter, 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 subscribe: %v", tok.Error())
	}
	if r := tok3(v3); r != 1 {
		t.Fatalf("v3 SUBACK %d, want 1", r)
	}
	m5 := shareMember(t, f.addr, "v5-worker", 1)
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "v3-boss", CleanStart: true})
	publishAll(t, pub, spreadTopics(3), n, 4, 1)
	seen := map[string]int{}
	n3, n5 := 0, 0
	deadline := time.After(20 * time.Second)
	for len(seen) < n {
		select {
		case p := <-got3:
			seen[p]++
			n3++
		case m := <-m5.msgs:
			seen[string(m.Payload)]++
			n5++
		case <-deadline:
			t.Fatalf("%d of %d messages arrived", len(seen), n)
		}
	}
	if n3+n5 != n || n3 == 0 || n5 == 0 {
		t.Errorf("v3 member got %d, v5 member %d, of %d messages", n3, n5, n)
	}
}

func tok3(c mqtt.Client) byte {
	tok := c.Subscribe(shareFilter, 1, nil) // re-subscribing replaces the membership
	tok.WaitTimeout(5 * time.Second)
	return tok.(*mqtt.SubscribeToken).Result()["jobs/#"] // paho keys it by the filter without "$share/{name}/"
}

// A persistent session keeps its shared subscription: after a reconnect it is a member again without
// subscribing, and while it was away the other member got everything.
func TestSharedPersistentMember(t *testing.T) {
	f := startFerry(t)
	other := shareMember(t, f.addr, "always", 1)
	c := dialV5(t, f.addr, persistent("sometimes", true))
	c.sub(t, paho.SubscribeOptions{Topic: shareFilter, QoS: 1})
	_ = c.Disconnect(&paho.Disconnect{})
	time.Sleep(100 * time.Millisecond)
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "p-boss", CleanStart: true})
	for i := 0; i < 20; i++ {
		pub.pub(t, &paho.Publish{Topic: "jobs/a", QoS: 1, Payload: []byte(strconv.Itoa(i))})
	}
	for i := 0; i < 20; i++ {
		other.next(t)
	}
	back := dialV5(t, f.addr, persistent("sometimes", false))
	if !back.connack.SessionPresent {
		t.Fatal("session not present")
	}
	back.none(t, 300*time.Millisecond) // nothing replayed for a shared subscription
	for i := 0; i < 200; i++ {
		pub.pub(t, &paho.Publish{Topic: "jobs/b", QoS: 1, Payload: []byte(strconv.Itoa(i))})
	}
	deadline := time.After(10 * time.Second)
	gotBack := 0
	for total := 0; total < 200; total++ {
		select {
		case <-back.msgs:
			gotBack++
		case <-other.msgs:
		case <-deadline:
			t.Fatalf("%d of 200 messages arrived", total)
		}
	}
	if gotBack == 0 {
		t.Fatal("the resumed persistent member got none of 200 messages")
	}
}

// A shared subscription is authorized on its filter, not on the "$share/{name}/" prefix: a device may share
// "place/dev1/#" but not "place/dev2/#"; the share name plays no part.
func TestSharedAuthorization(t *testing.T) {
	f, _ := authFerry(t, auth.Settings{Issuer: "ferry-test", Audience: "mqtt"}, hmacKeys(t), &authRules)
	dev := mustConnect(t, f.addr, withPassword("dev1", hs(t, nil)))
	sa, err := dev.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "$share/g/place/dev1/#", QoS: 1}, {Topic: "$share/g/place/dev2/#", QoS: 1},
		{Topic: "$share/place/#", QoS: 1}, {Topic: "$share/dev1/broadcast/#", QoS: 0}}})
	if sa == nil {
		t.Fatalf("subscribe: %v", err)
	}
	want := []byte{1, 0x87, 0x87, 0}
	if string(sa.Reasons) != string(want) {
		t.Fatalf("SUBACK % x, want % x", sa.Reasons, want)
	}
	admin := mustConnect(t, f.addr, withPassword("admin", hs(t, map[string]any{"sub": "ops", "roles": []string{"admin"}})))
	admin.pub(t, &paho.Publish{Topic: "place/dev2/x", QoS: 1, Payload: []byte("theirs")})
	admin.pub(t, &paho.Publish{Topic: "place/dev1/x", QoS: 1, Payload: []byte("mine")})
	if m := dev.next(t); string(m.Payload) != "mine" {
		t.Fatalf("got %q on %s", m.Payload, m.Topic)
	}
	dev.none(t, 300*time.Millisecond)
}

// Bad shared subscription settings are refused, by CheckOptions as by New, each with what is wrong.
func TestShareOptionsRefused(t *testing.T) {
	for _, tc := range []struct {
		opt  server.Opt
		want string
	}{
		{server.Share(share.MaxGroups(-1)), "max share groups must not be negative"},
		{server.Share(share.GroupPrefix("")), "share group prefix must not be empty"},
		{server.Share(share.Timings(0, time.Second, time.Second)), "share group timings"},
		{server.Share(share.Mode("round-robin")), `shared subscription mode "round-robin"`},
		{server.Share(share.DeliveryLimit(10)), "share delivery limit 10: want 1 to 9"},
		{server.Share(share.Hold(0)), "share hold 0s"},
	} {
		err := server.CheckOptions(server.Listen("tcp://127.0.0.1:0"), tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckOptions: %v, want an error saying %q", err, tc.want)
		}
		if _, err := server.New(nil, nil, server.Listen("tcp://127.0.0.1:0"), tc.opt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v, want an error saying %q", err, tc.want)
		}
	}
	// The last setting given wins, as for every option.
	if err := server.CheckOptions(server.Listen("tcp://127.0.0.1:0"), server.Share(share.DeliveryLimit(0)), server.Share(share.DeliveryLimit(9))); err != nil {
		t.Errorf("delivery limit 0 then 9: %v", err)
	}
}
