package server_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
)

// q2client is a v5 client driven by hand through the QoS 2 handshake, with a persistent session.
type q2client struct {
	*raw
}

func q2connect(t *testing.T, addr string, clean, wantPresent bool) q2client {
	t.Helper()
	return q2client{connectRaw(t, addr, "q2-dev", clean, wantPresent, nil)}
}

// connectRaw connects a hand-driven v5 client with a persistent session (Session Expiry 600 s), changed by mod
// (may be nil), and checks its CONNACK: success, and Session Present as wanted.
func connectRaw(t *testing.T, addr, id string, clean, wantPresent bool, mod func(*mqttcodec.Connect)) *raw {
	t.Helper()
	r := dialRaw(t, addr)
	p := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: 5, CleanStart: clean, KeepAlive: 60, ClientID: []byte(id)}
	p.Props.SessionExpiry = 600
	p.Props.Set(mqttcodec.PropSessionExpiry)
	if mod != nil {
		mod(&p)
	}
	r.send(mqttcodec.AppendConnect(nil, &p))
	fh, body := r.packet()
	var ack mqttcodec.Connack
	if err := ack.Decode(fh, body, 5); err != nil || ack.Reason != 0 {
		t.Fatalf("CONNACK %v %v", ack.Reason, err)
	}
	if ack.SessionPresent != wantPresent {
		t.Fatalf("session present %v, want %v", ack.SessionPresent, wantPresent)
	}
	return r
}

func (c q2client) publish(id uint16, payload string, dup bool) {
	p := mqttcodec.Publish{Topic: []byte("q2/data"), Payload: []byte(payload), QoS: 2, PacketID: id, Dup: dup}
	c.send(mqttcodec.AppendPublish(nil, &p, 5))
}

func (c q2client) pubrel(id uint16) {
	c.send(mqttcodec.AppendAck(nil, &mqttcodec.Ack{Type: mqttcodec.PUBREL, PacketID: id}, 5))
}

// expect reads the next packet and checks its type, packet id and reason.
func (c q2client) expect(typ byte, id uint16, reasons ...mqttcodec.ReasonCode) {
	c.t.Helper()
	fh, body := c.packet()
	var a mqttcodec.Ack
	if fh.Type != typ {
		c.t.Fatalf("got %s, want %s", mqttcodec.TypeName(fh.Type), mqttcodec.TypeName(typ))
	}
	if err := a.Decode(fh, body, 5); err != nil {
		c.t.Fatal(err)
	}
	if a.PacketID != id {
		c.t.Fatalf("%s for packet %d, want %d", mqttcodec.TypeName(typ), a.PacketID, id)
	}
	for _, r := range reasons {
		if a.Reason == r {
			return
		}
	}
	c.t.Fatalf("%s %d reason %s, want one of %v", mqttcodec.TypeName(typ), id, a.Reason, reasons)
}

// countRecords reads the messages topic with the given isolation level and counts the payloads of q2/data.
func countRecords(t *testing.T, kafka string, committed bool, want int) map[string]int {
	t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(kafka), kgo.ConsumeTopics("mqtt-messages"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}
	if committed {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[string]int{}
	n := 0
	deadline := time.Now().Add(15 * time.Second)
	for n < want+1 && time.Now().Before(deadline) { // one more than wanted: a duplicate would show
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if string(r.Key) == "q2/data" {
				seen[string(r.Value)]++
				n++
			}
		})
		cancel()
		if n == want && time.Now().After(deadline.Add(-12*time.Second)) {
			break
		}
	}
	return seen
}

