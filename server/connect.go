package server

import (
	"crypto/rand"
	"encoding/hex"
	"maps"
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/sessions"
)

// willMsg is a client's will, copied out of the CONNECT packet.
type willMsg struct {
	msg    *kafkamux.Message
	delay  uint32 // seconds (v5 Will Delay Interval)
	expiry uint32 // Message Expiry Interval of the will, counted from its publication
}

// connectError answers a CONNECT that failed to decode or validate, then closes. Runs on the loop.
func (c *conn) connectError(p *mqttcodec.Connect, err error) error {
	reason := mqttcodec.ReasonOf(err)
	c.l.srv.metrics.connectRefused(reason)
	c.l.srv.debug("refusing CONNECT", "err", err)
	switch {
	case reason == mqttcodec.UnsupportedProtocolVersion:
		// [MQTT-3.1.2-2] an unsupported level gets return code 1 (v3 CONNACK, the form every level can read).
		c.writeConnack(mqttcodec.Version311, false, mqttcodec.UnsupportedProtocolVersion, nil)
	case p.Version == mqttcodec.Version5:
		// [MQTT-4.13.1-1] a v5 client may be told why before the connection closes.
		c.writeConnack(mqttcodec.Version5, false, reason, nil)
	case reason == mqttcodec.ClientIdentifierNotValid:
		c.writeConnack(p.Version, false, reason, nil) // [MQTT-3.1.3-9] return code 2
	}
	c.closeLinger() // the client may have sent more behind its CONNECT: it must read the CONNACK (linger.go)
	return nil
}

// refuseConnect answers a valid CONNECT that is not accepted with a failure CONNACK — reason (a v3 client gets
// the matching return code) and, for a v5 client, why as its reason string when it fits — and closes: lingering,
// since the client may have sent more behind its CONNECT and must read the CONNACK (linger.go). Its will is
// dropped: the connection was never accepted. Runs on the loop.
func (c *conn) refuseConnect(version byte, reason mqttcodec.ReasonCode, why string) {
	c.l.srv.metrics.connectRefused(reason)
	c.will = nil
	var props *mqttcodec.Properties
	if why != "" && version == mqttcodec.Version5 && c.reasonStringFits(len(why)) {
		props = &mqttcodec.Properties{ReasonString: []byte(why)}
		props.Set(mqttcodec.PropReasonString)
	}
	c.writeConnack(version, false, reason, props)
	c.closeLinger()
}

