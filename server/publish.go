package server

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
)

// Publish request states. The loop and the Kafka callback move a request along with compare-and-swap, so
// exactly one of them releases it.
const (
	reqWaiting  uint32 = iota // accepted from the client, not yet handed to Kafka (the lane was full)
	reqInKafka                // produced, waiting for Kafka's ack
	reqAcked                  // Kafka acked: the PUBACK/PUBREC may be written
	reqFailed                 // Kafka failed the record
	reqOrphaned               // the connection closed while Kafka held the record
	reqDenied                 // refused by authorization (authz.go): only its ack is owed, in order
)

// pubReq is one inbound PUBLISH on its way into Kafka. Its buffer holds the topic and payload copied out of
// gnet's read buffer; the record references that buffer until Kafka's callback, then the request goes back to
// the pool.
type pubReq struct {
	pub     offload.Pub // the message and the storage of its Kafka record, reused with the request
	buf     []byte
	c       *conn
	id      uint16
	qos     byte
	q2Txn   bool                 // QoS 2 of a persistent session: its "q:" record goes in the message's transaction (qos2.go)
	deny    mqttcodec.ReasonCode // reqDenied: the v5 reason of its ack
	denyWhy string
	route   offload.Route // where the record goes (routing.go); zero = the messages topic
	// monoNow timestamps of the publish stages (stages.go): decoded on the loop, handed to the producer,
	// acknowledged by Kafka (written by the Kafka callback before the state swap that publishes it)
	decoded, handed, acked int64
	state                  atomic.Uint32
	err                    error
	doneFn                 func(error)
}

var pubPool sync.Pool

func acquirePub() *pubReq {
	r, _ := pubPool.Get().(*pubReq)
	if r == nil {
		r = &pubReq{}
		r.doneFn = r.complete // bound once per pooled request, not per publish
	}
	return r
}

func releasePub(r *pubReq) {
	buf := r.buf[:0]
	if cap(buf) > 64<<10 {
		buf = nil // do not keep a large payload's buffer in the pool
	}
	pub := r.pub
	pub.Reset()
	*r = pubReq{doneFn: r.doneFn, buf: buf, pub: pub}
	pubPool.Put(r)
}

// complete runs on a Kafka callback goroutine when the record is acked or failed; it must not block.
func (r *pubReq) complete(err error) {
	if r.qos == 0 {
		if err != nil {
			r.c.l.srv.metrics.kafkaErrors.Add(1)
			r.c.l.srv.warn("QoS 0 message not written to Kafka", "err", err)
		}
		releasePub(r)
		return
	}
	c := r.c // read before the swap: once it succeeds, the loop may release r at any moment
	r.acked = monoNow()
	c.l.srv.metrics.pubStage[stageKafka].Observe(time.Duration(r.acked - r.handed))
	next := reqAcked
	if err != nil {
		next = reqFailed
		r.err = err // published to the loop by the swap below
	}
	if !r.state.CompareAndSwap(reqInKafka, next) {
		releasePub(r) // the connection is gone: nobody waits for the ack
		return
	}
	c.l.notify(c)
}

