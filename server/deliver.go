package server

import (
	"time"
	"unsafe"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
)

// aggDelivery folds every subscription of one session that matches a message.
type aggDelivery struct {
	s      *session
	qos    byte
	any    bool // at least one subscription survived No Local
	rap    bool
	subIDs []uint32
}

// add folds one of the session's subscriptions that match m. A No Local subscription does not take the
// publisher's own messages [MQTT-3.8.3-3]; overlapping ones give one delivery at their highest QoS
// [MQTT-3.3.4-2] with every subscription identifier [MQTT-3.3.4-3].
func (a *aggDelivery) add(o *subOpts, sessID string, m *kafkamux.Message) {
	if o.noLocal && m.ClientID == sessID {
		return
	}
	a.any = true
	a.qos = max(a.qos, o.qos)
	a.rap = a.rap || o.retainAsPub
	if o.subID != 0 {
		a.subIDs = append(a.subIDs, o.subID)
	}
}

// delivery is the folded delivery of m at its position in the messages topic, if any subscription took it.
// QoS is min(published, granted); RETAIN is kept only for Retain As Published [MQTT-3.3.1-12]/[MQTT-3.3.1-13].
func (a *aggDelivery) delivery(m *kafkamux.Message, k tp, off int64) (delivery, bool) {
	if !a.any {
		return delivery{}, false
	}
	return delivery{msg: m, qos: min(a.qos, m.QoS), retain: m.Retain && a.rap, topic: k.t, part: k.p, off: off, subIDs: a.subIDs, live: true}, true
}

// onRecord fans one record of the messages topic out to the local sessions whose subscriptions match it. It
// runs on the shared reader's goroutine and must not block: it only queues deliveries and wakes loops.
func (srv *Server) onRecord(part int32, off int64, m *kafkamux.Message) {
	srv.deliverRecord(0, part, off, m)
}

// deliverRecord fans one record of Kafka topic t (0: the messages topic; else a routed one, routing.go) out.
// With route rules, a record whose MQTT topic does not route to t is skipped and counted. Runs on the shared
// reader's goroutine.
func (srv *Server) deliverRecord(t uint16, part int32, off int64, m *kafkamux.Message) {
	srv.metrics.recordsIn.Add(1)
	if m.Fetched != 0 && !m.Timestamp.IsZero() {
		waited := time.Duration(m.Fetched - m.Timestamp.UnixNano())
		srv.metrics.delStage[stageRead].Observe(waited)
		if m.ClientID != "" {
			srv.lag.note(waited, m.Fetched, m.Behind) // readlag.go: only Ferry's own records' timestamps count
		}
	}
	skip := srv.rt != nil && !srv.rt.tbl.RoutesTo(m.Topic, srv.rt.topics.Name(t))
	k := tp{t, part}
	if srv.cfg.payload != nil {
		var now bool
		if m, now = srv.held.Admit(k, off, m, skip); !now {
			return // held for its schema, or behind a record that is (server/payload/hold.go)
		}
	}
	srv.fanOut(k, off, m, skip)
}

// fanOut queues record off of k for the sessions whose subscriptions match, and moves the reader's position
// past it. Runs on the shared reader's goroutine, or on a held partition's releaser (server/payload/hold.go).
func (srv *Server) fanOut(k tp, off int64, m *kafkamux.Message, skip bool) {
	srv.matchMu.Lock()
	defer srv.matchMu.Unlock()
	srv.readPos[k] = off + 1
	if skip {
		srv.metrics.misrouted.Add(1)
		return
	}
	srv.scratch = srv.trie.match(m.Topic, srv.scratch[:0])
	if len(srv.scratch) == 0 {
		return
	}
	srv.gen++
	agg := srv.agg[:0]
	for i := range srv.scratch {
		e := &srv.scratch[i]
		if e.s.matchGen != srv.gen {
			e.s.matchGen = srv.gen
			e.s.matchIdx = int32(len(agg))
			agg = append(agg, aggDelivery{s: e.s})
		}
		if e.s.resuming {
			continue // its replay delivers this record (resume in persist.go)
		}
		agg[e.s.matchIdx].add(&e.subOpts, e.s.id, m)
	}
	for i := range agg {
		a := &agg[i]
		d, ok := a.delivery(m, k, off)
		if !ok {
			continue
		}
		c, dropped := a.s.enqueue(d, srv.cfg.sessionQueue)
		if dropped {
			srv.metrics.dropped(dropQueueFull)
		}
		if c != nil {
			srv.wakeRec.add(c)
		}
		agg[i] = aggDelivery{}
	}
	srv.wakeRec.flush()
	clear(srv.scratch)
	srv.agg = agg[:0]
}

