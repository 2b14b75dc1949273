package server_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/server"
	"github.com/ferrymq/ferry/server/share"
)

// Shared subscriptions served by Kafka share groups (server/share/sharegroup.go), on kfake's share groups.

var shareGroupMode = server.Share(share.Mode(share.ModeShareGroup))

// One instance, three members, 3,000 QoS 1 messages: each delivered exactly once in total.
func TestShareGroupSingleInstance(t *testing.T) {
	f := startFerry(t, shareGroupMode)
	const n, members = 3000, 3
	tl := shareExactlyOnce(t, f, members, n, 60*time.Second)
	st := f.srv.ShareStats()
	if st.Mode != share.ModeShareGroup || st.Groups != 1 || st.Members != members {
		t.Errorf("ShareStats %+v, want share-group mode, 1 group of %d members", st, members)
	}
	t.Logf("messages per member %v; %+v", tl.counts(), st)
}

// startShareKafka starts a kfake cluster whose messages topic has one partition, with extra broker configs.
func startShareKafka(t testing.TB, configs map[string]string) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "mqtt-messages"), kfake.BrokerConfigs(configs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

// startShareInstances starts n Ferry instances in share-group mode on the Kafka at addr.
func startShareInstances(t testing.TB, addr string, n int, opts ...server.Opt) []*instance {
	t.Helper()
	out := make([]*instance, n)
	for i := range out {
		in := &instance{ferry: buildFerry(t, []kafkamux.Opt{kafkamux.Brokers(addr)}, nil,
			append([]server.Opt{shareGroupMode}, opts...)...)}
		t.Cleanup(in.stop)
		out[i] = in
	}
	return out
}

func srvsOf(ins []*instance) []*server.Server {
	out := make([]*server.Server, len(ins))
	for i, in := range ins {
		out[i] = in.srv
	}
	return out
}

// publishUntil publishes QoS 1 messages "from".."from+k-1" on jobs/0, in rounds, until done reports true
// or max is reached; it returns the next payload number.
func publishUntil(t *testing.T, pub *v5, from, round, max int, done func() bool) int {
	t.Helper()
	next := from
	for next < max && !done() {
		k := min(round, max-next)
		topics := []string{"jobs/0"}
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next + w; i < next+k; i += 4 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := pub.Publish(ctx, &paho.Publish{Topic: topics[0], QoS: 1, Payload: []byte(strconv.Itoa(i))})
					cancel()
					if err != nil {
						t.Errorf("publish %d: %v", i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		next += k
		time.Sleep(50 * time.Millisecond)
	}
	return next
}

// Three instances, ten members of one share group, a topic of ONE partition: every member receives
// messages (a consumer-group split would feed one instance only), and each message reaches exactly one.
func TestShareGroupTenMembersOnePartition(t *testing.T) {
	ins := startShareInstances(t, startShareKafka(t, nil), 3)
	const members = 10
	ms := make([]*v5, members)
	for i := range ms {
		ms[i] = shareMember(t, ins[i%3].addr, fmt.Sprintf("worker-%d", i), 1)
	}
	pub := dialV5(t, ins[0].addr, &paho.Connect{ClientID: "boss", CleanStart: true})
	tl := newTally(members)
	tl.srvs = srvsOf(ins)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go tl.collect(i, m, stop, &wg)
	}
	allGot := func() bool {
		for _, c := range tl.counts() {
			if c == 0 {
				return false
			}
		}
		return true
	}
	// Rounds of 100 until every member has some (the instances join the share group at their own pace),
	// then at least 2,000 in all.
	n := publishUntil(t, pub, 0, 100, 20000, allGot)
	n = publishUntil(t, pub, n, 100, max(n+100, 2000), func() bool { return false })
	tl.waitUnique(t, n, 60*time.Second)
	close(stop)
	wg.Wait()
	if d := tl.duplicates(); len(d) > 0 {
		t.Errorf("%d messages delivered more than once, e.g. %v", len(d), d[:min(len(d), 5)])
	}
	if tl.total != n {
		t.Errorf("%d deliveries for %d messages", tl.total, n)
	}
	for i, c := range tl.counts() {
		if c == 0 {
			t.Errorf("member %d received nothing (counts %v)", i, tl.counts())
		}
	}
	for _, in := range ins {
		st := in.srv.ShareStats()
		if st.Mode != share.ModeShareGroup || st.KafkaConnections > 4 {
			t.Errorf("ShareStats %+v: want share-group mode and at most 3 Kafka connections (+1 seed while bootstrapping) for one group", st)
		}
	}
	t.Logf("%d messages; per member %v", n, tl.counts())
}

// A member that holds unacknowledged QoS 1 messages is killed (socket closed, no DISCONNECT): its instance
// releases them in Kafka and they arrive at the other members, on any instance. Nothing is lost; the only
// duplicates are messages the killed member had received.
func TestShareGroupKilledMemberReleases(t *testing.T) {
	ins := startShareInstances(t, startShareKafka(t, nil), 3)
	const n = 3000
	ms := []*v5{shareMember(t, ins[0].addr, "stayer-a", 1), shareMember(t, ins[1].addr, "stayer-b", 1), nil}
	var conn net.Conn
	ms[2], conn = stubbornMember(t, ins[2].addr, "victim")
	pub := dialV5(t, ins[0].addr, &paho.Connect{ClientID: "boss", CleanStart: true})
	tl := newTally(len(ms))
	tl.srvs = srvsOf(ins)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go tl.collect(i, m, stop, &wg)
	}
	published := make(chan struct{})
	go func() {
		defer close(published)
		publishAll(t, pub, []string{"jobs/0"}, n, 8, 1)
	}()
	for tl.counts()[2] == 0 {
		select {
		case <-published:
			t.Fatalf("all %d published and the victim received none (counts %v)", n, tl.counts())
		case <-time.After(5 * time.Millisecond):
		}
	}
	time.Sleep(100 * time.Millisecond) // let it hold a few more
	conn.Close()
	<-published
	tl.waitUnique(t, n, 60*time.Second)
	close(stop)
	wg.Wait()
	tl.mu.Lock()
	held := len(tl.by[2])
	var notRedelivered []string
	for p := range tl.by[2] {
		if tl.by[0][p]+tl.by[1][p] == 0 {
			notRedelivered = append(notRedelivered, p)
		}
	}
	tl.mu.Unlock()
	if len(notRedelivered) > 0 {
		t.Errorf("%d messages the killed member held never reached another member, e.g. %v", len(notRedelivered), notRedelivered[:min(5, len(notRedelivered))])
	}
	dups := tl.duplicates()
	for _, p := range dups {
		if tl.by[2][p] == 0 {
			t.Errorf("message %s delivered twice, but not to the killed member", p)
		}
	}
	released := ins[2].srv.ShareStats().Released
	if released == 0 {
		t.Errorf("the killed member's instance released nothing (%+v)", ins[2].srv.ShareStats())
	}
	t.Logf("counts %v; the killed member held %d, %d released by its instance, %d delivered twice", tl.counts(), held, released, len(dups))
}

// A record that keeps coming back (its members die holding it) is rejected after --share-delivery-limit
// deliveries and counted, never looped forever.
func TestShareGroupPoisonRejected(t *testing.T) {
	ins := startShareInstances(t, startShareKafka(t, nil), 1, server.Share(share.DeliveryLimit(2)))
	in := ins[0]
	type member struct {
		c    *v5
		conn net.Conn
	}
	ms := make([]member, 3)
	for i := range ms {
		ms[i].c, ms[i].conn = stubbornMember(t, in.addr, fmt.Sprintf("doomed-%d", i))
	}
	pub := dialV5(t, in.addr, &paho.Connect{ClientID: "boss", CleanStart: true})
	if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: "jobs/poison", QoS: 1, Payload: []byte("poison")}); err != nil {
		t.Fatal(err)
	}
	alive := map[int]bool{0: true, 1: true, 2: true}
	for kill := 1; kill <= 2; kill++ { // deliveries 1 and 2, each to a member that dies holding it
		got := -1
		deadline := time.After(30 * time.Second)
		for got < 0 {
			for i := range ms {
				if !alive[i] {
					continue
				}
				select {
				case <-ms[i].c.msgs:
					got = i
				default:
				}
			}
			if got < 0 {
				select {
				case <-deadline:
					t.Fatalf("delivery %d did not arrive (%+v)", kill, in.srv.ShareStats())
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
		ms[got].conn.Close()
		delete(alive, got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for in.srv.ShareStats().PoisonRejected == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the record was not rejected after 2 deliveries: %+v", in.srv.ShareStats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range alive {
		select {
		case m := <-ms[i].c.msgs:
			t.Errorf("the last member received %q a third time", m.Payload)
		case <-time.After(300 * time.Millisecond):
		}
	}
	t.Logf("%+v", in.srv.ShareStats())
}

// auto picks share groups when the brokers advertise them, consumer groups when they do not (Kafka 3.9).
func TestShareGroupAutoMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []kfake.Opt
		want string
	}{
		{"kfake", nil, share.ModeShareGroup},
		{"kafka-3.9", []kfake.Opt{kfake.MaxVersions(kversion.V3_9_0())}, share.ModeConsumerGroup},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			in := &instance{ferry: buildFerry(t, []kafkamux.Opt{kafkamux.Brokers(c.ListenAddrs()[0])}, nil,
				server.Share(share.Mode(share.ModeAuto)))}
			t.Cleanup(in.stop)
			if got := in.srv.ShareStats().Mode; got != tc.want {
				t.Errorf("mode %q, want %q", got, tc.want)
			}
		})
	}
}

