package server

import (
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
)

// onSubscribe handles SUBSCRIBE. Runs on the loop; p borrows from the read buffer.
func (c *conn) onSubscribe(p *mqttcodec.Subscribe) error {
	srv, sess := c.l.srv, c.sess
	var subID uint32
	if len(p.Props.SubscriptionIDs) > 0 {
		subID = p.Props.SubscriptionIDs[0]
	}
	ack := mqttcodec.Suback{PacketID: p.PacketID} // [MQTT-3.8.4-2] same packet id
	var retained []*offload.Message
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
			sess.subs = make(map[string]subOpts)
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
	c.l.out = mqttcodec.AppendSuback(c.l.out, &ack, c.version)
	srv.saveSession(sess) // a persistent session's subscriptions live in Kafka
	for i, m := range retained {
		d := delivery{msg: m, qos: min(m.QoS, grantedFor[i]), retain: true}
		if subID != 0 {
			d.subIDs = []uint32{subID}
		}
		if _, dropped := sess.enqueue(d, srv.cfg.sessionQueue); dropped {
			srv.metrics.dropped(dropQueueFull)
		}
	}
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
	c.l.out = mqttcodec.AppendUnsuback(c.l.out, &ack, c.version) // [MQTT-3.10.4-5] even if nothing was removed
	srv.saveSession(sess)
	return nil
}
