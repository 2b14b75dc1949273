package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/sessions"
)

// persisted is the Kafka-side bookkeeping of a session that outlives its connection. Guarded by session.mu.
type persisted struct {
	epoch   int64                         // owner epoch of the current connection (unix nanoseconds of its CONNECT)
	from    map[tp]int64                  // while resuming: the replay's position per topic-partition; otherwise nil
	resend  map[resendKey]sessions.OutRec // while resuming: the stored state's messages in flight (read-only); otherwise nil
	saved   time.Time                     // last delivery record written
	resumed chan struct{}                 // closed when a resume has caught up (tests, drain)
}

// sessionRecord builds the "s:" value of a session. s.mu is held.
func (s *session) sessionRecord() *sessions.SessionRec {
	r := &sessions.SessionRec{V: sessionkey.Version, Expiry: s.expiry, Subs: make([]sessions.SubRec, 0, len(s.subs))}
	for f, o := range s.subs {
		r.Subs = append(r.Subs, sessions.SubRec{F: f, Q: o.qos, NL: o.noLocal, RAP: o.retainAsPub, RH: o.retainHandling, ID: o.subID})
	}
	return r
}

// resendKey is the position of a message the client had in flight: Kafka topic index, partition, offset.
type resendKey struct {
	t uint16
	p int32
	o int64
}

// deliveryRecord computes where the session stands in the messages topic and the routed topics: for every
// topic-partition, the first offset not yet completed for it. Records before it are acknowledged (or were not
// for this session). The caller holds srv.matchMu, then s.mu.
func (srv *Server) deliveryRecord(s *session, complete bool) *sessions.DeliveryRec {
	offs := make(map[tp]int64, len(srv.readPos))
	base := srv.readPos
	if s.ps != nil && s.ps.from != nil {
		base = s.ps.from
	}
	for p, o := range base {
		offs[p] = o
	}
	lower := func(p tp, o int64) {
		if o < 0 {
			return
		}
		if cur, ok := offs[p]; !ok || o < cur {
			offs[p] = o
		}
	}
	r := &sessions.DeliveryRec{V: sessionkey.Version, Complete: complete, Saved: time.Now().UnixNano()}
	for i := 0; i < s.queue.len(); i++ {
		d := s.queue.at(i)
		if d.share == nil { // a shared subscription's messages are its Kafka group's to re-deliver (share.go)
			lower(tp{d.topic, d.part}, d.off)
		}
		if d.resendID != 0 { // replayed, not yet re-sent: its packet id stays the client's
			r.Out = append(r.Out, sessions.OutRec{ID: d.resendID, Released: d.released, T: srv.routedName(d.topic), P: d.part, O: d.off})
		}
	}
	if s.ps != nil {
		r.Epoch = s.ps.epoch
		// A resume still running: messages in flight before it that the replay has not reached keep their
		// packet ids too (those it passed are in the queue or in flight now, or did not match).
		for k, o := range s.ps.resend {
			if f, ok := s.ps.from[tp{k.t, k.p}]; !ok || o.O >= f {
				r.Out = append(r.Out, o)
			}
		}
	}
	if s.fl != nil {
		s.fl.each(func(f *outFlight) {
			if f.d.share != nil {
				return
			}
			lower(tp{f.d.topic, f.d.part}, f.d.off)
			if f.d.off >= 0 {
				r.Out = append(r.Out, sessions.OutRec{ID: f.id, Released: f.state == outReleased, T: srv.routedName(f.d.topic), P: f.d.part, O: f.d.off})
			}
		})
	}
	r.Offsets = srv.offsetsJSON(offs)
	return r
}

// saveDelivery writes the session's delivery record. Runs on any goroutine; takes matchMu, then s.mu.
func (srv *Server) saveDelivery(s *session, complete bool, handoffEpoch int64) {
	srv.saveDeliveryThen(s, complete, handoffEpoch, nil)
}