// 100,000 QoS 1 messages through a share group of ten members on three instances, one of which is killed
// (socket closed) mid-run holding unacknowledged messages: none lost; the only duplicates are messages the
// killed member had received (released by its instance). About 5 minutes on 2 shared cores, so it runs only
// with FERRY_SHARE_100K=1 (scripts/share-100k.sh).
func TestShareGroup100k(t *testing.T) {
	if os.Getenv("FERRY_SHARE_100K") != "1" {
		t.Skip("100,000 messages, minutes long: run with FERRY_SHARE_100K=1 (scripts/share-100k.sh)")
	}
	ins := startShareInstances(t, startShareKafka(t, nil), 3)
	const n, members = 100000, 10
	ms := make([]*v5, members)
	var conn net.Conn
	for i := 0; i < members-1; i++ {
		ms[i] = shareMember(t, ins[i%3].addr, fmt.Sprintf("worker-%d", i), 1)
	}
	ms[members-1], conn = stubbornMember(t, ins[2].addr, "victim")
	pub := dialV5(t, ins[0].addr, &paho.Connect{ClientID: "boss", CleanStart: true})
	tl := newTally(members)
	tl.srvs = srvsOf(ins)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go tl.collect(i, m, stop, &wg)
	}
	published := make(chan struct{})
	go func() {
		defer close(published)
		publishAll(t, pub, []string{"jobs/0", "jobs/1", "jobs/2"}, n, 16, 1)
	}()
	for tl.unique() < n/4 || tl.counts()[members-1] == 0 {
		select {
		case <-published:
			if tl.counts()[members-1] == 0 {
				t.Fatalf("all published and the victim received none (counts %v)", tl.counts())
			}
		case <-time.After(10 * time.Millisecond):
		}
		if tl.unique() >= n {
			break
		}
	}
	conn.Close()
	<-published
	tl.waitUnique(t, n, 5*time.Minute)
	close(stop)
	wg.Wait()
	dups := tl.duplicates()
	for _, p := range dups {
		if tl.by[members-1][p] == 0 {
			t.Errorf("message %s delivered twice, but not to the killed member", p)
		}
	}
	var released uint64
	for _, in := range ins {
		released += in.srv.ShareStats().Released
	}
	if uint64(len(dups)) > released {
		t.Errorf("%d duplicates, but only %d records released", len(dups), released)
	}
	t.Logf("%d messages, 0 lost; per member %v; killed member held %d; released %d; duplicates %d", n, tl.counts(), len(tl.by[members-1]), released, len(dups))
}

