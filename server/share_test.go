package server_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/server"
)

// Shared subscriptions (server/share.go): each message of a share group reaches one member, members get
// fair shares, and a member that leaves loses nothing at QoS 1.

const shareFilter = "$share/workers/jobs/#"

// shareMember dials a v5 client and joins the share group at QoS q.
func shareMember(t *testing.T, addr, id string, q byte) *v5 {
	t.Helper()
	c := dialV5(t, addr, &paho.Connect{ClientID: id, CleanStart: true})
	if !c.connack.Properties.SharedSubAvailable {
		t.Fatal("MQTT-3.2.2: CONNACK says Shared Subscription Available = 0")
	}
	sa := c.sub(t, paho.SubscribeOptions{Topic: shareFilter, QoS: q})
	if len(sa.Reasons) != 1 || sa.Reasons[0] != q {
		t.Fatalf("SUBACK %v, want granted QoS %d", sa.Reasons, q)
	}
	return c
}

// spreadTopics returns n topics under jobs/ that the messages topic's partitioner puts in n different
// partitions (the topic has n), so a test's traffic is spread evenly over them.
func spreadTopics(n int) []string {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("mqtt-messages")
	out := make([]string, n)
	found := 0
	for i := 0; found < n; i++ {
		topic := "jobs/" + strconv.Itoa(i)
		part := p.Partition(&kgo.Record{Key: []byte(topic)}, n)
		if out[part] == "" {
			out[part] = topic
			found++
		}
	}
	return out
}

// publishAll publishes n QoS q messages with payloads "0".."n-1" over topics, from w concurrent publishers.
func publishAll(t *testing.T, pub *v5, topics []string, n, w int, q byte) {
	t.Helper()
	var wg sync.WaitGroup
	for k := 0; k < w; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < n; i += w {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := pub.Publish(ctx, &paho.Publish{Topic: topics[i%len(topics)], QoS: q, Payload: []byte(strconv.Itoa(i))})
				cancel()
				if err != nil {
					t.Errorf("publish %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// tally counts what each member received, by payload.
type tally struct {
	mu    sync.Mutex
	by    []map[string]int // per member
	total int
	srvs  []*server.Server // for a debug dump
}

func newTally(members int) *tally {
	tl := &tally{by: make([]map[string]int, members)}
	for i := range tl.by {
		tl.by[i] = map[string]int{}
	}
	return tl
}

// collect moves member i's messages into the tally until stop.
func (tl *tally) collect(i int, c *v5, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case m := <-c.msgs:
			tl.mu.Lock()
			tl.by[i][string(m.Payload)]++
			tl.total++
			tl.mu.Unlock()
		case <-stop:
			return
		}
	}
}

func (tl *tally) unique() int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	seen := map[string]bool{}
	for _, m := range tl.by {
		for p := range m {
			seen[p] = true
		}
	}
	return len(seen)
}

// waitUnique waits until n distinct payloads arrived, then a little longer for stray duplicates.
func (tl *tally) waitUnique(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for tl.unique() < n {
		if time.Now().After(deadline) {
			tl.mu.Lock()
			seen := map[string]bool{}
			for _, m := range tl.by {
				for p := range m {
					seen[p] = true
				}
			}
			tl.mu.Unlock()
			var missing []int
			for i := 0; i < n; i++ {
				if !seen[strconv.Itoa(i)] {
					missing = append(missing, i)
				}
			}
			for _, s := range tl.srvs {
				t.Logf("%+v", s.ShareStats())
			}
			t.Fatalf("%d of %d messages arrived (counts %v); missing %v", tl.unique(), n, tl.counts(), missing[:min(len(missing), 40)])
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
}

func (tl *tally) counts() []int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	out := make([]int, len(tl.by))
	for i, m := range tl.by {
		for _, k := range m {
			out[i] += k
		}
	}
	return out
}

// duplicates returns the payloads received more than once overall.
func (tl *tally) duplicates() []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	all := map[string]int{}
	for _, m := range tl.by {
		for p, k := range m {
			all[p] += k
		}
	}
	var d []string
	for p, k := range all {
		if k > 1 {
			d = append(d, p)
		}
	}
	return d
}

// checkFair checks every member got n/members ± 20%.
func checkFair(t *testing.T, counts []int, n int) {
	t.Helper()
	want := float64(n) / float64(len(counts))
	for i, c := range counts {
		if float64(c) < 0.8*want || float64(c) > 1.2*want {
			t.Errorf("member %d got %d messages, want %.0f ± 20%% (all: %v)", i, c, want, counts)
		}
	}
	t.Logf("messages per member: %v (fair share %.0f)", counts, want)
}

// shareExactlyOnce connects members workers of one shared subscription to f, publishes n QoS 1 messages over
// three topics, and checks that each was delivered exactly once in total, within wait. It returns the tally.
func shareExactlyOnce(t *testing.T, f *ferry, members, n int, wait time.Duration) *tally {
	t.Helper()
	ms := make([]*v5, members)
	for i := range ms {
		ms[i] = shareMember(t, f.addr, fmt.Sprintf("worker-%d", i), 1)
	}
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "boss", CleanStart: true})
	tl := newTally(members)
	tl.srvs = []*server.Server{f.srv}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go tl.collect(i, m, stop, &wg)
	}
	publishAll(t, pub, spreadTopics(3), n, 8, 1)
	tl.waitUnique(t, n, wait)
	close(stop)
	wg.Wait()
	if d := tl.duplicates(); len(d) > 0 {
		t.Errorf("%d messages delivered more than once, e.g. %v", len(d), d[:min(len(d), 5)])
	}
	if tl.total != n {
		t.Errorf("%d deliveries for %d messages", tl.total, n)
	}
	return tl
}

