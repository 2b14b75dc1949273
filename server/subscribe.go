package server

import (
	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
)

// onSubscribe handles SUBSCRIBE. Runs on the loop; p borrows from the read buffer.
func (c *conn) onSubscribe(p *mqttcodec.Subscribe) error {
	srv, sess := c.l.srv, c.sess
	var subID uint32
	if len(p.Props.SubscriptionIDs) > 0 {
		subID = p.Props.SubscriptionIDs[0]
	}
	ack := mqttcodec.Suback{PacketID: p.PacketID} // [MQTT-3.8.4-2] same packet id
	var retained []*kafkamux.Message
	var grantedFor []byte
	for i := range p.Subs {
		s := &p.Subs[i]
		if mqttcodec.IsShared(s.Filter) {
			ack.Reasons = append(ack.Reasons, c.subscribeShared(s, subID)) // share.go
			continue
		}
		if c.auth != nil && !c.maySubscribe(s.Filter) {
			ack.Reasons = append(ack.Reasons, mqttcodec.NotAuthorized) // authz.go; v3: 0x80
			continue
		}
		granted := min(s.QoS, srv.cfg.maxQoS) // [MQTT-3.8.4-6]
		filter := string(s.Filter)
		sess.mu.Lock()
		_, had := sess.subs[filter]
		full := !had && len(sess.subs) >= srv.cfg.maxSubs
		sess.mu.Unlock()
		if full {
			ack.Reasons = append(ack.Reasons, mqttcodec.QuotaExceeded) // v3: 0x80 (AppendSuback maps it)
			srv.metrics.refusedSubs.Add(1)
			continue
		}
		o := subOpts{qos: granted, noLocal: s.NoLocal, retainAsPub: s.RetainAsPublished,
			retainHandling: s.RetainHandling, subID: subID}
		existed := srv.trie.add(filter, sess, o)
		sess.mu.Lock()
		if sess.subs == nil {
			sess.subs = make(map[string]subOpts, len(p.Subs)) // sized once: the usual SUBSCRIBE is the session's first and only
		}
		sess.subs[filter] = o
		sess.mu.Unlock()
		srv.metrics.subscriptions.Add(1)
		if existed {
			srv.metrics.subscriptions.Add(-1)
		}
		ack.Reasons = append(ack.Reasons, mqttcodec.ReasonCode(granted)) // [MQTT-3.9.3-1] in order
		// [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11] retained messages per Retain Handling.
		if s.RetainHandling == 0 || (s.RetainHandling == 1 && !existed) {
			before := len(retained)
			retained = srv.retainedFor(sess, s.Filter, granted, subID, retained) // held back while loading: retained.go
			for range retained[before:] {
				grantedFor = append(grantedFor, granted)
			}
		}
	}
	start := len(c.l.out)
	c.l.out = mqttcodec.AppendSuback(c.l.out, &ack, c.version)
	var afterAck func()
	if len(retained) > 0 {
		// Retained messages follow the SUBACK, so they wait with it.
		afterAck = func() {
			for i, m := range retained {
				d := delivery{msg: m, qos: min(m.QoS, grantedFor[i]), retain: true}
				if subID != 0 {
					d.subIDs = []uint32{subID}
				}
				if _, dropped := sess.enqueue(d, srv.cfg.sessionQueue); dropped {
					srv.metrics.dropped(dropQueueFull)
				}
			}
		}
	}
	c.ackWhenSaved(start, afterAck) // a persistent session's subscriptions live in Kafka
	return nil
}

// onUnsubscribe handles UNSUBSCRIBE. Runs on the loop; p borrows from the read buffer.
func (c *conn) onUnsubscribe(p *mqttcodec.Unsubscribe) error {
	srv, sess := c.l.srv, c.sess
	ack := mqttcodec.Unsuback{PacketID: p.PacketID} // [MQTT-3.10.4-4]
	for _, f := range p.Filters {
		filter := string(f)
		var removed bool
		if mqttcodec.IsShared(f) {
			removed = srv.leaveShare(filter, sess) // share.go
		} else {
			removed = srv.trie.remove(filter, sess)
		}
		sess.mu.Lock()
		delete(sess.subs, filter)
		sess.mu.Unlock()
		if removed {
			srv.metrics.subscriptions.Add(-1)
			ack.Reasons = append(ack.Reasons, mqttcodec.Success)
		} else {
			ack.Reasons = append(ack.Reasons, mqttcodec.NoSubscriptionExisted)
		}
	}
	start := len(c.l.out)
	c.l.out = mqttcodec.AppendUnsuback(c.l.out, &ack, c.version) // [MQTT-3.10.4-5] even if nothing was removed
	c.ackWhenSaved(start, nil)
	return nil
}