// onPublish handles an inbound PUBLISH. Runs on the loop; p borrows from the read buffer.
func (c *conn) onPublish(p *mqttcodec.Publish) error {
	srv := c.l.srv
	srv.metrics.publishesIn[p.QoS].Add(1)
	if srv.cfg.pubRate > 0 {
		if err := c.publishRate(); err != nil { // --max-publish-rate (limits.go): may pause reading
			return err
		}
	}
	if p.QoS > srv.cfg.maxQoS {
		// [MQTT-3.2.2-11] a QoS above the advertised maximum is a protocol error.
		return refuse(mqttcodec.PUBLISH, mqttcodec.QoSNotSupported, "QoS above the server maximum")
	}
	if err := mqttcodec.CheckClientPublish(p); err != nil {
		return err // [MQTT-3.3.4-6] a client's PUBLISH carries no Subscription Identifier
	}
	topic, err := c.resolveAlias(p)
	if err != nil {
		return err
	}
	sess := c.sess
	if p.QoS > 0 {
		if c.inflightIn() >= int(srv.cfg.receiveMaximum) {
			// [MQTT-3.3.4-7] more unacknowledged QoS>0 publishes than the server's Receive Maximum.
			return refuse(mqttcodec.PUBLISH, mqttcodec.ReceiveMaximumExceeded,
				"more QoS 1/2 publishes in flight than the server's Receive Maximum")
		}
		if p.QoS == 2 {
			sess.mu.Lock()
			dup := false
			if sess.fl != nil {
				_, dup = sess.fl.qos2In[p.PacketID]
			}
			sess.mu.Unlock()
			if dup {
				// [MQTT-4.3.3-10] a re-sent QoS 2 PUBLISH already stored: acknowledge again, do not store twice.
				c.writeAck(mqttcodec.PUBREC, p.PacketID, mqttcodec.Success, "")
				return nil
			}
			if c.inKafka(p.PacketID) {
				return nil // still on its way into Kafka; its PUBREC follows
			}
		}
	}
	if c.auth != nil && !c.mayPublish(topic) {
		return c.denyPublish(p) // authz.go
	}
	var rt offload.Route
	if srv.rt != nil {
		var reason int
		var ok bool
		if rt, reason, ok = srv.routeFor(unsafeString(topic)); !ok {
			return c.refuseRoute(p, reason) // routing.go
		}
	}
	if p.Props.PayloadFormat == 1 && !utf8.Valid(p.Payload) {
		// The payload claims to be UTF-8 and is not (MQTT 5 §3.3.2.3.2: a receiver MAY check it; 0x99):
		// refused, not stored.
		if p.QoS > 0 && c.version == mqttcodec.Version5 {
			c.writeAck(ackFor(p.QoS), p.PacketID, mqttcodec.PayloadFormatInvalid, "payload is not valid UTF-8")
			return nil
		}
		return refuse(mqttcodec.PUBLISH, mqttcodec.PayloadFormatInvalid, "payload is not valid UTF-8")
	}

	now := monoNow()
	if p.QoS == 0 && c.l.shed.qos0(&srv.lag, int64(srv.cfg.readLagLimit), now) {
		srv.metrics.dropped(dropReadLag) // the reader trails Kafka past --read-lag-limit (readlag.go)
		return nil
	}
	r := acquirePub()
	r.c, r.id, r.qos, r.route = c, p.PacketID, p.QoS, rt
	r.decoded = now
	r.buf = append(r.buf[:0], topic...)
	if srv.cfg.payload == nil {
		r.buf = append(r.buf, p.Payload...)
	} else if rule := srv.cfg.payload.Match(unsafeString(topic)); rule < 0 {
		r.buf = append(r.buf, p.Payload...)
	} else if ok, err := c.checkPayload(p, rule, r); !ok { // contract.go: may convert the payload
		releasePub(r)
		return err
	}
	m := &r.pub.Msg
	// The topic aliases the pooled buffer (no allocation): offload copies string bytes into the record during
	// TryPublish and nothing reads m.Topic after the request is released, when the buffer is reused.
	m.Topic = unsafe.String(&r.buf[0], len(topic))
	m.Payload = r.buf[len(topic):]
	m.QoS, m.Retain, m.ClientID = p.QoS, p.Retain, sess.id
	copyProps(m, &p.Props, time.Now())
	if m.Schema != nil && m.Schema.Binary {
		m.HasPayloadFormat = false // converted to Avro or Protobuf, or framed: no longer UTF-8
	}

	// Decided before the publish may queue: a queued QoS 2 publish must carry its "q:" record into its
	// message's transaction too (qos2.go).
	r.q2Txn = c.qos2InTxn(r)
	if c.pq != nil && c.pq.waiting > 0 {
		// Earlier publishes still wait for lane space; this one queues behind them to keep topic order.
		return c.queueOrDrop(r, offload.ErrFull)
	}
	r.state.Store(reqInKafka)
	r.handed = r.decoded // set before the hand-off: the callback may run before tryPublish returns
	if err := c.tryPublish(r); err != nil {
		if !errors.Is(err, offload.ErrFull) {
			releasePub(r)
			e := refuse(mqttcodec.PUBLISH, mqttcodec.UnspecifiedError, "cannot hand publish to Kafka")
			e.Err = err
			return e
		}
		return c.queueOrDrop(r, err)
	}
	if p.QoS > 0 {
		srv.metrics.pubStage[stageQueued].Observe(0)
		c.pushPub(r)
		c.pauseIfFull()
	}
	return nil
}