// Routing in share-group mode: members of $share/g/place/# over two instances receive from a fixed routed
// topic, a templated one created by the test's first publish (found later by discovery and read from its
// earliest record), and the messages topic — each message once in total; a Kafka-born record in the wrong
// routed topic is skipped.
func TestShareGroupRouted(t *testing.T) {
	const filter = "$share/g/place/#"
	rules := []string{"place/{site}/device/#>share-dev-{site}", "place/+/alarm>share-alarms"}
	_, kafka := startKafka(t)
	a := startInstance(t, kafka, server.Routes(rules, false), shareGroupMode)
	b := startInstance(t, kafka, server.Routes(rules, false), shareGroupMode)
	member := func(addr, id string) *v5 {
		c := dialV5(t, addr, &paho.Connect{ClientID: id, CleanStart: true})
		if sa := c.sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1}); sa.Reasons[0] != 1 {
			t.Fatalf("SUBACK %v", sa.Reasons)
		}
		return c
	}
	ms := []*v5{member(a.addr, "rs-a0"), member(a.addr, "rs-a1"), member(b.addr, "rs-b0")}
	const n = 3000
	devs := spreadBy(3, func(i int) string { return "place/x/device/d" + strconv.Itoa(i) })
	alarms := spreadBy(3, func(i int) string { return "place/s" + strconv.Itoa(i) + "/alarm" })
	plain := spreadBy(3, func(i int) string { return "place/other/" + strconv.Itoa(i) }) // no rule: messages topic
	topics := append(append(append([]string{}, devs...), alarms...), plain...)
	tl := newTally(len(ms))
	tl.srvs = []*server.Server{a.srv, b.srv}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go tl.collect(i, m, stop, &wg)
	}
	pub := dialV5(t, a.addr, &paho.Connect{ClientID: "rs-boss", CleanStart: true})
	var pw sync.WaitGroup
	for k := 0; k < 8; k++ {
		pw.Add(1)
		go func() {
			defer pw.Done()
			for i := k; i < n; i += 8 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := pub.Publish(ctx, &paho.Publish{Topic: topics[i%len(topics)], QoS: 1, Payload: []byte(strconv.Itoa(i))})
				cancel()
				if err != nil || r.ReasonCode != 0 {
					t.Errorf("publish %d: %v %v", i, r, err)
					return
				}
			}
		}()
	}
	pw.Wait()
	tl.waitUnique(t, n, 60*time.Second)
	if d := tl.duplicates(); len(d) > 0 {
		t.Errorf("%d messages delivered more than once, e.g. %v", len(d), d[:min(len(d), 5)])
	}
	alarmsDeliveredOnce(t, kafka, alarms, tl, n, 20*time.Second, stop, &wg)
	t.Logf("per member %v", tl.counts())
}