// A QoS 2 message is stored exactly once whatever step of the handshake its instance dies at: the instance is
// stopped between each step and the client goes on with another instance; a read_committed reader counts
// every message exactly once, and a packet id reused after PUBCOMP is a new message.
func TestQoS2ExactlyOnceAcrossInstanceDeaths(t *testing.T) {
	cluster, kafka := startKafka(t)
	var instances []*instance
	next := func() *instance {
		in := &instance{ferry: buildFerry(t, []kafkamux.Opt{kafkamux.Brokers(kafka), kafkamux.TransactionTimeout(2 * time.Second),
			kafkamux.CloseTimeout(time.Second), kafkamux.Transactions(fmt.Sprintf("q2-test-%d", len(instances)))}, nil)}
		t.Cleanup(in.stop)
		instances = append(instances, in)
		return in
	}

	// 1. The message is stored; its PUBREC never reaches the client (the instance dies). The client sends the
	//    PUBLISH again, with DUP, to another instance: PUBREC, not a second copy.
	a := next()
	c := q2connect(t, a.addr, true, false)
	c.publish(1, "m1", false)
	c.expect(mqttcodec.PUBREC, 1, mqttcodec.Success)
	a.crash()
	b := next()
	c = q2connect(t, b.addr, false, true)
	c.publish(1, "m1", true)
	c.expect(mqttcodec.PUBREC, 1, mqttcodec.Success)

	// 2. PUBREC received, the instance dies before PUBREL: the next instance knows the id and completes it.
	c.publish(2, "m2", false)
	c.expect(mqttcodec.PUBREC, 2, mqttcodec.Success)
	c.pubrel(1)
	c.expect(mqttcodec.PUBCOMP, 1, mqttcodec.Success)
	b.crash()
	d := next()
	c = q2connect(t, d.addr, false, true)
	c.pubrel(2)
	c.expect(mqttcodec.PUBCOMP, 2, mqttcodec.Success) // not 0x92: the id came with the session

	// 3. PUBREL sent, the instance dies before the client read PUBCOMP: PUBREL again elsewhere is answered.
	c.publish(3, "m3", false)
	c.expect(mqttcodec.PUBREC, 3, mqttcodec.Success)
	c.pubrel(3)
	c.expect(mqttcodec.PUBCOMP, 3, mqttcodec.Success)
	d.crash()
	e := next()
	c = q2connect(t, e.addr, false, true)
	c.pubrel(3)
	c.expect(mqttcodec.PUBCOMP, 3, mqttcodec.Success, mqttcodec.PacketIdentifierNotFound)

	// 4. A packet id reused after PUBCOMP is a new message, stored.
	c.publish(1, "m4", false)
	c.expect(mqttcodec.PUBREC, 1, mqttcodec.Success)
	c.pubrel(1)
	c.expect(mqttcodec.PUBCOMP, 1, mqttcodec.Success)

	// 5. The instance dies while Kafka commits the message's transaction: the commit never arrives, Kafka
	//    aborts the transaction after its timeout, and the PUBLISH sent again to another instance is stored once.
	var held sync.Once
	heldc := make(chan struct{})
	release := make(chan struct{})
	cluster.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.EndTxnRequest)
		if r.TransactionalID != "q2-test-3" || !r.Commit {
			return nil, nil, false
		}
		cluster.KeepControl()
		held.Do(func() { close(heldc) })
		cluster.SleepControl(func() { <-release })
		return nil, errors.New("the instance is gone"), true // the connection drops: the commit never happened
	})
	c.publish(5, "m5", false)
	select {
	case <-heldc:
	case <-time.After(10 * time.Second):
		t.Fatal("the commit of m5's transaction never reached Kafka")
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		close(release)
	}()
	e.crash()
	f := next()
	c = q2connect(t, f.addr, false, true)
	c.publish(5, "m5", true)
	c.expect(mqttcodec.PUBREC, 5, mqttcodec.Success)
	c.pubrel(5)
	c.expect(mqttcodec.PUBCOMP, 5, mqttcodec.Success)

	got := countRecords(t, kafka, true, 5)
	for _, m := range []string{"m1", "m2", "m3", "m4", "m5"} {
		if got[m] != 1 {
			t.Errorf("read_committed: %s stored %d times, want exactly once (all: %v)", m, got[m], got)
		}
	}
	// The dying instance's transaction (retried until it stopped) left aborted copies of m5 in the log: the
	// reader above skipped them, which is what this test is about.
	if all := countRecords(t, kafka, false, 6); all["m5"] < 2 {
		t.Errorf("read_uncommitted sees m5 %d times; the test wants aborted copies besides the stored one (all: %v)", all["m5"], all)
	}
}

// A QoS 2 publish that waits for lane space (the lane is full) still carries its "q:" record in its message's
// transaction: a crash between the message's commit and a later "q:" record would store the re-sent PUBLISH a
// second time. Each transaction (a KIP-890 producer epoch) holds as many "q:" records as QoS 2 messages.
func TestQoS2QueuedPublishKeepsItsIDInTheTransaction(t *testing.T) {
	_, kafka := startKafka(t)
	f := buildFerryLoops(t, 1, []kafkamux.Opt{kafkamux.Brokers(kafka)}, []offload.Opt{offload.LaneRecords(2), offload.LaneDelay(0)})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = f.srv.Stop(ctx)
		f.mux.Close()
	}()
	c := q2connect(t, f.addr, true, false)
	const n = 60
	var burst []byte
	for i := 1; i <= n; i++ {
		p := mqttcodec.Publish{Topic: []byte("q2/data"), Payload: []byte(fmt.Sprint(i)), QoS: 2, PacketID: uint16(i)}
		burst = mqttcodec.AppendPublish(burst, &p, 5)
	}
	c.send(burst)
	for i := 1; i <= n; i++ {
		c.expect(mqttcodec.PUBREC, uint16(i), mqttcodec.Success)
	}
	if full := f.off.Stats().Full; full == 0 {
		t.Fatal("the lane was never full: the test did not queue a publish")
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ConsumeTopics("mqtt-messages", "mqtt-sessions"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	type txn struct{ msgs, ids int }
	byTxn := map[int16]*txn{}
	msgs, ids := 0, 0
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for (msgs < n || ids < n) && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			tx := byTxn[r.ProducerEpoch]
			if tx == nil {
				tx = &txn{}
				byTxn[r.ProducerEpoch] = tx
			}
			switch {
			case r.Topic == "mqtt-messages" && string(r.Key) == "q2/data":
				tx.msgs++
				msgs++
			case r.Topic == "mqtt-sessions" && len(r.Key) > 2 && string(r.Key[:2]) == "q:" && r.Value != nil:
				tx.ids++
				ids++
			}
		})
	}
	if msgs != n || ids != n {
		t.Fatalf("read %d messages and %d q: records, want %d of each", msgs, ids, n)
	}
	for epoch, tx := range byTxn {
		if tx.msgs != tx.ids {
			t.Errorf("transaction of producer epoch %d: %d QoS 2 messages, %d q: records", epoch, tx.msgs, tx.ids)
		}
	}
}
