package server

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

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

// dueWills are the wills of connections this instance saw end abnormally with nothing left to wait for: a Will
// Delay of 0, or a session that ends with the connection. MQTT 5 publishes such a will when the connection
// closes [MQTT-3.1.2-8]; a CONNECT that follows, even a millisecond later on another instance, does not cancel
// it. So the decision is this instance's, taken when it saw the socket close, and kept in memory until the
// connection's end record is read back: if that record is the first end record of the connection's epoch (no
// other instance claimed the connection, as for a dead holder: wills.go's rule), the will is published from
// here, whatever was written for the client since. A kept will whose record did not win, or could not be
// written, is forgotten. Guarded by mu, taken alone.
type dueWills struct {
	mu sync.Mutex
	m  map[fenceKey]*kafkamux.Message
}

// keep records the will of the connection (id, epoch) as due at once.
func (d *dueWills) keep(id string, epoch int64, m *kafkamux.Message) {
	d.mu.Lock()
	if d.m == nil {
		d.m = make(map[fenceKey]*kafkamux.Message)
	}
	d.m[fenceKey{id, epoch}] = m
	d.mu.Unlock()
}

// take removes and returns the kept will of (id, epoch), if any.
func (d *dueWills) take(id string, epoch int64) *kafkamux.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := fenceKey{id, epoch}
	m := d.m[k]
	delete(d.m, k)
	return m
}

// endConnection writes the end record of a connection: the claim that decides its will. A will due at once
// (now non-nil) is kept until the record is read back (dueWills). Runs on the loop.
func (srv *Server) endConnection(id string, epoch int64, expiry uint32, willDue bool, now *kafkamux.Message) {
	srv.claimEnd(id, &ownerRec{V: recVersion, Instance: srv.store.instance, Epoch: epoch,
		Connected: false, At: time.Now().UnixMilli(), Expiry: expiry, Will: willDue}, now)
}

// claimEnd writes end record rec of client id's connection; a will due at once (now non-nil) is kept until the
// record is read back (dueWills). Runs on any goroutine.
func (srv *Server) claimEnd(id string, rec *ownerRec, now *kafkamux.Message) {
	var done func(error)
	if now != nil {
		srv.due.keep(id, rec.Epoch, now)
		done = func(err error) {
			if err != nil {
				srv.due.take(id, rec.Epoch) // never read back: the will is the partition processor's to decide
			}
		}
	}
	srv.store.putThen(kindOwner, id, rec, done)
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
		At: time.Now().UnixMilli(), Expiry: expiry, Will: true}, w.msg)
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
	now := time.Now()
	srv.claimEnd(id, &ownerRec{V: recVersion, Instance: srv.store.instance, Epoch: o.Epoch, At: now.UnixMilli(),
		Expiry: o.Expiry, Will: true}, w.message(id, now))
}

// connectionEnded runs on the reader goroutine for the first end record of an epoch and round. If this
// instance wrote it and a will is due, the will is published: at once if this instance kept it as due at once
// (dueWills), else after its delay unless the client came back.
func (srv *Server) connectionEnded(id string, end *ownerRec) {
	if end.Instance != srv.store.instance || !end.Will {
		return
	}
	if m := srv.due.take(id, end.Epoch); m != nil && end.Round == 0 {
		st, _ := srv.store.lookup(id)
		if st.will != nil && st.will.Epoch == end.Epoch && (st.owner == nil || st.owner.Epoch <= end.Epoch) {
			// Published: nothing is left for a processor to claim if this instance dies. A client that
			// connected again replaces or cancels the key itself (completeConnect): left to it, so its
			// new will is not deleted by a late tombstone.
			srv.store.put(kindWill, id, nil)
		}
		go srv.sendWill(m) // a payload check may ask the schema registry: not on the reader goroutine
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
	srv.sendWill(st.will.message(id, time.Now()))
	srv.store.put(kindWill, id, nil)
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
			srv.processPartitions(time.Now())
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
// instance held them. The caller has read the sessions topic up to its end first (readSessionsUpTo).
func (srv *Server) processPartitions(now time.Time) {
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
		now *kafkamux.Message // a will due at once (dueWills)
	}
	var claims []claim
	var expired []string
	for id, c := range st.clients {
		if live[int(c.part)%len(live)] != st.instance || c.owner == nil {
			continue
		}
		o := c.owner
		switch {
		case o.Connected && !alive(o.Instance):
			// The holder died. When exactly its connection ended is unknown; counting the Will Delay from now,
			// the detection, never publishes a will early.
			will := c.will != nil && c.will.Epoch == o.Epoch
			var due *kafkamux.Message
			if will && min(c.will.Delay, o.Expiry) == 0 {
				due = c.will.message(id, now)
			}
			claims = append(claims, claim{id, &ownerRec{V: recVersion, Instance: st.instance, Epoch: o.Epoch,
				At: now.UnixMilli(), Expiry: o.Expiry, Will: will}, due})
		case !o.Connected && o.Will && c.will != nil && c.will.Epoch == o.Epoch && !alive(o.Instance) &&
			now.After(time.UnixMilli(o.At).Add(time.Duration(c.will.Delay)*time.Second+deadAfter)):
			// The instance that won the will died before publishing it: claim the next round.
			claims = append(claims, claim{id, &ownerRec{V: recVersion, Instance: st.instance, Epoch: o.Epoch,
				At: o.At, Expiry: o.Expiry, Will: true, Round: o.Round + 1}, nil})
		case !o.Connected && o.Expiry != 0xFFFFFFFF && now.UnixMilli() > o.At+int64(o.Expiry)*1000:
			expired = append(expired, id)
		}
	}
	st.mu.Unlock()
	for _, c := range claims {
		srv.claimEnd(c.id, c.rec, c.now)
	}
	for _, id := range expired {
		srv.regMu.Lock()
		_, local := srv.sessions[id]
		srv.regMu.Unlock()
		if !local {
			srv.metrics.sessionsExpired.Add(1)
			st.forget(id, true) // nothing of it stays in Kafka
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
		now *kafkamux.Message // a will due at once (dueWills)
	}
	var ends, pending []end
	st.mu.Lock()
	for id, c := range st.clients {
		o := c.owner
		if o == nil || o.Instance != st.instance {
			continue
		}
		if !o.Connected {
			if o.Will && c.will != nil && c.will.Epoch == o.Epoch {
				pending = append(pending, end{id, o, nil})
			}
			continue
		}
		e := end{id, &ownerRec{V: recVersion, Instance: st.instance, Epoch: o.Epoch,
			At: now.UnixMilli(), Expiry: o.Expiry, Will: c.will != nil && c.will.Epoch == o.Epoch}, nil}
		if e.rec.Will && min(c.will.Delay, o.Expiry) == 0 {
			e.now = c.will.message(id, now)
		}
		ends = append(ends, e)
	}
	st.mu.Unlock()
	for _, e := range ends {
		srv.claimEnd(e.id, e.rec, e.now)
	}
	for _, e := range pending {
		srv.connectionEnded(e.id, e.rec)
	}
	if len(pending) > 0 {
		srv.cfg.log.Info("took over the pending wills of this instance's previous run", "instance", st.instance, "wills", len(pending))
	}
	if len(ends) > 0 {
		srv.cfg.log.Info("ended the connections of this instance's previous run", "instance", st.instance, "connections", len(ends))
	}
}