// drain writes queued deliveries while the client's window and the outbound budget allow. Runs on the loop.
//
// The loop's output buffer is flushed to the socket every 64 KiB, under the session lock: a write that fails
// closes the connection at once, and the end of its session waits for the flush (OnClose, conn.flushing).
func (c *conn) drain() {
	sess := c.sess
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.c != c {
		return
	}
	if sess.overflowed {
		sess.overflowed = false
		c.l.srv.metrics.dropped(dropQueueFull)
		c.closeWhy = closeQuota
		c.l.srv.warn("disconnecting a client that does not keep up", "client", sess.id)
		if c.version >= mqttcodec.Version5 {
			c.sendDisconnect(mqttcodec.QuotaExceeded, "session queue full")
		}
		c.close()
		return
	}
	now := time.Now()
	if !c.sendHeld(now) {
		return
	}
	defer c.l.srv.startHeldSave(sess)
	var wall int64 // now in Unix nanoseconds, read once a live delivery is written
	budget := c.l.srv.cfg.outboundBudget
	for sess.queue.len() > 0 {
		if c.gc.OutboundBuffered()+len(c.l.out) >= budget {
			// The client reads slowly; the rest waits in the queue. How long the front has waited so far counts
			// in the loop's delivery lag too: a subscriber that is the instance's bottleneck writes nothing
			// for a while, and a lag taken only from writes would not see its queue (readlag_hold.go).
			if d := sess.queue.front(); d.live && d.msg.Fetched != 0 {
				wall = now.UnixNano()
				c.l.dlag.note(time.Duration(wall-d.msg.Fetched), wall, int64(sess.queue.len()-1))
			}
			break
		}
		d := sess.queue.front()
		if d.qos > 0 && sess.pendingOut() >= int(c.clientRecvMax) {
			break // [MQTT-3.3.4-9] the client's Receive Maximum
		}
		held := holdsPublish(sess, d)
		behind := !held && sess.fl != nil && sess.fl.heldPub > 0
		if behind && (d.qos == 0 || d.share != nil || d.resendID != 0) {
			break // after the held PUBLISHes, in order [MQTT-4.6.0-6]
		}
		if d.resendID != 0 {
			c.resendReplayed(d, now)
			sess.queue.pop()
			continue
		}
		var id uint16
		if d.qos > 0 {
			id = sess.flights().allocID()
		}
		if held || behind {
			// Not on the wire before Kafka holds its packet id and position (flight.hold), or before the held
			// PUBLISH ahead of it (flight.holdBehind): sent by sendHeld.
			sess.fl.add(id, *d, outPublished)
			if e := &sess.fl.out[len(sess.fl.out)-1]; held {
				sess.fl.hold(e)
			} else {
				sess.fl.holdBehind(e)
			}
			sess.queue.pop()
			continue
		}
		if !c.writePublish(d, id, false, now) {
			if id != 0 {
				sess.fl.free(id)
			}
			d.shareDone()
			sess.queue.pop()
			continue
		}
		if d.qos > 0 {
			sess.fl.add(id, *d, outPublished)
		}
		if d.live && d.msg.Fetched != 0 {
			if wall == 0 {
				wall = now.UnixNano()
			}
			w := time.Duration(wall - d.msg.Fetched)
			c.l.srv.metrics.delStage[stageWrite].Observe(w)
			c.l.dlag.note(w, wall, int64(sess.queue.len()-1)) // the loop's delivery lag (readlag_hold.go)
		}
		c.l.srv.metrics.publishesOut[d.qos].Add(1) // before pop, which clears *d
		sess.queue.pop()
		if len(c.l.out) >= 64<<10 {
			if c.flushOut(); c.closed {
				return // the write failed: the socket is closed and the session's end is posted
			}
		}
	}
}

// holdsPublish reports whether delivery d must be held until Kafka holds its packet id: a QoS 2 message at a
// position in a Kafka topic (not retained, not a shared subscription's, not a re-send of a stored one) to a
// persistent session. s.mu is held.
func holdsPublish(s *session, d *delivery) bool {
	return s.ps != nil && d.qos == 2 && d.off >= 0 && d.share == nil && d.resendID == 0
}