// heldAck is a SUBACK or UNSUBACK held until the session record of its change is in Kafka, or the CONNACK
// of a CONNECT that created or cleared a session (finishConnect).
type heldAck struct {
	pkt     []byte // the encoded ack, copied out of the loop's scratch output
	after   func() // runs on the loop once the ack is written (retained messages of a SUBSCRIBE); may be nil
	connack bool   // a CONNACK (finishConnect): no message may go out before it
}

// ackWhenSaved writes the session record of a SUBSCRIBE or UNSUBSCRIBE whose ack was just appended to the
// loop's output from offset start. A session that ends with its connection has no record: the ack goes out
// now. A persistent session's ack is held until Kafka has acknowledged the record (acks=all; with
// transactions, committed), as a PUBACK is: an instance that dies right after a SUBACK or UNSUBACK cannot take
// the acknowledged change with it. Meanwhile the connection reads no further packet (c.held), so the acks and
// the changes keep the order of the requests, and the loop goes on serving every other connection. If Kafka
// fails the record the connection is closed without the ack (v5: DISCONNECT 0x80 first): the change is not
// acknowledged, and the client's next CONNECT finds the session as Kafka holds it. Runs on the loop.
func (c *conn) ackWhenSaved(start int, after func()) {
	srv, sess, l := c.l.srv, c.sess, c.l
	sess.mu.Lock()
	persistent := sess.ps != nil
	sess.mu.Unlock()
	if !persistent { // nothing to save (saveSession would say so too): no held ack and no callback to allocate
		if after != nil {
			after()
		}
		return
	}
	h := &heldAck{after: after}
	if !srv.saveSession(sess, func(err error) { c.runOnLoop(func() { c.releaseAck(sess, h, err) }) }) {
		if after != nil {
			after()
		}
		return
	}
	h.pkt = append([]byte(nil), l.out[start:]...)
	l.out = l.out[:start]
	c.held = h
}

// releaseAck runs on the loop when the record a held ack waits for is acknowledged or failed: it writes the
// ack and reads on, or ends the connection. Runs on the loop.
func (c *conn) releaseAck(sess *session, h *heldAck, err error) {
	if c.closed || c.held != h || c.sess != sess || c.phase != phaseConnected {
		return // the connection ended (or was taken over) meanwhile: nothing was acknowledged
	}
	c.held = nil
	if err != nil && h.connack {
		// As when the CONNECT's own record cannot be read back in time: the client retries, the session is
		// as Kafka holds it (docs/sessions.md, "Consistency", 3).
		c.l.srv.warn("refusing CONNECT: its session record could not be written to Kafka", "client", sess.id, "err", err)
		c.l.srv.metrics.connectRefused(mqttcodec.ServerUnavailable)
		c.will = nil // a refused CONNECT leaves no will
		c.closeWhy = closeKafkaError
		c.writeConnack(c.version, false, mqttcodec.ServerUnavailable, nil) // v3: return code 3
		c.close()
		return
	}
	if err != nil {
		c.closeWhy = closeKafkaError
		if c.version >= mqttcodec.Version5 {
			c.sendDisconnect(mqttcodec.UnspecifiedError, "the session could not be written to Kafka")
			c.closeLinger() // linger.go
			return
		}
		c.close() // a v3 SUBACK cannot say why and an UNSUBACK has no failure code: no ack at all
		return
	}
	c.l.out = append(c.l.out, h.pkt...)
	if h.after != nil {
		h.after()
	}
	c.service() // the packets the client sent meanwhile
}