// One instance, three members, 3,000 QoS 1 messages: each delivered exactly once in total, ±20% per member.
func TestSharedSingleInstance(t *testing.T) {
	f := startFerry(t)
	const n, members = 3000, 3
	tl := shareExactlyOnce(t, f, members, n, 30*time.Second)
	checkFair(t, tl.counts(), n)
	if st := f.srv.ShareStats(); st.Groups != 1 || st.Members != members {
		t.Errorf("ShareStats %+v, want 1 group of %d members", st, members)
	}
}

// A member leaves mid-run: nothing is lost; the only duplicates are messages it had received and not
// acknowledged when it went, handed to another member [MQTT 5.0 §4.8.2].
func TestSharedMemberLeavesMidRun(t *testing.T) {
	f := startFerry(t)
	sharedLeaver(t, f.addr, f.addr, true, nil, f.srv)
}

// A member that stops acknowledging holds its window full; when its connection drops, every message it
// had not acknowledged goes to the other members (new packet id, DUP=0): nothing is lost, and the
// duplicates are exactly messages it had received without acknowledging.
func TestSharedUnackedHandedOver(t *testing.T) {
	f := startFerry(t)
	sharedLeaver(t, f.addr, f.addr, false, nil, f.srv)
}

// stubbornMember joins the share group with a client that never acknowledges; closing the returned
// connection drops it without DISCONNECT.
func stubbornMember(t *testing.T, addr, id string) (*v5, net.Conn) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &v5{msgs: make(chan *paho.Publish, 100000), discons: make(chan *paho.Disconnect, 4)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:                       conn,
		EnableManualAcknowledgment: true, // and it never acknowledges
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if sa := c.sub(t, paho.SubscribeOptions{Topic: shareFilter, QoS: 1}); sa.Reasons[0] != 1 {
		t.Fatalf("SUBACK %v", sa.Reasons)
	}
	return c, conn
}