// queueOrDrop keeps a QoS>0 publish the lane could not take yet; a QoS 0 one is dropped and counted, as QoS 0
// allows, under the reason the lane gave (err: offload.ErrFull or offload.ErrLate). Runs on the loop.
func (c *conn) queueOrDrop(r *pubReq, err error) error {
	if r.qos == 0 {
		reason := dropLaneFull
		if errors.Is(err, offload.ErrLate) {
			reason = dropLaneDelay
		}
		c.l.srv.metrics.dropped(reason)
		releasePub(r)
		return nil
	}
	r.state.Store(reqWaiting)
	c.pushPub(r)
	c.pq.waiting++
	c.l.block(c)
	c.pauseIfFull()
	return nil
}

// pauseIfFull stops reading further packets from a v3 client when the inbound QoS>0 window is full; flushAcks
// resumes. A v5 client was told the window in CONNACK, so it keeps being read and a breach is a protocol error.
func (c *conn) pauseIfFull() {
	// Only publishes still on their way to Kafka count: a QoS 2 id waiting for PUBREL is completed by a packet
	// the client sends, which must still be read.
	if c.version < mqttcodec.Version5 && c.toKafka() >= int(c.l.srv.cfg.receiveMaximum) {
		c.paused = true
	}
}

// pubQueue holds a connection's inbound QoS>0 publishes in arrival order until their ack is written. A
// connection holds one only while it has publishes in it: drained, the queue goes back to its loop's free
// list, so an idle connection holds none, however much it published before. Loop-owned.
type pubQueue struct {
	reqs    []*pubReq
	head    int32
	waiting int32 // entries the lane has not taken yet (state reqWaiting)
}

// pubQueueKeep bounds the loop's free list and the capacity a queue keeps on it.
const pubQueueKeep = 256

// pushPub appends r to c's queue, taking a queue from the loop if c has none. Runs on the loop.
func (c *conn) pushPub(r *pubReq) {
	if c.pq == nil {
		l := c.l
		if n := len(l.freePQ); n > 0 {
			c.pq, l.freePQ[n-1] = l.freePQ[n-1], nil
			l.freePQ = l.freePQ[:n-1]
		} else {
			c.pq = &pubQueue{}
		}
	}
	c.pq.reqs = append(c.pq.reqs, r)
}

// dropPubQueue gives c's (emptied) queue back to its loop. Runs on the loop.
func (c *conn) dropPubQueue() {
	q := c.pq
	c.pq = nil
	clear(q.reqs)
	q.reqs, q.head, q.waiting = q.reqs[:0], 0, 0
	if cap(q.reqs) > pubQueueKeep {
		q.reqs = nil
	}
	if l := c.l; len(l.freePQ) < pubQueueKeep {
		l.freePQ = append(l.freePQ, q)
	}
}

// inflightIn counts inbound QoS>0 publishes not yet completed: waiting for Kafka, or (QoS 2) for PUBREL.
func (c *conn) inflightIn() int {
	n := c.toKafka()
	c.sess.mu.Lock()
	n += c.sess.qos2InCount()
	c.sess.mu.Unlock()
	return n
}