// onConnect accepts a decoded CONNECT. Runs on the loop; p borrows from the read buffer.
func (c *conn) onConnect(p *mqttcodec.Connect) error {
	srv := c.l.srv
	c.version = p.Version
	refuse := func(r mqttcodec.ReasonCode) error {
		c.refuseConnect(p.Version, r, "")
		return nil
	}
	if srv.draining.Load() {
		if c.redirectDraining(p) {
			return nil // 0x9C to another live instance (redirect.go)
		}
		return refuse(mqttcodec.ServerUnavailable) // v3: return code 3
	}
	if !c.pwDone && !c.connectRateOK() { // counted once, not again when a password check resumes the CONNECT
		return refuse(mqttcodec.ConnectionRateExceeded) // per source address (limits.go); v3: return code 3
	}
	if p.Version == mqttcodec.Version5 && p.Props.Has(mqttcodec.PropAuthMethod) {
		return refuse(mqttcodec.BadAuthenticationMethod) // no enhanced authentication method is offered
	}
	if max := srv.cfg.maxConnections; max > 0 && srv.metrics.sessionsConnected.Load() >= int64(max) {
		if p.Version == mqttcodec.Version5 {
			return refuse(mqttcodec.QuotaExceeded)
		}
		return refuse(mqttcodec.ServerUnavailable)
	}
	switch r := c.authenticate(p); r {
	case mqttcodec.Success:
	case authPending:
		return nil // the password is checked off the loop; onConnect runs again then (authz_password.go)
	default:
		return refuse(r) // token, password and will topic (authz.go): 0x86 / 0x87, v3 return code 4 / 5
	}

	var props mqttcodec.Properties
	id := string(p.ClientID)
	if id == "" {
		switch {
		case p.Version == mqttcodec.Version5:
			id = srv.assignID()
			props.AssignedClientID = []byte(id) // [MQTT-3.2.2-16]
			props.Set(mqttcodec.PropAssignedClientID)
		case p.Version == mqttcodec.Version311 && p.CleanStart && srv.cfg.allowEmptyV3ID:
			id = srv.assignID() // [MQTT-3.1.3-6]
		default:
			return refuse(mqttcodec.ClientIdentifierNotValid) // [MQTT-3.1.3-8]
		}
	}

	if c.redirectConnect(p.Version, id, len(p.ClientID) == 0) {
		return nil // another live instance owns the client's shard: 0x9D / 0x9C (redirect.go)
	}

	c.keepAlive = p.KeepAlive
	if ka := srv.cfg.serverKeepAlive; ka != 0 && p.Version == mqttcodec.Version5 {
		c.keepAlive = ka // [MQTT-3.2.2-21]
		props.ServerKeepAlive = ka
		props.Set(mqttcodec.PropServerKeepAlive)
	}
	c.clientRecvMax = 65535
	if p.Props.Has(mqttcodec.PropReceiveMaximum) {
		c.clientRecvMax = p.Props.ReceiveMaximum
	}
	c.clientMaxPacket = p.Props.MaximumPacketSize
	c.clientAliasMax = p.Props.TopicAliasMaximum

	var expiry uint32
	if p.Version == mqttcodec.Version5 {
		expiry = p.Props.SessionExpiry
		if expiry > srv.cfg.maxSessionExpiry {
			expiry = srv.cfg.maxSessionExpiry
			props.SessionExpiry = expiry // the server's choice is announced (MQTT 5 §3.2.2.3.2, no numbered statement)
			props.Set(mqttcodec.PropSessionExpiry)
		}
	} else if !p.CleanStart {
		expiry = srv.cfg.v3SessionExpiry
	}

	if p.WillFlag {
		c.will = copyWill(p, id)
	}

	c.epoch = time.Now().UnixNano()
	pc := pendingConnect{id: id, clean: p.CleanStart, expiry: expiry, version: p.Version, props: props}
	if c.connectUnrecorded(&pc) {
		return nil // nothing to decide on the sessions topic (alone.go); pc stays on the stack
	}
	wait := pc // kept while the session is being found
	return c.connectSession(&wait)
}

// pendingConnect is what a CONNECT asked for, kept while the session is being found.
type pendingConnect struct {
	id      string
	clean   bool
	expiry  uint32
	version byte
	props   mqttcodec.Properties // CONNACK properties decided so far
	will    *sessions.WillRec    // the CONNECT's will, written before its CONNACK goes out; nil if none
}

// finishConnect attaches the session and answers CONNACK. snap is what the sessions topic says of the client
// (nil if nothing). Runs on the loop.
func (c *conn) finishConnect(pc *pendingConnect, snap *sessions.Stored) {
	srv, l := c.l.srv, c.l
	var restore *sessions.Stored
	// The CONNACK of a CONNECT that creates or clears a session waits until Kafka holds that, as a SUBACK
	// waits for its change (ackWhenSaved): an instance that dies right after the CONNACK must not leave Kafka
	// with the old session, or with none. A resumed session's record says what Kafka holds already.
	held := &heldAck{connack: true}
	saved := func(err error) { c.runOnLoop(func() { c.releaseAck(c.sess, held, err) }) }
	wait := false
	if pc.will != nil {
		// So does a CONNECT's will: an instance killed right after the CONNACK must not take it along (nobody
		// could publish it). Two parts: the will's record, and whatever the session waits for (or nothing).
		j := &joinedDone{done: saved}
		j.left.Store(2)
		saved = j.part
		srv.store.PutThen(sessionkey.Will, pc.id, pc.will, j.part)
	}
	if snap != nil {
		switch {
		case pc.clean:
			if snap.Sess != nil || snap.Deliv != nil {
				var done func(error)
				if pc.expiry == 0 {
					done, wait = saved, true // else the new session's record, written after these, is waited for
				}
				srv.store.Put(sessionkey.Delivery, pc.id, nil)
				srv.store.PutThen(sessionkey.Session, pc.id, nil, done) // [MQTT-3.1.2-4] a clean start discards the stored session
			}
		case snap.Sess != nil && !snap.Expired(time.Now()):
			restore = snap
		}
	}
	sess, present, from, resend, newer := srv.attach(c, pc.id, pc.clean, pc.expiry, restore)
	if pc.version < mqttcodec.Version5 && pc.clean {
		present = false // [MQTT-3.2.2-1]
	}
	c.attached(sess)
	if pc.expiry > 0 {
		if present {
			srv.saveSession(sess, nil)
		} else {
			wait = srv.saveSession(sess, saved) // in the same producer and partition after the tombstones above
		}
	}
	if srv.debugOn() {
		srv.debug("client connected", "client", pc.id, "remote", c.remoteAddr().String(), "version", pc.version, "session_present", present, "identity", c.certIdentity())
	}
	if pc.will != nil {
		if !wait {
			saved(nil) // the will's record alone is waited for
		}
		wait = true
	}
	start := len(l.out)
	c.writeConnack(pc.version, present, mqttcodec.Success, &pc.props)
	resume := func() {
		if present {
			c.resend()
		}
		if from != nil {
			srv.startResume(sess, from, resend)
		}
	}
	if newer != 0 {
		go srv.lateTakeover(sess, c, newer) // a newer CONNECT's record was read since completeConnect checked (newest.go)
	}
	if wait {
		// Nothing else goes out before this CONNACK: the messages in flight are re-sent after it.
		held.pkt = append([]byte(nil), l.out[start:]...)
		l.out = l.out[:start]
		held.after = resume
		c.held = held
		return
	}
	resume()
}