// saveDeliveryThen is saveDelivery with done (may be nil), which runs on a Kafka callback goroutine once the
// record is acknowledged or failed, or at once with nil if the session has no record to write any more.
//
// The session's records are computed and handed to Kafka one at a time (saveMu), so they reach the log in the
// order they were computed. A record computed while QoS 2 steps were held (flight.hold) holds them; its
// acknowledgement lets them go on the wire (heldSaved).
func (srv *Server) saveDeliveryThen(s *session, complete bool, handoffEpoch int64, done func(error)) {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	srv.matchMu.Lock()
	s.mu.Lock()
	if s.ps == nil || s.ended {
		s.mu.Unlock()
		srv.matchMu.Unlock()
		if done != nil {
			done(nil)
		}
		return
	}
	r := srv.deliveryRecord(s, complete)
	if handoffEpoch != 0 {
		r.Epoch = handoffEpoch
		// The record is the new owner's starting point: from here on the old connection must not be sent
		// anything more, or a delivery queued here (so replayed by the new owner) would reach the client
		// twice — for QoS 2 a second delivery under a new packet id. drain stops once the session is not
		// its connection's any more; discard, which follows, detaches the rest.
		s.c = nil
	}
	var seq uint32
	if f := s.fl; f != nil && f.heldPub+f.heldRel > 0 {
		f.saveSeq++
		seq, f.wantSave = f.saveSeq, false
	}
	s.ps.saved = time.Now()
	s.mu.Unlock()
	srv.matchMu.Unlock()
	if seq != 0 {
		then := done
		done = func(err error) {
			srv.heldSaved(s, seq, err)
			if then != nil {
				then(err)
			}
		}
	}
	srv.store.PutThen(sessionkey.Delivery, s.id, r, done)
}

// startHeldSave writes a delivery record for the session's held QoS 2 steps, unless one is on its way already
// or two have started within the last cfg.heldSaveGap: the steps held meanwhile wait for the next, which the
// loop starts when this one is acknowledged and the gap allows (a timer notifies the connection then). So a
// session has at most one such record in Kafka's hands and starts at most two per gap, each carrying every
// step held since the one before was computed: under a stream of QoS 2 deliveries the sessions topic takes two
// records per gap per session, not one per Kafka round trip, while an isolated message's two steps (PUBLISH,
// then PUBREL) do not wait for the gap. Runs on the loop with s.mu held; the record is computed on a goroutine
// (saveDelivery takes matchMu, which the shared reader holds while it fans out).
func (srv *Server) startHeldSave(s *session) {
	f := s.fl
	if f == nil || !f.wantSave || f.saving || s.ps == nil {
		return
	}
	now := time.Now().UnixNano()
	if wait := time.Duration(f.savedAt[0]-now) + srv.cfg.heldSaveGap; wait > 0 {
		if !f.gapTimer {
			f.gapTimer = true
			time.AfterFunc(wait, func() {
				s.mu.Lock()
				f.gapTimer = false
				c := s.c
				s.mu.Unlock()
				if c != nil {
					c.l.notify(c) // drain starts the record (its deferred startHeldSave)
				}
			})
		}
		return
	}
	f.saving, f.savedAt = true, [2]int64{f.savedAt[1], now}
	srv.metrics.heldSaves.Add(1)
	go srv.saveDeliveryThen(s, false, 0, func(error) {
		s.mu.Lock()
		f.saving = false
		c := s.c
		s.mu.Unlock()
		if c != nil {
			c.l.notify(c) // drain sends what the record held and starts the next record (sendHeld)
		}
	})
}

// heldSaved runs on a Kafka callback goroutine when a delivery record that holds QoS 2 steps (number seq) was
// acknowledged or failed: the connection's loop sends them, or closes the connection (sendHeld).
func (srv *Server) heldSaved(s *session, seq uint32, err error) {
	s.mu.Lock()
	if f := s.fl; f != nil && !s.ended {
		switch {
		case err != nil:
			if f.saveErr == nil {
				f.saveErr = err
			}
		case seq > f.durable:
			f.durable = seq
		}
	}
	c := s.c
	s.mu.Unlock()
	if c != nil {
		c.l.notify(c)
	}
}

