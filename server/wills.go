package server

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
)

// Wills are decided by the sessions topic's log, so each is published exactly once whichever instance holds
// the client, and even if that instance dies:
//
//   - a CONNECT with a will writes it as "w:<id>" for the connection's epoch;
//   - a connection's end writes an end record "o:<id>" {connected:false, will: due?}; the holding instance
//     writes it, or — if that instance stopped sending heartbeats — the instance that processes the client's
//     sessions partition writes one for it;
//   - the FIRST end record of an epoch (and claim round) in the partition's log wins: only the instance that
//     wrote it publishes the will, after the Will Delay Interval, unless the client connected again meanwhile,
//     and then tombstones "w:<id>". Every instance reads the same log, so they agree on the winner.
//   - if the winner itself dies before publishing, the partition's processor claims the next round.
//
// Instances write heartbeats "i:<instance id>" every heartbeatEvery; one silent for deadAfter is dead. Sessions
// partition p is processed by the live instance at p mod N in the sorted list of live instances.

// willRec is the value of a "w:" key.
type willRec struct {
	V             int         `json:"v"`
	Epoch         int64       `json:"epoch"`
	Topic         string      `json:"topic"`
	Payload       []byte      `json:"payload"`
	QoS           byte        `json:"qos"`
	Retain        bool        `json:"retain,omitempty"`
	Delay         uint32      `json:"delay,omitempty"` // Will Delay Interval, seconds
	PayloadFormat *byte       `json:"payload_format,omitempty"`
	ContentType   string      `json:"content_type,omitempty"`
	ResponseTopic string      `json:"response_topic,omitempty"`
	Correlation   []byte      `json:"correlation_data,omitempty"`
	Expiry        uint32      `json:"message_expiry,omitempty"` // seconds, from the will's publication
	User          [][2]string `json:"user,omitempty"`
	By            string      `json:"by,omitempty"` // a pending will ("p:"): the instance whose claim wrote it
}

func newWillRec(epoch int64, w *willMsg) *willRec {
	m := w.msg
	r := &willRec{V: recVersion, Epoch: epoch, Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain,
		Delay: w.delay, ContentType: m.ContentType, ResponseTopic: m.ResponseTopic, Correlation: m.CorrelationData,
		Expiry: w.expiry}
	if m.HasPayloadFormat {
		pf := m.PayloadFormat
		r.PayloadFormat = &pf
	}
	for _, u := range m.UserProps {
		r.User = append(r.User, [2]string{u.Key, u.Value})
	}
	return r
}

// message builds the will's message at publication time.
func (r *willRec) message(clientID string, now time.Time) *kafkamux.Message {
	m := &kafkamux.Message{Topic: r.Topic, Payload: r.Payload, QoS: r.QoS, Retain: r.Retain, ClientID: clientID,
		ContentType: r.ContentType, ResponseTopic: r.ResponseTopic, CorrelationData: r.Correlation}
	if r.PayloadFormat != nil {
		m.PayloadFormat, m.HasPayloadFormat = *r.PayloadFormat, true
	}
	if r.Expiry > 0 {
		m.ExpiresAt = now.Add(time.Duration(r.Expiry) * time.Second)
	}
	for _, u := range r.User {
		m.UserProps = append(m.UserProps, kafkamux.UserProp{Key: u[0], Value: u[1]})
	}
	return m
}

// endConnection writes the end record of a connection: the claim that decides its will. A will due at once
// (now non-nil) is written as pending first (claimEnd). Runs on the loop.
func (srv *Server) endConnection(id string, epoch int64, expiry uint32, willDue bool, now *willRec) {
	srv.claimEnd(id, &ownerRec{V: recVersion, Instance: srv.store.instance, Epoch: epoch,
		Connected: false, At: time.Now().UnixMilli(), Expiry: expiry, Will: willDue}, now)
}