// attached makes sess the connection's session: packets are read from now on. Runs on the loop.
func (c *conn) attached(sess *session) {
	c.sess = sess
	c.phase = phaseConnected
	c.lastRead = c.l.now
	if c.keepAlive > 0 {
		c.l.wheel.schedule(c, c.lastRead+(int64(c.keepAlive)*3+1)/2+1)
	}
	c.l.srv.metrics.sessionsConnected.Add(1)
}

// writeConnack encodes a CONNACK for the given protocol version. For v3 the reason is mapped to a v3 return
// code, so a v3 client never receives a v5 byte.
func (c *conn) writeConnack(version byte, present bool, reason mqttcodec.ReasonCode, props *mqttcodec.Properties) {
	var ack mqttcodec.Connack
	ack.SessionPresent = present && reason == mqttcodec.Success // [MQTT-3.2.2-6]
	if version == mqttcodec.Version5 {
		ack.Reason = reason
		if props != nil {
			ack.Props = *props
		}
		if reason == mqttcodec.Success {
			c.l.srv.capabilities(&ack.Props)
		}
	} else {
		ack.Reason = mqttcodec.ReasonCode(mqttcodec.V3ConnackCode(reason))
	}
	c.l.out = mqttcodec.AppendConnack(c.l.out, &ack, version)
}

// capabilities adds the server's v5 capabilities to a successful CONNACK.
func (srv *Server) capabilities(p *mqttcodec.Properties) {
	p.ReceiveMaximum = srv.cfg.receiveMaximum
	p.Set(mqttcodec.PropReceiveMaximum)
	if srv.cfg.maxQoS < 2 {
		p.MaximumQoS = srv.cfg.maxQoS
		p.Set(mqttcodec.PropMaximumQoS)
	}
	p.MaximumPacketSize = uint32(srv.cfg.maxPacketSize)
	p.Set(mqttcodec.PropMaximumPacketSize)
	p.TopicAliasMaximum = srv.cfg.topicAliasMax
	p.Set(mqttcodec.PropTopicAliasMaximum)
	p.SharedSubAvailable = 0
	if srv.shares.Enabled() {
		p.SharedSubAvailable = 1 // share.go
	}
	p.Set(mqttcodec.PropSharedSubAvailable)
	// Retain, wildcard subscriptions and subscription identifiers are available: absent properties say so.
}

// copyWill copies the will out of the borrowed CONNECT bytes.
func copyWill(p *mqttcodec.Connect, id string) *willMsg {
	m := &kafkamux.Message{
		Topic:    string(p.WillTopic),
		Payload:  append([]byte(nil), p.WillPayload...),
		QoS:      p.WillQoS,
		Retain:   p.WillRetain,
		ClientID: id,
	}
	copyProps(m, &p.WillProps, time.Now())
	m.ExpiresAt = time.Time{} // the will's expiry runs from its publication (MQTT 5 §3.1.3.2.4, no numbered statement)
	return &willMsg{msg: m, delay: p.WillProps.WillDelay, expiry: p.WillProps.MessageExpiry}
}

// assignID makes a client id for a client that sent none.
func (srv *Server) assignID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "ferry-" + hex.EncodeToString(b[:])
}