// saveSession writes the "s:" record after the subscriptions or the expiry changed, with the delivery record
// of where the session stands, and reports whether it did: a session that ends with its connection has no
// record. done (may be nil) runs on a Kafka callback goroutine once Kafka acknowledged both records, or failed
// one of them, only if they were written. Runs on the loop.
func (srv *Server) saveSession(s *session, done func(error)) bool {
	s.mu.Lock()
	if s.ps == nil || s.ended {
		s.mu.Unlock()
		return false
	}
	r := s.sessionRecord()
	s.mu.Unlock()
	both := done
	if done != nil {
		j := &joinedDone{done: done}
		j.left.Store(2)
		both = j.part
	}
	srv.store.PutThen(sessionkey.Session, s.id, r, both)
	// Where the session stands goes with it, and an acknowledgement waits for both: a session whose instance
	// dies right after its SUBACK resumes from here, with the messages published meanwhile, not from wherever
	// the reader is when it comes back (a subscription without a position replays nothing). saveDelivery takes
	// matchMu, which the shared reader holds while it fans out: not on the loop.
	go srv.saveDeliveryThen(s, false, 0, both)
	return true
}

// joinedDone calls done once every part has reported, with the first error any part had.
type joinedDone struct {
	left atomic.Int32
	mu   sync.Mutex
	err  error
	done func(error)
}

func (j *joinedDone) part(err error) {
	if err != nil {
		j.mu.Lock()
		if j.err == nil {
			j.err = err
		}
		j.mu.Unlock()
	}
	if j.left.Add(-1) == 0 {
		j.mu.Lock()
		err = j.err
		j.mu.Unlock()
		j.done(err)
	}
}

// ownerChanged runs on the reader goroutine when an "o:" record says a client connected somewhere. If this
// instance holds an older connection of that client, it hands the session over: the connection is told
// 0x8E and closed, and the final delivery state is written for the new owner's epoch.
func (srv *Server) ownerChanged(id string, o *sessions.OwnerRec) {
	srv.regMu.Lock()
	srv.supersedeLocked(id, o.Epoch) // an older CONNECT of the client still deciding here is refused (newest.go)
	sess := srv.sessions[id]
	srv.regMu.Unlock()
	if sess == nil {
		return
	}
	sess.mu.Lock()
	c := sess.c
	mine := sess.ps != nil && sess.ps.epoch == o.Epoch && o.Instance == srv.store.Instance
	// An unrecorded connection (alone.go) is older in the log than any record read after it was registered.
	older := c != nil && (c.epoch < o.Epoch || c.unrecorded)
	sess.mu.Unlock()
	if mine || o.Instance == srv.store.Instance || !older {
		return
	}
	srv.metrics.takeovers.Add(1)
	srv.handOver(sess, c, o.Epoch)
}

// handOver ends this instance's hold on a session another instance took: final offsets for the new owner,
// then the session leaves this instance's registry and trie without tombstones (the state lives on).
func (srv *Server) handOver(sess *session, c *conn, newEpoch int64) {
	srv.saveDelivery(sess, true, newEpoch)
	srv.regMu.Lock()
	srv.discard(sess)
	srv.regMu.Unlock()
	if c != nil {
		c.kick(mqttcodec.SessionTakenOver) // [MQTT-3.1.4-3]
	}
}

// restore rebuilds a session from the sessions topic: subscriptions into the trie, packet-id state, and the
// offsets its resume starts from. s.mu is not held; s is not yet visible to the reader.
func (srv *Server) restore(s *session, st *sessions.Stored) (from map[tp]int64, resend map[resendKey]sessions.OutRec) {
	if st.Sess != nil {
		s.subs = make(map[string]subOpts, len(st.Sess.Subs))
		for _, r := range st.Sess.Subs {
			o := subOpts{qos: r.Q, noLocal: r.NL, retainAsPub: r.RAP, retainHandling: r.RH, subID: r.ID}
			s.subs[r.F] = o
		}
	}
	if len(st.Q2) > 0 {
		fl := s.flights()
		fl.qos2In = make(map[uint16]struct{}, len(st.Q2))
		for pid := range st.Q2 {
			fl.qos2In[pid] = struct{}{}
		}
	}
	if st.Deliv != nil {
		from = srv.offsetsFromJSON(st.Deliv.Offsets)
		if len(st.Deliv.Out) > 0 {
			resend = make(map[resendKey]sessions.OutRec, len(st.Deliv.Out))
			fl := s.flights()
			for _, o := range st.Deliv.Out {
				t, ok := srv.topicIndex(o.T)
				if !ok {
					continue // a routed topic this instance does not follow (yet): its message is not re-sent
				}
				resend[resendKey{t, o.P, o.O}] = o
				fl.ids[o.ID] = ^uint64(0) // reserved for the re-send, so new messages get other ids
			}
		}
	}
	return from, resend
}