// toKafka counts this connection's QoS>0 publishes not yet acknowledged to the client.
func (c *conn) toKafka() int {
	if c.pq == nil {
		return 0
	}
	return len(c.pq.reqs) - int(c.pq.head)
}

func (c *conn) inKafka(id uint16) bool {
	if c.pq == nil {
		return false
	}
	for _, r := range c.pq.reqs[int(c.pq.head):] {
		if r.id == id && r.qos == 2 {
			return true
		}
	}
	return false
}

// retryWaiting hands publishes the lane refused to Kafka again, in order. Runs on the loop.
func (c *conn) retryWaiting() {
	q := c.pq
	if q == nil {
		return
	}
	for i := int(q.head); i < len(q.reqs) && q.waiting > 0; i++ {
		r := q.reqs[i]
		if r.state.Load() != reqWaiting {
			continue
		}
		r.state.Store(reqInKafka)
		handed := monoNow()
		r.handed = handed
		if err := c.tryPublish(r); err != nil {
			r.state.Store(reqWaiting)
			c.l.block(c)
			return
		}
		c.l.srv.metrics.pubStage[stageQueued].Observe(time.Duration(handed - r.decoded))
		q.waiting--
	}
}

// flushAcks writes the PUBACK/PUBREC of every publish at the head of the queue whose record Kafka has acked,
// in the order the PUBLISHes arrived [MQTT-4.6.0-2]. Runs on the loop.
func (c *conn) flushAcks() {
	q := c.pq
	if q == nil {
		return
	}
	if !c.blocked && q.waiting > 0 {
		c.retryWaiting()
	}
	now := monoNow()
	for int(q.head) < len(q.reqs) && !c.closed {
		r := q.reqs[int(q.head)]
		st := r.state.Load()
		if st != reqAcked && st != reqFailed && st != reqDenied {
			break
		}
		q.reqs[int(q.head)] = nil
		q.head++
		if st == reqDenied {
			c.writeDeniedAck(r.qos, r.id, r.deny, r.denyWhy)
		} else if st == reqFailed {
			c.l.srv.metrics.kafkaErrors.Add(1)
			c.l.srv.warn("message not written to Kafka", "client", c.clientID(), "err", r.err)
			if c.version < mqttcodec.Version5 {
				// A v3 ack cannot say "failed": the connection closes without it, and the client re-sends.
				releasePub(r)
				c.closeWhy = closeKafkaError
				c.close()
				return
			}
			if c.l.srv.kafka.StorageFull() {
				// 0x97: "an implementation or administrative imposed limit has been exceeded" (MQTT 5 §3.4.2.1).
				c.writeAck(ackFor(r.qos), r.id, mqttcodec.QuotaExceeded, "Kafka's storage is full")
			} else {
				c.writeAck(ackFor(r.qos), r.id, mqttcodec.UnspecifiedError, "kafka write failed")
			}
		} else if r.qos == 2 {
			c.sess.mu.Lock()
			fl := c.sess.flights()
			if fl.qos2In == nil {
				fl.qos2In = make(map[uint16]struct{})
			}
			fl.qos2In[r.id] = struct{}{}
			persistent := c.sess.ps != nil
			c.sess.mu.Unlock()
			if persistent {
				c.qos2Stored(r)
			}
			c.writeAck(mqttcodec.PUBREC, r.id, mqttcodec.Success, "")
		} else {
			c.writeAck(mqttcodec.PUBACK, r.id, mqttcodec.Success, "")
		}
		if st == reqAcked {
			c.l.srv.metrics.pubStage[stageAck].Observe(time.Duration(now - r.acked))
		}
		releasePub(r)
	}
	if c.pq == q && int(q.head) == len(q.reqs) {
		c.dropPubQueue() // drained: an idle connection holds no queue
	}
	if c.paused && c.toKafka() < int(c.l.srv.cfg.receiveMaximum) && !c.throttled() {
		c.paused = false // a pause for the publish rate is lifted by the loop's tick (limits.go)
	}
}