// attach binds c to the session of id, taking it over from another connection of this instance if one holds
// it, or restoring it from the sessions topic (restore non-nil). It reports whether an existing session was
// resumed and, for a restored one, where its replay starts; and newer, the epoch of a newer CONNECT of the
// client read since completeConnect checked, which takes the session over at once (newest.go). Runs on c's
// loop; takes the registry lock, then matchMu and the session lock.
func (srv *Server) attach(c *conn, id string, clean bool, expiry uint32, restore *sessions.Stored) (sess *session, present bool,
	from map[tp]int64, resend map[resendKey]sessions.OutRec, newer int64) {
	srv.regMu.Lock()
	defer srv.regMu.Unlock()
	if c.connectID != "" {
		srv.dropDecidingLocked(id, c)
		newer = c.newer
	}
	old := srv.sessions[id]
	if old != nil {
		old.mu.Lock()
		oc := old.c
		old.c = nil
		old.mu.Unlock()
		if oc != nil {
			srv.metrics.takeovers.Add(1)
			oc.kick(mqttcodec.SessionTakenOver) // [MQTT-3.1.4-3]
		}
		if clean {
			srv.discard(old)
			old = nil
		}
		restore = nil // this instance's own state is newer than the topic's
	}
	present = old != nil
	sess = old
	if sess == nil {
		sess = &session{id: id}
		if restore != nil {
			from, resend = srv.restore(sess, restore)
			present = true
		}
		srv.sessions[id] = sess
	}
	sess.mu.Lock()
	sess.c = c
	sess.expiry = expiry
	if expiry > 0 {
		if sess.ps == nil {
			sess.ps = &persisted{}
		}
		sess.ps.epoch = c.epoch
	} else {
		sess.ps = nil
	}
	sess.mu.Unlock()
	if restore != nil {
		if from == nil {
			from = map[tp]int64{}
		}
		// Live records skip the session until its replay has caught up; messages-topic partitions the stored
		// offsets do not name start where the shared reader is now (routed topics they do not name start where
		// the reader began them: resume in persist.go).
		srv.matchMu.Lock()
		for p, o := range srv.readPos {
			if _, ok := from[p]; !ok && p.t == 0 {
				from[p] = o
			}
		}
		sess.mu.Lock()
		sess.resuming = true
		sess.mu.Unlock()
		srv.matchMu.Unlock()
		for f, o := range sess.subs {
			srv.metrics.subscriptions.Add(1)
			if !isShared(f) {
				srv.trie.add(f, sess, o)
			}
		}
		srv.resumeShares(sess) // share.go
		if sess.ps == nil {
			sess.ps = &persisted{epoch: c.epoch} // the replay keeps its position there even if expiry is now 0
		}
	}
	return sess, present, from, resend, newer
}

// kick disconnects c from another goroutine or loop: it is done on c's own loop (kicked).
func (c *conn) kick(reason mqttcodec.ReasonCode) {
	c.l.post(task{c: c, kind: taskKick, reason: reason})
}

// kicked ends c because its session moved on. Runs on the loop.
func (c *conn) kicked(reason mqttcodec.ReasonCode) {
	if c.closed {
		return // endSession saw the takeover
	}
	if reason == mqttcodec.SessionTakenOver {
		c.claimTakenOverWill(true) // a will of delay 0 is due (wills.go)
	}
	if c.marked && c.sess != nil {
		c.l.srv.store.SettleConn(c.sess.id, c.epoch) // the takeover decided its will: the marker owes none (sessions/conns.go)
	}
	c.disconnect = true // the session moved on: the connection's will is not sent (again)
	if c.version >= mqttcodec.Version5 {
		c.sendDisconnect(reason, "")
		c.closeLinger() // the old client may be sending: it reads 0x8E (linger.go)
		return
	}
	c.close()
}

// discard ends a session for good: its subscriptions leave the trie and its queue is freed. The registry lock
// is held by the caller.
func (srv *Server) discard(sess *session) {
	if srv.sessions[sess.id] == sess {
		delete(srv.sessions, sess.id)
	}
	sess.mu.Lock()
	shared := maps.Clone(sess.subs)
	sess.mu.Unlock()
	srv.leaveShares(sess, shared) // its unacknowledged shared messages go to other members first (share.go)
	sess.mu.Lock()
	subs := sess.subs
	sess.subs = nil
	sess.ended = true
	sess.c = nil
	sess.queue.clear()
	sess.fl = nil
	sess.mu.Unlock()
	for f := range subs {
		srv.trie.remove(f, sess)
	}
}