// claimEnd writes end record rec of client id's connection. A will due at once (now non-nil) is written
// first as the pending will of the connection ("p:<id>\x00<epoch>"), so that once the claim wins, the will is
// in Kafka until it is published, whoever publishes it (wills_pending.go). Runs on any goroutine.
func (srv *Server) claimEnd(id string, rec *ownerRec, now *willRec) {
	srv.debug("claiming the end of a connection", "client", id, "epoch", rec.Epoch, "round", rec.Round, "will", rec.Will,
		"due_now", now != nil || rec.Now)
	if now == nil && !rec.Now {
		srv.store.put(kindOwner, id, rec)
		return
	}
	k := fenceKey{id, rec.Epoch}
	srv.store.claimWritten(k)
	claim := func() { srv.store.putThen(kindOwner, id, rec, func(error) { srv.store.claimAcked(k) }) }
	if now == nil {
		claim() // the next round of a pending will: its record is in Kafka already
		return
	}
	rec.Now = true
	pw := *now // the index's record is shared: a copy names this claimer
	pw.By = srv.store.instance
	if h := srv.claimHook.Load(); h != nil {
		// Tests: the claimer killed between its two records. The hook runs once Kafka holds the pending will.
		srv.store.putKey(sessionkey.PendingKey(id, rec.Epoch), &pw, func(error) {
			if !(*h)() {
				claim()
			}
		})
		return
	}
	srv.store.putKey(sessionkey.PendingKey(id, rec.Epoch), &pw, nil) // same producer, same partition: before rec
	claim()
}

// claimTakenOverWill claims the end of connection c, whose session another connection took, when its will is
// due at once: a will of delay 0 (a new connection within the delay cancels a delayed one [MQTT-3.1.3-9]),
// unless the client sent DISCONNECT. MQTT 5 publishes it on a takeover (§3.1.4); a 3.1.1 connection's will is
// claimed only if its socket closed without DISCONNECT first (kicked false: it closed before the takeover
// reached its loop). The first end record of the epoch decides, as always, so a will is claimed by the holder
// and by a CONNECT that gave up waiting for it (claimMissedWill) at most once. Runs on c's loop.
func (c *conn) claimTakenOverWill(kicked bool) {
	w := c.will
	if w == nil || c.disconnect || w.delay != 0 || (kicked && c.version < mqttcodec.Version5) || c.sess == nil {
		return
	}
	c.will = nil // once
	sess := c.sess
	sess.mu.Lock()
	expiry := sess.expiry
	sess.mu.Unlock()
	c.l.srv.claimEnd(sess.id, &ownerRec{V: recVersion, Instance: c.l.srv.store.instance, Epoch: c.epoch,
		At: time.Now().UnixMilli(), Expiry: expiry, Will: true}, newWillRec(c.epoch, w))
}

// claimMissedWill runs on the loop of a CONNECT that stopped waiting for the instance holding the client's
// previous connection o to hand the session over (HandoffTimeout): that instance may be dead, and if so
// nobody ends o — the partition processor looks only at the newest connection. A will of delay 0 stored for o
// was due when o broke; it is claimed here with an end record of o's epoch, and published from this instance
// if the claim is the first (a holder that was only slow claims it too: claimTakenOverWill).
func (srv *Server) claimMissedWill(id string, o *ownerRec, prev *stored) {
	w := prev.will
	if w == nil || w.Epoch != o.Epoch || w.Delay != 0 {
		return
	}
	srv.claimEnd(id, &ownerRec{V: recVersion, Instance: srv.store.instance, Epoch: o.Epoch, At: time.Now().UnixMilli(),
		Expiry: o.Expiry, Will: true}, w)
}

// connectionEnded runs on the reader goroutine for the first end record of an epoch and round. If this
// instance wrote it and a will is due, the will is published: at once if it was due at once (its pending
// record, wills_pending.go), else after its delay unless the client came back.
func (srv *Server) connectionEnded(id string, end *ownerRec) {
	if end.Instance != srv.store.instance || !end.Will {
		return
	}
	if end.Now {
		srv.publishPendingOf(id, end)
		return
	}
	st, ok := srv.store.lookup(id)
	if !ok || st.will == nil || st.will.Epoch != end.Epoch {
		return // no will stored for this connection (or already published)
	}
	delay := time.Duration(st.will.Delay) * time.Second
	if exp := time.Duration(end.Expiry) * time.Second; exp < delay {
		delay = exp // [MQTT-3.1.3-9] the will goes out when the delay passes or the session ends
	}
	due := time.UnixMilli(end.At).Add(delay)
	time.AfterFunc(time.Until(due), func() { srv.publishStoredWill(id, end.Epoch) })
}

// publishStoredWill publishes the will of epoch unless the client connected again or the will is gone, then
// tombstones it. The decision is taken once the sessions topic has been read up to its end (a CONNECT on
// another instance a moment ago cancels the will); if it cannot be read, the decision is tried again a second
// later. Runs on a timer goroutine.
func (srv *Server) publishStoredWill(id string, epoch int64) {
	if srv.runCtx.Err() != nil {
		return // stopping: the will stays in Kafka for the next processor
	}
	if !srv.readSessionsUpTo(srv.runCtx) {
		time.AfterFunc(time.Second, func() { srv.publishStoredWill(id, epoch) })
		return
	}
	st, ok := srv.store.lookup(id)
	if !ok || st.will == nil || st.will.Epoch != epoch {
		return
	}
	if st.owner != nil && st.owner.Epoch > epoch {
		return // [MQTT-3.1.3-9] a new connection within the delay cancels the will
	}
	srv.sendWillWith(st.will.message(id, time.Now()), storeKey(kindWill, id)) // the tombstone with the will
}