// A slow member (Receive Maximum 2, acknowledging each message late) gets fewer messages than a fast one:
// it is handed records only while its window has room. Nothing is lost or duplicated.
func TestShareGroupSlowMemberGetsFewer(t *testing.T) {
	f := startFerry(t, shareGroupMode)
	fast := shareMember(t, f.addr, "fast", 1)
	conn, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	slow := &v5{msgs: make(chan *paho.Publish, 100000)}
	acks := make(chan *paho.Publish, 100000)
	slow.Client = paho.NewClient(paho.ClientConfig{
		Conn:                       conn,
		EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			slow.msgs <- pr.Packet
			acks <- pr.Packet
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := slow.Connect(ctx, &paho.Connect{ClientID: "slow", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: paho.Uint16(2)}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slow.Disconnect(&paho.Disconnect{}) })
	if sa := slow.sub(t, paho.SubscribeOptions{Topic: shareFilter, QoS: 1}); sa.Reasons[0] != 1 {
		t.Fatalf("SUBACK %v", sa.Reasons)
	}
	stopAck := make(chan struct{})
	defer close(stopAck)
	go func() { // acknowledges each message 20 ms after it arrived
		for {
			select {
			case p := <-acks:
				time.Sleep(20 * time.Millisecond)
				_ = slow.Ack(p)
			case <-stopAck:
				return
			}
		}
	}()
	const n = 1000
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "boss", CleanStart: true})
	tl := newTally(2)
	tl.srvs = []*server.Server{f.srv}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go tl.collect(0, fast, stop, &wg)
	go tl.collect(1, slow, stop, &wg)
	publishAll(t, pub, spreadTopics(3), n, 8, 1)
	tl.waitUnique(t, n, 60*time.Second)
	close(stop)
	wg.Wait()
	counts := tl.counts()
	if d := tl.duplicates(); len(d) > 0 {
		t.Errorf("%d messages delivered more than once", len(d))
	}
	if counts[1] >= counts[0] {
		t.Errorf("the slow member got %d messages, the fast one %d: want fewer for the slow one", counts[1], counts[0])
	}
	t.Logf("fast %d, slow %d", counts[0], counts[1])
}