// endSession runs on the loop when c's socket has closed: the will is scheduled on an abnormal end, and a
// session without expiry ends with its connection.
func (c *conn) endSession() {
	srv := c.l.srv
	c.releasePublishes()
	sess := c.sess
	if sess == nil {
		if c.connectID != "" {
			srv.regMu.Lock()
			srv.dropDecidingLocked(c.connectID, c)
			srv.regMu.Unlock()
			// Closed before its session attached (superseded, refused, or the client left): nothing of it
			// is owed, and its marker, with the will it carries, must not outlive it (sessions/conns.go). The
			// tombstone is written for a connection without a marker too: it ends the wait of a newer CONNECT
			// for this one (newest.go), which its owner record's view otherwise ends only at HandoffTimeout.
			srv.store.UnmarkConn(c.connectID, c.epoch)
		}
		return
	}
	srv.metrics.sessionsConnected.Add(-1)
	sess.mu.Lock()
	if sess.c != c {
		sess.mu.Unlock()            // taken over: the session lives on with its new connection
		c.claimTakenOverWill(false) // it closed before the takeover reached this loop (wills.go)
		if c.marked {
			srv.store.SettleConn(sess.id, c.epoch) // the takeover decided its will: the marker owes none (sessions/conns.go)
		}
		return
	}
	sess.c = nil
	expiry := sess.expiry
	sess.mu.Unlock()
	if c.unrecorded {
		srv.discardOrphan(sess) // nothing of it is in Kafka: nothing to end there (alone.go)
		return
	}
	willDue := c.will != nil && !c.disconnect
	if c.will != nil && c.disconnect {
		srv.store.Put(sessionkey.Will, sess.id, nil) // [MQTT-3.1.2-10] a normal DISCONNECT deletes the will
	}
	var willNow *sessions.WillRec // due at once: not cancelled by a CONNECT that follows (wills_pending.go)
	if willDue && (c.will.delay == 0 || expiry == 0) {
		willNow = newWillRec(c.epoch, c.will)
	}
	if expiry > 0 {
		// The session outlives the connection in Kafka: final offsets, then the end record, which also decides
		// the will (wills.go). It then leaves this instance: the messages published while the client is away
		// stay in Kafka (not in memory), and its next CONNECT — here or anywhere — restores it from the
		// sessions topic and replays them. Its expiry is processed by its sessions partition's processor.
		srv.saveDelivery(sess, true, 0)
		srv.endConnection(sess.id, c.epoch, expiry, willDue, willNow)
		if c.marked {
			srv.store.UnmarkConn(sess.id, c.epoch) // over: after its final records (sessions/conns.go)
		}
		srv.discardOrphan(sess)
		return
	}
	srv.endConnection(sess.id, c.epoch, 0, willDue, willNow)
	if srv.discardOrphan(sess) {
		srv.store.Forget(sess.id, c.epoch, false) // [MQTT-3.1.2-5] the session ends with the connection: nothing stays in Kafka
	}
}

// discardOrphan discards sess unless a connection attached to it meanwhile, and reports whether it did.
func (srv *Server) discardOrphan(sess *session) bool {
	srv.regMu.Lock()
	defer srv.regMu.Unlock()
	sess.mu.Lock()
	orphan := sess.c == nil
	sess.mu.Unlock()
	if orphan {
		srv.discard(sess)
	}
	return orphan
}

// onDisconnect handles a client's DISCONNECT. Runs on the loop.
func (c *conn) onDisconnect(p *mqttcodec.Disconnect) error {
	if c.version == mqttcodec.Version5 && p.Props.Has(mqttcodec.PropSessionExpiry) {
		c.sess.mu.Lock()
		was := c.sess.expiry
		if was == 0 && p.Props.SessionExpiry != 0 {
			c.sess.mu.Unlock()
			// [MQTT-3.14.2-2] a session that was to end with the connection cannot be given an expiry now.
			return refuse(mqttcodec.DISCONNECT, mqttcodec.ProtocolError,
				"session expiry set on DISCONNECT after CONNECT set none")
		}
		c.sess.expiry = min(p.Props.SessionExpiry, c.l.srv.cfg.maxSessionExpiry)
		c.sess.mu.Unlock()
	}
	// [MQTT-3.14.4-3] DISCONNECT 0x04 keeps the will; any other reason deletes it.
	c.disconnect = p.Reason != mqttcodec.DisconnectWithWill
	c.phase = phaseClosing
	c.close() // [MQTT-3.14.4-1]
	return nil
}