// sendHeld writes the held QoS 2 steps whose delivery record Kafka has acknowledged, in order: the PUBLISH
// (no DUP: it was never sent) or the PUBREL. If Kafka failed such a record the connection is closed: the steps
// stay in flight in the session, and its end writes them again. It reports false then. Runs on the loop with
// the session lock held.
func (c *conn) sendHeld(now time.Time) bool {
	f := c.sess.fl
	if f == nil || f.heldPub+f.heldRel == 0 {
		return true
	}
	if f.saveErr != nil {
		c.l.srv.warn("closing a connection: its QoS 2 state could not be written to Kafka", "client", c.sess.id, "err", f.saveErr)
		f.saveErr = nil
		c.closeWhy = closeKafkaError
		if c.version >= mqttcodec.Version5 {
			c.sendDisconnect(mqttcodec.UnspecifiedError, "the session could not be written to Kafka")
			c.closeLinger()
			return false
		}
		c.close()
		return false
	}
	if f.flushed == f.durable {
		return true
	}
	f.flushed = f.durable
	var dropped []uint16
	f.each(func(e *outFlight) {
		if !e.held || e.need > f.durable {
			return
		}
		f.unhold(e)
		if e.state == outReleased {
			c.writeAck(mqttcodec.PUBREL, e.id, mqttcodec.Success, "")
			return
		}
		if !c.writePublish(&e.d, e.id, false, now) {
			dropped = append(dropped, e.id)
			return
		}
		c.l.srv.metrics.publishesOut[e.d.qos].Add(1)
	})
	for _, id := range dropped {
		f.ack(id, outPublished, outDone) // not sent (expired, too large, not authorized): done as if delivered
	}
	return true
}

// resend re-sends, in order, the unacknowledged messages of a resumed session: PUBLISH with DUP for those not
// acknowledged at all, PUBREL for QoS 2 ones that got their PUBREC [MQTT-4.4.0-1]. Runs on the loop.
func (c *conn) resend() {
	sess := c.sess
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.fl == nil {
		return
	}
	now := time.Now()
	var dropped []uint16
	sess.fl.each(func(f *outFlight) {
		if f.held {
			return // not sent yet: sendHeld sends it once Kafka holds it
		}
		switch f.state {
		case outPublished:
			if !c.writePublish(&f.d, f.id, true, now) { // [MQTT-3.3.1-1] DUP on a re-delivery
				dropped = append(dropped, f.id)
			}
		case outReleased:
			c.writeAck(mqttcodec.PUBREL, f.id, mqttcodec.Success, "")
		}
	})
	for _, id := range dropped {
		sess.fl.ack(id, outPublished, outDone) // not sent (expired, too large, not authorized): done as if delivered
	}
}

// writePublish encodes d for this client. It reports false when the message must not be sent: expired
// [MQTT-3.3.2-5] or larger than the client's Maximum Packet Size [MQTT-3.1.2-25], in which case it is dropped
// as if delivered. A v5 client that takes topic aliases gets one (alias_out.go). Runs on the loop with the
// session lock held.
func (c *conn) writePublish(d *delivery, id uint16, dup bool, now time.Time) bool {
	m := d.msg
	if c.auth != nil && !c.mayReceive(m.Topic) {
		return false // outside the client's subscribe privileges (authz.go)
	}
	p := &c.l.pub
	p.Reset()
	p.Topic = bytesOf(m.Topic)
	p.Payload = m.Payload
	p.QoS, p.Retain, p.PacketID, p.Dup = d.qos, d.retain, id, dup
	if !m.ExpiresAt.IsZero() {
		left := m.ExpiresAt.Sub(now)
		if left <= 0 {
			c.l.srv.metrics.dropped(dropExpired)
			return false
		}
		if c.version == mqttcodec.Version5 {
			p.Props.MessageExpiry = uint32((left + time.Second - 1) / time.Second) // [MQTT-3.3.2-6]
			p.Props.Set(mqttcodec.PropMessageExpiry)
		}
	}
	if c.version == mqttcodec.Version5 {
		setMessageProps(&p.Props, m)
		p.Props.SubscriptionIDs = append(p.Props.SubscriptionIDs[:0], d.subIDs...)
		if len(d.subIDs) > 0 {
			p.Props.Set(mqttcodec.PropSubscriptionID)
		}
	}
	alias, known := c.setOutAlias(p, m.Topic) // alias_out.go
	if max := c.clientMaxPacket; max > 0 && mqttcodec.PublishSize(p, c.version) > int(max) {
		c.l.srv.metrics.dropped(dropTooLarge)
		return false // the alias table is left as it was: the client never saw this PUBLISH
	}
	c.l.out = mqttcodec.AppendPublish(c.l.out, p, c.version)
	if alias != 0 {
		c.outAlias.Commit(m.Topic, alias, known)
	}
	return true
}