// heartbeats writes this instance's heartbeat every heartbeatEvery. Runs on its own goroutine until ctx ends;
// the heartbeat is tombstoned at the end. Nothing else runs here, so a slow Kafka read cannot delay a
// heartbeat into a false death.
func (srv *Server) heartbeats(ctx context.Context) {
	t := time.NewTicker(srv.cfg.heartbeatEvery)
	defer t.Stop()
	for {
		srv.store.putThen(kindInstance, srv.store.instance, srv.heartbeat(), srv.heartbeatStored) // with the advertised address (redirect.go)
		select {
		case <-ctx.Done():
			srv.store.put(kindInstance, srv.store.instance, nil)
			return
		case <-t.C:
		}
	}
}

// processor acts for dead instances on the partitions this instance processes, every heartbeatEvery. Runs
// on its own goroutine until ctx ends.
//
// The bound on noticing a death (docs/sessions.md, "Instance death"): an instance's last heartbeat is read
// about when it dies; it counts as dead deadAfter later, which the next round (at most heartbeatEvery after)
// notices. So the end of its connections is claimed within deadAfter + heartbeatEvery of its death, plus the
// Kafka round trips of the round (read the partitions up to their end, write the claim, read it back).
func (srv *Server) processor(ctx context.Context) {
	t := time.NewTicker(srv.cfg.heartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		if srv.readSessionsUpTo(ctx) {
			srv.sessionsRead(start.UnixNano()) // alone.go
			srv.processPartitions(start, time.Now())
		}
	}
}

// readSessionsUpTo waits, at most SessionsReadWait, until the sessions topic has been read up to where it
// ended when called: what a will or expiry decision is taken on (read your writes). It reports false, and
// logs, if that could not be done. Blocks: never on an event loop or the reader goroutine.
func (srv *Server) readSessionsUpTo(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, srv.cfg.sessionsWait)
	defer cancel()
	if err := srv.kafka.ReadUpTo(ctx, srv.kafka.SessionsTopic()); err != nil {
		if ctx.Err() == nil || !errors.Is(err, context.Canceled) {
			srv.warn("deciding no will or expiry now: the sessions topic could not be read up to its end", "err", err)
		}
		return false
	}
	return true
}