// startResume begins replaying a restored session from its stored offsets. The subscriptions are in the
// trie already, with s.resuming set, so live records skip the session until the replay has caught up with
// the shared reader; then, under matchMu, it switches to live delivery with no gap and no overlap.
func (srv *Server) startResume(s *session, from map[tp]int64, resend map[resendKey]sessions.OutRec) {
	done := make(chan struct{})
	s.mu.Lock()
	s.ps.from = from
	s.ps.resend = resend
	s.ps.resumed = done
	s.mu.Unlock()
	go srv.resume(s, from, resend, done)
}

// resume runs on its own goroutine (one per resuming session, ending when caught up): it reads the records
// the session missed, from the recent-records cache or Kafka, and queues the matching ones.
//
// Per topic-partition: the target of a round is where the shared reader stands in every topic-partition it
// reads (readPos, under matchMu); the session is caught up when its replay has reached that position in each.
// A topic-partition the reader started reading after the session's stored state was written (a routed topic
// discovered since, so absent from from) is replayed from where the reader began it (topicBegin): live records
// skip the session while it resumes, so the replay must cover them. The switch to live delivery happens under
// matchMu, when no record can be between the replay's position and the reader's in any topic-partition.
func (srv *Server) resume(s *session, from map[tp]int64, resend map[resendKey]sessions.OutRec, done chan struct{}) {
	defer close(done)
	ctx := context.Background()
	start := time.Now()
	n := 0
	for {
		srv.matchMu.Lock()
		target := make(map[tp]int64, len(srv.readPos))
		caught, ahead := true, false
		s.mu.Lock()
		for p, o := range srv.readPos {
			target[p] = o
			f, ok := from[p]
			if !ok && p.t != 0 {
				if f, ok = srv.topicBegin[p]; ok {
					from[p] = f // from is s.ps.from: written under s.mu
				}
			}
			if ok && f < o {
				caught = false
			}
			// The stored state can be ahead of this instance's reader: handed over by an instance that had
			// read further, or this one is catching up after a restart. The records in between were
			// completed where it was written, and a message it had in flight there keeps its packet id only
			// through the replay: live, both would go out as new. So the resume waits until the reader has
			// passed them (bounded: a position the reader never reaches is not waited for).
			ahead = ahead || (ok && f > o)
		}
		for k := range resend {
			if o, ok := srv.readPos[tp{k.t, k.p}]; ok && k.o >= o {
				ahead = true
			}
		}
		ahead = ahead && time.Since(start) < srv.cfg.sessionsWait
		if len(s.subs) == 0 {
			caught, ahead = true, false // no subscription: nothing to replay, and one made from now on takes live messages
		}
		s.mu.Unlock()
		if caught && ahead {
			srv.matchMu.Unlock()
			time.Sleep(5 * time.Millisecond) // the reader hands on its next records meanwhile
			continue
		}
		if caught {
			s.mu.Lock()
			s.resuming = false
			if s.ps != nil {
				s.ps.from, s.ps.resend = nil, nil
			}
			c := s.c
			s.mu.Unlock()
			srv.matchMu.Unlock()
			if c != nil {
				c.l.notify(c)
			}
			srv.debug("session resumed", "client", s.id, "replayed", n, "took", time.Since(start))
			return
		}
		srv.matchMu.Unlock()
		for p, to := range target {
			f, ok := from[p]
			if !ok || f >= to {
				continue
			}
			fn := func(off int64, m *kafkamux.Message) error {
				if !srv.replayOne(s, p, off, m, resend) {
					return errSessionGone
				}
				n++
				return nil
			}
			var err error
			if p.t == 0 {
				err = srv.kafka.ReadRange(ctx, srv.kafka.MessagesTopic(), p.p, f, to, fn) // the messages topic: from the recent-records cache when it can
			} else {
				err = srv.kafka.ReadRange(ctx, srv.rt.topics.Name(p.t), p.p, f, to, fn) // routed topics: Kafka fetches
			}
			if err == errSessionGone {
				return
			}
			if err != nil {
				srv.warn("cannot replay a session's missed messages; retrying", "client", s.id, "err", err)
				time.Sleep(time.Second)
				continue
			}
			s.mu.Lock()
			from[p] = to
			if s.ps != nil && s.ps.from != nil {
				s.ps.from[p] = to
			}
			s.mu.Unlock()
		}
	}
}