// setMessageProps sets the v5 properties a message carries from publisher to subscriber [MQTT-3.3.2-4] etc.
// The byte slices alias the message's strings: the encoder only reads them.
func setMessageProps(p *mqttcodec.Properties, m *kafkamux.Message) {
	if m.HasPayloadFormat {
		p.PayloadFormat = m.PayloadFormat
		p.Set(mqttcodec.PropPayloadFormat)
	}
	if m.ContentType != "" {
		p.ContentType = bytesOf(m.ContentType)
		p.Set(mqttcodec.PropContentType)
	}
	if m.ResponseTopic != "" {
		p.ResponseTopic = bytesOf(m.ResponseTopic)
		p.Set(mqttcodec.PropResponseTopic)
	}
	if m.CorrelationData != nil {
		p.CorrelationData = m.CorrelationData
		p.Set(mqttcodec.PropCorrelationData)
	}
	for _, u := range m.UserProps {
		p.User = append(p.User, mqttcodec.UserProperty{Key: bytesOf(u.Key), Value: bytesOf(u.Value)})
	}
}

// bytesOf views a string's bytes without copying. The result must only be read.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// onAck handles PUBACK, PUBREC, PUBREL and PUBCOMP from the client. Runs on the loop.
func (c *conn) onAck(a *mqttcodec.Ack) error {
	sess := c.sess
	switch a.Type {
	case mqttcodec.PUBACK:
		sess.mu.Lock()
		sess.ack(a.PacketID, outPublished, outDone)
		sess.mu.Unlock()
	case mqttcodec.PUBREC:
		sess.mu.Lock()
		next := outReleased
		if a.Reason >= 0x80 {
			next = outDone // [MQTT-4.3.3-4] a PUBREC of 0x80 or above ends the exchange: no PUBREL
		}
		found := sess.ack(a.PacketID, outPublished, next)
		if found && next == outReleased && sess.ps != nil {
			if e := sess.fl.find(a.PacketID); e.d.off >= 0 && e.d.share == nil {
				// Once the client has the PUBREL it may forget the id, so a resume must not send the PUBLISH
				// again: the PUBREL waits until Kafka holds the released state (flight.hold).
				sess.fl.hold(e)
				c.l.srv.startHeldSave(sess)
				sess.mu.Unlock()
				return nil
			}
		}
		if !found {
			// A PUBREC for a message already released: answer again so the client can finish. One whose
			// PUBREL is held gets it when it is sent.
			found = sess.hasState(a.PacketID, outReleased)
			if found && sess.fl.find(a.PacketID).held {
				sess.mu.Unlock()
				return nil
			}
		}
		sess.mu.Unlock()
		if next == outReleased {
			reason := mqttcodec.Success
			if !found {
				reason = mqttcodec.PacketIdentifierNotFound
			}
			c.writeAck(mqttcodec.PUBREL, a.PacketID, reason, "")
		}
	case mqttcodec.PUBCOMP:
		sess.mu.Lock()
		sess.ack(a.PacketID, outReleased, outDone)
		sess.mu.Unlock()
	case mqttcodec.PUBREL:
		sess.mu.Lock()
		found := false
		if sess.fl != nil {
			_, found = sess.fl.qos2In[a.PacketID]
			delete(sess.fl.qos2In, a.PacketID) // [MQTT-4.3.3-12] after the PUBCOMP the packet id is a new message
		}
		persistent := sess.ps != nil
		sess.mu.Unlock()
		if found && persistent {
			c.qos2Released(a.PacketID) // PUBCOMP once the sessions topic forgot the id
			return nil
		}
		reason := mqttcodec.Success
		if !found {
			reason = mqttcodec.PacketIdentifierNotFound
		}
		c.writeAck(mqttcodec.PUBCOMP, a.PacketID, reason, "")
	}
	return nil
}

// resendReplayed sends a replayed message the client had in flight before its session moved here, with its
// original packet id: the PUBLISH again with DUP, or only the PUBREL if the client had sent PUBREC
// [MQTT-4.4.0-1]. Runs on the loop with the session lock held.
func (c *conn) resendReplayed(d *delivery, now time.Time) {
	fl := c.sess.flights()
	id := d.resendID
	if d.released {
		c.writeAck(mqttcodec.PUBREL, id, mqttcodec.Success, "")
		fl.add(id, *d, outReleased)
		return
	}
	if d.qos == 0 || !c.writePublish(d, id, true, now) {
		fl.free(id)
		return
	}
	fl.add(id, *d, outPublished)
}
