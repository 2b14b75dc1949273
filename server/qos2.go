package server

import (
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
	"github.com/ferrymq/ferry/mqttcodec"
)

// Inbound QoS 2 exactly once, across crashes and instances.
//
// A persistent session's inbound QoS 2 message that got its PUBREC and waits for PUBREL is recorded in the
// sessions topic under its own key "q:<client id>\x00<packet id>". With Kafka transactions (the default), that
// record is written in the same transaction as the message itself (offload.Lane.TryPublishWith), so Kafka
// holds both or neither: after any crash, a client that re-sends the PUBLISH (it got no PUBREC) finds the id
// recorded exactly when the message is stored, and gets PUBREC without a second copy. A PUBREL tombstones the
// key, and PUBCOMP is sent only once the tombstone is stored: a client reuses a packet id only after PUBCOMP,
// so a recorded id never stands for an older message. Without transactions the record is written after Kafka
// acknowledged the message: a crash between the two leaves the message stored and the id unrecorded, so a
// re-sent PUBLISH is stored twice (at least once), never lost.
//
// The key is "q:<client id>\x00<packet id>" (internal/sessionkey): a client id never contains U+0000
// [MQTT-1.5.4-2], so the key parses back unambiguously; all keys of a client share its sessions partition
// (kafkamux partitions by the client id part).

// qos2InTxn reports whether a QoS 2 publish of c must carry its "q:" record in the message's transaction.
func (c *conn) qos2InTxn(r *pubReq) bool {
	return r.qos == 2 && c.sess.ps != nil && c.l.srv.kafka.Transactional()
}

// tryPublish hands r to the loop's lane, with its "q:" record when the session needs one. Runs on the loop.
func (c *conn) tryPublish(r *pubReq) error {
	if r.q2Txn {
		return c.l.lane.TryPublishRouted(&r.pub.Msg, r.route, sessionkey.QoS2Key(c.sess.id, r.id), sessionkey.QoS2Value(time.Now()), r.doneFn)
	}
	if r.route.Topic != "" || r.route.HasKey {
		return c.l.lane.TryPublishRouted(&r.pub.Msg, r.route, "", nil, r.doneFn)
	}
	return c.l.lane.TryPublishPub(&r.pub, r.doneFn)
}

// qos2Stored runs on the loop when Kafka stored the QoS 2 message r of a persistent session, before PUBREC:
// the id is known to this instance's index at once (a reconnect here sees it), and written to the topic now if
// the message's transaction did not carry it.
func (c *conn) qos2Stored(r *pubReq) {
	srv := c.l.srv
	srv.store.SetQoS2(c.sess.id, r.id, true)
	if !r.q2Txn {
		srv.store.Write(sessionkey.QoS2Key(c.sess.id, r.id), sessionkey.QoS2Value(time.Now()))
	}
}

// qos2Released runs on the loop for a PUBREL of a persistent session's recorded id: the "q:" key is
// tombstoned, and PUBCOMP follows once Kafka stored the tombstone. If it cannot be stored the connection is
// closed without PUBCOMP: the client sends PUBREL again when it reconnects.
func (c *conn) qos2Released(pid uint16) {
	srv, sess, l := c.l.srv, c.sess, c.l
	srv.store.SetQoS2(sess.id, pid, false)
	srv.kafka.PutSession(sessionkey.QoS2Key(sess.id, pid), nil, func(err error) {
		if err != nil {
			srv.metrics.kafkaErrors.Add(1)
			srv.warn("cannot release a QoS 2 packet id in the sessions topic", "client", sess.id, "err", err)
			sess.mu.Lock()
			if !sess.ended { // a discarded session is gone with its packet ids
				fl := sess.flights()
				if fl.qos2In == nil {
					fl.qos2In = make(map[uint16]struct{})
				}
				fl.qos2In[pid] = struct{}{} // a PUBREL sent again finds it
			}
			sess.mu.Unlock()
		}
		l.post(task{c: c, kind: taskPUBCOMP, sess: sess, pid: pid, err: err})
	})
}

// pubcompStored answers a PUBREL once its release is stored (err nil) with PUBCOMP, or closes the connection
// when it could not be. Runs on the loop (task).
func (c *conn) pubcompStored(sess *session, pid uint16, err error) {
	if c.closed || c.sess != sess {
		return
	}
	if err != nil {
		c.closeWhy = closeKafkaError
		c.close()
		return
	}
	c.writeAck(mqttcodec.PUBCOMP, pid, mqttcodec.Success, "")
	c.flushOut()
}