// processPartitions claims the ends of connections held by dead instances, and of wills whose publisher died,
// on the sessions partitions this instance processes, and expires sessions whose expiry passed while no
// instance held them. It also claims again the pending wills that nobody is known to have won
// (wills_pending.go): this instance's own, on every partition, and those of dead claimers on its partitions.
// The caller has read the sessions topic up to where it ended at start (readSessionsUpTo).
func (srv *Server) processPartitions(start, now time.Time) {
	deadAfter := srv.cfg.deadAfter
	st := srv.store
	st.mu.Lock()
	live := []string{st.instance}
	lastSeen := map[string]time.Time{}
	for inst, seen := range st.instances {
		lastSeen[inst] = seen
		if inst != st.instance && now.Sub(seen) < deadAfter {
			live = append(live, inst)
		}
	}
	sort.Strings(live)
	alive := func(inst string) bool { return inst == st.instance || now.Sub(lastSeen[inst]) < deadAfter }
	type claim struct {
		id  string
		rec *ownerRec
		now *willRec // a will due at once (claimEnd)
	}
	var claims []claim
	var expired []fenceKey // client id, epoch of its last connection
	settled := st.settledClaims(start)
	for id, c := range st.clients {
		processed := live[int(c.part)%len(live)] == st.instance
		for epoch, p := range c.pending {
			switch {
			case !settled(fenceKey{id, epoch}):
				continue // a claim of this instance is on its way: the log decides it first
			case p.winner != "" && !alive(p.winner) && processed:
				// The instance that won a will due at once died before publishing it: claim the next round.
			case p.claimed:
				continue // the log decided it; a dead winner's is above
			case p.by == st.instance:
				// This instance's claim is in Kafka and was not read: compacted away before the reader got
				// there, or it was never written. Nobody else publishes the will: claim the next round.
			case p.by != "" && !alive(p.by) && processed:
				// Its claimer died between the pending will and the claim, or after a claim nobody read.
			default:
				continue
			}
			claims = append(claims, claim{id, c.pendingClaim(st.instance, epoch, p, now), nil})
		}
		if !processed || c.owner == nil {
			continue
		}
		o := c.owner
		switch {
		case o.Connected && !alive(o.Instance):
			// The holder died. When exactly its connection ended is unknown; counting the Will Delay from now,
			// the detection, never publishes a will early.
			will := c.will != nil && c.will.Epoch == o.Epoch
			var due *willRec
			if will && min(c.will.Delay, o.Expiry) == 0 {
				due = c.will
			}
			claims = append(claims, claim{id, &ownerRec{V: recVersion, Instance: st.instance, Epoch: o.Epoch,
				At: now.UnixMilli(), Expiry: o.Expiry, Will: will}, due})
		case !o.Connected && o.Will && !o.Now && c.will != nil && c.will.Epoch == o.Epoch && !alive(o.Instance) &&
			now.After(time.UnixMilli(o.At).Add(time.Duration(c.will.Delay)*time.Second+deadAfter)):
			// The instance that won the will died before publishing it: claim the next round.
			claims = append(claims, claim{id, &ownerRec{V: recVersion, Instance: st.instance, Epoch: o.Epoch,
				At: o.At, Expiry: o.Expiry, Will: true, Round: o.Round + 1}, nil})
		case !o.Connected && o.Expiry != 0xFFFFFFFF && now.UnixMilli() > o.At+int64(o.Expiry)*1000:
			expired = append(expired, fenceKey{id, o.Epoch})
		}
	}
	st.mu.Unlock()
	for _, c := range claims {
		srv.claimEnd(c.id, c.rec, c.now)
	}
	for _, e := range expired {
		srv.regMu.Lock()
		_, local := srv.sessions[e.id]
		srv.regMu.Unlock()
		if !local {
			srv.metrics.sessionsExpired.Add(1)
			st.forget(e.id, e.epoch, true) // nothing of it stays in Kafka
		}
	}
}

// recoverOwnConnections ends the connections a previous run of this instance (same InstanceID) held when it
// stopped without a goodbye: their owner records still say connected, here. Other instances cannot tell — this
// id is alive again — so this run writes the end records itself, on every partition, before serving: a will
// due is published after its delay (the first end record of the epoch decides, as for any death), and the
// session's expiry counts from now. Runs once in Start, after the sessions topic is loaded.
//
// It also takes over the wills the previous run had won and not yet published — a connection that ended (its
// end record, by this instance, says a will is due) while its Will Delay was still running: that run's timer
// died with it, the load does not act on end records (store.ready), and no other instance claims them, since
// this id is alive again. They are published when their delay ends, from the end record's time (at once if it
// has passed), unless the client came back (publishStoredWill).
func (srv *Server) recoverOwnConnections(now time.Time) {
	st := srv.store
	type end struct {
		id  string
		rec *ownerRec
		now *willRec // a will due at once (claimEnd)
	}
	var ends, pending, won []end
	st.mu.Lock()
	for id, c := range st.clients {
		for epoch, p := range c.pending {
			if p.winner == st.instance { // won by the previous run, not published
				won = append(won, end{id, &ownerRec{Instance: st.instance, Epoch: epoch, Will: true, Now: true}, nil})
			}
		}
		o := c.owner
		if o == nil || o.Instance != st.instance {
			continue
		}
		if !o.Connected {
			if o.Will && !o.Now && c.will != nil && c.will.Epoch == o.Epoch {
				pending = append(pending, end{id, o, nil})
			}
			continue
		}
		e := end{id, &ownerRec{V: recVersion, Instance: st.instance, Epoch: o.Epoch,
			At: now.UnixMilli(), Expiry: o.Expiry, Will: c.will != nil && c.will.Epoch == o.Epoch}, nil}
		if e.rec.Will && min(c.will.Delay, o.Expiry) == 0 {
			e.now = c.will
		}
		ends = append(ends, e)
	}
	st.mu.Unlock()
	for _, e := range ends {
		srv.claimEnd(e.id, e.rec, e.now)
	}
	for _, e := range append(pending, won...) {
		srv.connectionEnded(e.id, e.rec)
	}
	if len(pending)+len(won) > 0 {
		srv.cfg.log.Info("took over the pending wills of this instance's previous run", "instance", st.instance,
			"delayed", len(pending), "due_at_once", len(won))
	}
	if len(ends) > 0 {
		srv.cfg.log.Info("ended the connections of this instance's previous run", "instance", st.instance, "connections", len(ends))
	}
}