var errSessionGone = refuse(0, mqttcodec.UnspecifiedError, "session ended during resume")

// replayOne queues one replayed record for s if its subscriptions match, waiting while the session's queue
// is full, and moves the replay's position past it: what a save writes from then on (deliveryRecord) covers
// the record through the queue and the flights, so a resume cut short continues from there. It reports
// false when the session is gone.
func (srv *Server) replayOne(s *session, p tp, off int64, m *kafkamux.Message, resend map[resendKey]sessions.OutRec) bool {
	s.mu.Lock()
	d, ok := s.matchLocked(m)
	if ok && srv.rt != nil && !srv.rt.tbl.RoutesTo(m.Topic, srv.rt.topics.Name(p.t)) {
		ok = false // misrouted: not delivered live either (deliverRecord)
	}
	if !ok {
		s.replayedLocked(p, off)
		s.mu.Unlock()
		return true
	}
	s.mu.Unlock()
	if srv.cfg.payload != nil {
		d.msg = srv.held.JSONWait(m) // payload.Held; as deliverRecord does for live records
	}
	d.topic, d.part, d.off = p.t, p.p, off
	if o, was := resend[resendKey{p.t, p.p, off}]; was {
		d.resendID, d.released = o.ID, o.Released
	}
	for {
		s.mu.Lock()
		if s.ended {
			s.mu.Unlock()
			return false
		}
		if s.queue.len() < srv.cfg.sessionQueue {
			s.queue.push(d)
			s.replayedLocked(p, off)
			c := s.c
			s.mu.Unlock()
			if c != nil {
				c.l.notify(c)
			}
			return true
		}
		s.mu.Unlock()
		time.Sleep(2 * time.Millisecond) // the client reads; this goroutine, not a loop, waits
	}
}

// replayedLocked moves the resume's position in topic-partition p past offset off. s.mu is held.
func (s *session) replayedLocked(p tp, off int64) {
	if s.ps != nil && s.ps.from != nil && s.ps.from[p] <= off {
		s.ps.from[p] = off + 1
	}
}

// matchLocked folds the session's subscriptions matching m into one delivery, as onRecord does. s.mu is held.
func (s *session) matchLocked(m *kafkamux.Message) (delivery, bool) {
	var a aggDelivery
	topic := bytesOf(m.Topic)
	for f, o := range s.subs {
		if !isShared(f) && mqttcodec.Match(bytesOf(f), topic) { // shared ones are not replayed (share.go)
			a.add(&o, s.id, m)
		}
	}
	return a.delivery(m, tp{}, 0) // the caller sets the record's position
}

// saver writes the delivery records of connected persistent sessions every interval, coalescing all the
// acknowledgements in between into one record per session. Resuming sessions too: their record is the
// replay's position (deliveryRecord), so a crash during a long replay does not send the next resume back to
// where this one began.
func (srv *Server) saver(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		srv.regMu.Lock()
		var due []*session
		for _, s := range srv.sessions {
			s.mu.Lock()
			if s.ps != nil && s.c != nil {
				due = append(due, s)
			}
			s.mu.Unlock()
		}
		srv.regMu.Unlock()
		for _, s := range due {
			srv.saveDelivery(s, false, 0)
		}
	}
}