// sharedLeaver runs three members, the third (the leaver) on addr2, and ends the leaver's connection once
// a third of the messages have arrived: with DISCONNECT if acks (it acknowledged everything it read), by
// dropping the socket if not (it never acknowledged anything). ready, if set, waits for the group to settle.
func sharedLeaver(t *testing.T, addr1, addr2 string, acks bool, ready func(), srvs ...*server.Server) {
	const n = 3000
	ms := []*v5{shareMember(t, addr1, "stayer-0", 1), shareMember(t, addr1, "stayer-1", 1), nil}
	var leave func()
	if acks {
		ms[2] = shareMember(t, addr2, "leaver", 1)
		leave = func() { _ = ms[2].Disconnect(&paho.Disconnect{ReasonCode: 0x04}) }
	} else {
		var conn net.Conn
		ms[2], conn = stubbornMember(t, addr2, "leaver")
		leave = func() { conn.Close() }
	}
	if ready != nil {
		ready()
	}
	pub := dialV5(t, addr1, &paho.Connect{ClientID: "boss", CleanStart: true})
	tl := newTally(len(ms))
	tl.srvs = srvs
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go tl.collect(i, m, stop, &wg)
	}
	published := make(chan struct{})
	go func() {
		defer close(published)
		publishAll(t, pub, spreadTopics(3), n, 8, 1)
	}()
	for tl.unique() < n/3 {
		time.Sleep(5 * time.Millisecond)
	}
	leave()
	<-published
	tl.waitUnique(t, n, 60*time.Second)
	close(stop)
	wg.Wait()
	counts := tl.counts()
	dups := tl.duplicates()
	for _, p := range dups {
		if tl.by[2][p] == 0 {
			t.Errorf("message %s delivered twice, but not to the member that left", p)
		}
	}
	if counts[2] == 0 {
		t.Error("the leaver got no message before it left: the test did not exercise a leave mid-run")
	}
	var handoffs uint64
	for _, s := range srvs {
		handoffs += s.ShareStats().Handoffs
	}
	t.Logf("messages per member %v (leaver last); unique %d of %d; duplicates %d (received by the leaver before it left); handed off %d",
		counts, tl.unique(), n, len(dups), handoffs)
}

// Two instances on one Kafka, two members on A and one on B: the Kafka consumer group of the share group
// splits the partitions 2:1, so each member still gets a third, and every message is delivered once.
func TestSharedTwoInstances(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	b := startInstance(t, kafka)
	const n = 3000
	ms := []*v5{shareMember(t, a.addr, "w-a0", 1), shareMember(t, a.addr, "w-a1", 1), shareMember(t, b.addr, "w-b0", 1)}
	waitPartitions(t, a.srv, 2)
	waitPartitions(t, b.srv, 1)
	pub := dialV5(t, a.addr, &paho.Connect{ClientID: "boss", CleanStart: true})
	tl := newTally(len(ms))
	tl.srvs = []*server.Server{a.srv, b.srv}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go tl.collect(i, m, stop, &wg)
	}
	publishAll(t, pub, spreadTopics(3), n, 8, 1)
	tl.waitUnique(t, n, 30*time.Second)
	close(stop)
	wg.Wait()
	if d := tl.duplicates(); len(d) > 0 {
		t.Errorf("%d messages delivered more than once, e.g. %v", len(d), d[:min(len(d), 5)])
	}
	if tl.total != n {
		t.Errorf("%d deliveries for %d messages", tl.total, n)
	}
	checkFair(t, tl.counts(), n)
	if c := a.srv.ShareStats().KafkaConnections; c > 4 {
		t.Errorf("one share group holds %d Kafka connections on one broker, want at most 3 (+1 seed while bootstrapping)", c)
	}
}

// The only member on B leaves mid-run: B leaves the Kafka group, A takes its partitions over from the
// committed offsets, and nothing is lost.
func TestSharedTwoInstancesMemberLeaves(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	b := startInstance(t, kafka)
	sharedLeaver(t, a.addr, b.addr, false, func() {
		waitPartitions(t, a.srv, 2)
		waitPartitions(t, b.srv, 1)
	}, a.srv, b.srv)
}

// waitPartitions waits until srv's share groups hold want partitions of the messages topic.
func waitPartitions(t *testing.T, srv *server.Server, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for srv.ShareStats().Partitions != want {
		if time.Now().After(deadline) {
			t.Fatalf("share group holds %d partitions after 20s, want %d", srv.ShareStats().Partitions, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