// releasePublishes gives back the publishes of a closed connection: those Kafka still holds are released by
// their callback. Runs on the loop.
func (c *conn) releasePublishes() {
	q := c.pq
	if q == nil {
		return
	}
	for i, r := range q.reqs[int(q.head):] {
		q.reqs[int(q.head)+i] = nil
		if r.state.CompareAndSwap(reqInKafka, reqOrphaned) {
			continue
		}
		releasePub(r)
	}
	c.dropPubQueue()
}

func ackFor(qos byte) byte {
	if qos == 2 {
		return mqttcodec.PUBREC
	}
	return mqttcodec.PUBACK
}

// writeAck encodes PUBACK, PUBREC, PUBREL or PUBCOMP. Runs on the loop.
func (c *conn) writeAck(typ byte, id uint16, reason mqttcodec.ReasonCode, why string) {
	a := &c.l.ack
	a.Reset()
	a.Type, a.PacketID, a.Reason = typ, id, reason
	if why != "" && c.reasonStringFits(len(why)) {
		a.Props.ReasonString = []byte(why)
		a.Props.Set(mqttcodec.PropReasonString)
	}
	c.l.out = mqttcodec.AppendAck(c.l.out, a, c.version)
}

// resolveAlias applies an inbound v5 Topic Alias and returns the topic to publish to.
func (c *conn) resolveAlias(p *mqttcodec.Publish) ([]byte, error) {
	if !p.Props.Has(mqttcodec.PropTopicAlias) {
		if len(p.Topic) == 0 {
			return nil, refuse(mqttcodec.PUBLISH, mqttcodec.ProtocolError, "empty topic without a topic alias")
		}
		return p.Topic, nil
	}
	a := p.Props.TopicAlias
	if a == 0 || a > c.l.srv.cfg.topicAliasMax {
		// [MQTT-3.3.2-8] [MQTT-3.3.2-9]
		return nil, refuse(mqttcodec.PUBLISH, mqttcodec.TopicAliasInvalid, "topic alias out of range")
	}
	if len(p.Topic) > 0 {
		if c.aliases == nil {
			c.aliases = make(map[uint16]string)
		}
		held := len(p.Topic) - len(c.aliases[a])
		for _, t := range c.aliases {
			held += len(t)
		}
		if held > c.l.srv.cfg.aliasBytes {
			// Aliases are memory the server keeps for the client: bounded like every other per-connection cost.
			return nil, refuse(mqttcodec.PUBLISH, mqttcodec.QuotaExceeded,
				"topic aliases exceed the connection's budget")
		}
		c.aliases[a] = string(p.Topic) // [MQTT-3.3.2-12] a topic with an alias (re)defines it
		return p.Topic, nil
	}
	t, ok := c.aliases[a]
	if !ok {
		return nil, refuse(mqttcodec.PUBLISH, mqttcodec.ProtocolError,
			"topic alias not defined on this connection")
	}
	return bytesOf(t), nil // only read: onPublish copies it
}

// copyProps copies the v5 message properties that travel with a message (borrowed → owned).
func copyProps(m *kafkamux.Message, p *mqttcodec.Properties, now time.Time) {
	if p.Has(mqttcodec.PropPayloadFormat) {
		m.PayloadFormat, m.HasPayloadFormat = p.PayloadFormat, true
	}
	if len(p.ContentType) > 0 {
		m.ContentType = string(p.ContentType)
	}
	if len(p.ResponseTopic) > 0 {
		m.ResponseTopic = string(p.ResponseTopic)
	}
	if p.Has(mqttcodec.PropCorrelationData) {
		m.CorrelationData = append([]byte(nil), p.CorrelationData...)
	}
	if p.Has(mqttcodec.PropMessageExpiry) {
		m.ExpiresAt = now.Add(time.Duration(p.MessageExpiry) * time.Second)
	}
	for _, u := range p.User {
		m.UserProps = append(m.UserProps, kafkamux.UserProp{Key: string(u.Key), Value: string(u.Value)})
	}
}
