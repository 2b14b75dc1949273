package payload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
)

// Schemas by registry id, for the way out (DeliverJSON). A record framed with an id the Set knows decodes at
// once. An id it does not know is fetched on a goroutine of its own, never on the caller's: DeliverJSON
// answers *Pending, whose Done closes when the id is known or given up, and the caller holds the record
// meanwhile. A fetch that fails for a reason that may pass (registry unreachable, 5xx, timeout) is retried,
// 0.5 s doubling, until the hold bound (Hold) since the id was first met; then the id is given up: for
// idRetry its records are delivered unchanged (counted) without waiting, after which the next record fetches
// again. An id the registry does not have, or whose schema Ferry cannot use, is given up at once.

// idRetry is how long an id given up stays so before a record of it tries the registry again.
const idRetry = 30 * time.Second

// maxIDStates bounds the ids being fetched or given up at once (records with random ids cannot grow memory).
const maxIDStates = 1024

// idState is an id the Set does not know. Guarded by Set.idMu.
type idState struct {
	since time.Time     // when the id was first met (the hold runs from here)
	done  chan struct{} // while a fetch (or its retries) runs; closed when it ends
	err   error         // the last fetch's error
	until time.Time     // given up: records are delivered unchanged until then
}

// Pending is DeliverJSON's error for a record whose schema id is being fetched from the schema registry: hold
// the record, and ask again once Done is closed (the id is then known, or given up and the record goes
// unchanged). Done closes at the latest at the hold bound.
type Pending struct {
	ID   int
	Done <-chan struct{}
}

func (e *Pending) Error() string {
	return fmt.Sprintf("schema id %d is being fetched from the schema registry", e.ID)
}

// Hold bounds how long records of an unknown schema id wait for it while the registry cannot be reached,
// from when the id is first met; then they are delivered unchanged. Default: the fetch timeout.
func Hold(d time.Duration) Opt { return opt(func(c *cfg) { c.hold = d }) }

// Prefetch starts fetching the schema id of a record of the topic if its deliver=json rule will need one
// Ferry does not know, so that records held behind another do not wait for their own ids one after the
// other. It does not decode and never waits. Runs on any goroutine.
func (s *Set) Prefetch(topic string, value []byte) {
	if len(value) < 5 || value[0] != 0 {
		return
	}
	if i := s.Match(topic); i >= 0 && s.rules[i].spec.Deliver {
		_, _ = s.schemaByID(int(binary.BigEndian.Uint32(value[1:5])))
	}
}

// schemaByID returns the schema of a registry id; *Pending while it is fetched; an error when the id is
// given up (the record is delivered unchanged). It never waits. Runs on any goroutine.
func (s *Set) schemaByID(id int) (*loaded, error) {
	if v, ok := s.byID.Load(id); ok {
		return v.(*loaded), nil
	}
	s.idMu.Lock()
	defer s.idMu.Unlock()
	now := time.Now()
	st := s.ids[id]
	switch {
	case st != nil && st.done != nil:
		return nil, &Pending{ID: id, Done: st.done}
	case st != nil && now.Before(st.until):
		return nil, st.err
	case s.cfg.reg == nil:
		return nil, fmt.Errorf("unknown schema id %d (no schema registry configured)", id)
	}
	if v, ok := s.byID.Load(id); ok { // fetched between the first look and the lock
		return v.(*loaded), nil
	}
	if st == nil && len(s.ids) >= maxIDStates {
		for k, o := range s.ids {
			if o.done == nil && !now.Before(o.until) {
				delete(s.ids, k)
			}
		}
		if len(s.ids) >= maxIDStates {
			return nil, fmt.Errorf("schema id %d: %d other unknown schema ids are being fetched", id, len(s.ids))
		}
	}
	st = &idState{since: now, done: make(chan struct{})}
	s.ids[id] = st
	go s.fetchID(id, st)
	return nil, &Pending{ID: id, Done: st.done}
}

// fetchID fetches id's schema, retrying until it is known or given up. Runs on a goroutine of its own.
func (s *Set) fetchID(id int, st *idState) {
	wait := 500 * time.Millisecond
	for {
		left := max(time.Until(st.since.Add(s.cfg.hold)), 100*time.Millisecond)
		ctx, cancel := context.WithTimeout(s.ctx, min(s.cfg.timeout, left))
		sch, err := s.cfg.reg.SchemaByID(ctx, id)
		var l *loaded
		if err == nil {
			l, err = s.fromRegistry(ctx, sch, id, 0, "")
		}
		cancel()
		var re *sr.ResponseError
		var un *unusable
		// Not in the registry, or not usable: a retry does not change that.
		lasting := errors.As(err, &re) && re.StatusCode == http.StatusNotFound || errors.As(err, &un)
		s.idMu.Lock()
		if err == nil {
			s.byID.Store(id, l)
			delete(s.ids, id)
			close(st.done)
			s.idMu.Unlock()
			s.cfg.log.Info("payload schema loaded for delivery", "id", id)
			return
		}
		s.regErrs.Add(1)
		st.err = fmt.Errorf("schema id %d: %w", id, err)
		if lasting || s.ctx.Err() != nil || time.Since(st.since)+wait >= s.cfg.hold {
			st.until = time.Now().Add(idRetry)
			close(st.done)
			st.done = nil
			s.idMu.Unlock()
			s.cfg.log.Warn("records of a schema id are delivered unchanged: cannot fetch its schema", "id", id,
				"for", idRetry, "err", err)
			return
		}
		s.idMu.Unlock()
		select {
		case <-s.ctx.Done():
		case <-time.After(wait):
		}
		wait *= 2
	}
}
