package payload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
)

// Start loads the registry schemas of the rules and keeps them fresh, on a goroutine of its own, until Close.
// Without registry rules it does nothing.
func (s *Set) Start() {
	var reg []*rule
	for _, r := range s.rules {
		if r.spec.Subject != "" {
			reg = append(reg, r)
		}
	}
	if len(reg) == 0 {
		close(s.done)
		return
	}
	go func() {
		defer close(s.done)
		s.keepFresh(reg)
	}()
}

// Close stops the registry goroutine.
func (s *Set) Close() {
	s.cancel()
	<-s.done
}

// keepFresh loads every registry rule's schema, retrying those that fail (1 s doubling to 30 s), and
// refreshes the loaded rules on a latest version every refresh interval. Runs on Start's goroutine.
func (s *Set) keepFresh(rules []*rule) {
	retry := time.Second
	lastRefresh := time.Now()
	for {
		missing := false
		for _, r := range rules {
			if r.cur.Load() == nil && !s.load(r) {
				missing = true
			}
		}
		wait := s.cfg.refresh
		if missing {
			wait = retry
			if s.cfg.refresh > 0 {
				wait = min(retry, s.cfg.refresh)
			}
			retry = min(2*retry, 30*time.Second)
		} else if wait <= 0 {
			return // all loaded, never refreshed
		} else {
			retry = time.Second
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(wait):
		}
		if s.cfg.refresh > 0 && time.Since(lastRefresh) >= s.cfg.refresh {
			lastRefresh = time.Now()
			for _, r := range rules {
				if r.spec.Version < 0 && r.cur.Load() != nil {
					s.load(r)
				}
			}
		}
	}
}

// load fetches rule r's subject version and installs it. A failure keeps the schema r has (if any).
func (s *Set) load(r *rule) bool {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.timeout)
	defer cancel()
	ss, err := s.cfg.reg.SchemaByVersion(ctx, r.spec.Subject, r.spec.Version)
	if err == nil {
		var l *loaded
		if old := r.cur.Load(); old != nil && old.id == ss.ID {
			return true // unchanged
		}
		if l, err = s.fromRegistry(ctx, ss.Schema, ss.ID, r.spec.Format, r.spec.Message); err == nil {
			l.version = ss.Version
			l.hdr = header(r.spec, fmt.Sprintf("%s/%d", ss.Subject, ss.Version), ss.ID)
			r.cur.Store(l)
			r.lastErr.Store(nil)
			s.byID.Store(ss.ID, l)
			s.cfg.log.Info("payload schema loaded", "rule", r.spec.Filter, "subject", ss.Subject, "version", ss.Version, "id", ss.ID)
			return true
		}
	}
	if s.ctx.Err() != nil {
		return false
	}
	s.regErrs.Add(1)
	why := fmt.Sprintf("cannot fetch schema registry subject %s: %v", r.spec.Subject, err)
	if r.cur.Load() != nil {
		s.cfg.log.Warn("payload schema refresh failed; the cached schema stays in use", "rule", r.spec.Filter, "err", err)
	} else {
		s.cfg.log.Warn("payload schema not loaded; the rule's publishes are refused until it is", "rule", r.spec.Filter, "err", err)
	}
	r.lastErr.Store(&why)
	return false
}

// fromRegistry compiles a registry schema, with the schemas it references (fetched, within ctx), checking its
// type against the format wanted.
func (s *Set) fromRegistry(ctx context.Context, sch sr.Schema, id int, want Format, message string) (*loaded, error) {
	var f Format
	switch sch.Type {
	case sr.TypeAvro:
		f = Avro
	case sr.TypeProtobuf:
		f = Protobuf
	case sr.TypeJSON:
		f = JSONSchema
	default:
		return nil, &unusable{fmt.Errorf("schema %d has type %v", id, sch.Type)}
	}
	if want != 0 && f != want {
		return nil, &unusable{fmt.Errorf("schema %d is %s, the rule wants %s", id, f, want)}
	}
	refs, err := s.references(ctx, sch.References, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("schema %d: %w", id, err)
	}
	c, err := compile(f, sch.Schema, message, refs)
	if err != nil {
		return nil, &unusable{fmt.Errorf("schema %d: %w", id, err)}
	}
	return &loaded{c: c, format: f, id: id}, nil
}

// unusable is the error of a registry schema Ferry cannot use (its type, or it does not compile): fetching it
// again does not help.
type unusable struct{ err error }

func (e *unusable) Error() string { return e.err.Error() }
func (e *unusable) Unwrap() error { return e.err }

// maxRefs bounds the schemas one schema may pull in through references, and their depth.
const maxRefs, maxRefDepth = 100, 16

// references fetches the schemas rs name, and theirs, depth first: each comes after those it references, as
// compile wants them. seen holds the subject versions already in out.
func (s *Set) references(ctx context.Context, rs []sr.SchemaReference, out []ref, depth int) ([]ref, error) {
	if depth > maxRefDepth {
		return nil, fmt.Errorf("schema references nested deeper than %d", maxRefDepth)
	}
next:
	for _, r := range rs {
		for _, o := range out {
			if o.subject == r.Subject && o.version == r.Version {
				continue next // referenced twice: once is enough
			}
		}
		if len(out) >= maxRefs {
			return nil, fmt.Errorf("more than %d schema references", maxRefs)
		}
		ss, err := s.cfg.reg.SchemaByVersion(ctx, r.Subject, r.Version)
		if err != nil {
			return nil, fmt.Errorf("reference %s (%s/%d): %w", r.Name, r.Subject, r.Version, err)
		}
		if out, err = s.references(ctx, ss.References, out, depth+1); err != nil {
			return nil, err
		}
		out = append(out, ref{name: r.Name, text: ss.Schema.Schema, subject: r.Subject, version: r.Version})
	}
	return out, nil
}

// ErrNoRule is returned by DeliverJSON for a topic no deliver=json rule covers.
var ErrNoRule = errors.New("no deliver=json rule")

// DeliverJSON returns the JSON of a record value of the topic when the topic's rule has deliver=json:
// Confluent-framed values are decoded with their schema id's schema (fetched from the registry on first use),
// unframed ones with the rule's file schema; JSON values pass as they are. It fails with ErrNoRule when the
// topic's rule (if any) does not deliver JSON; with *Pending while the record's schema id is fetched (the
// caller holds the record and asks again when Pending.Done closes); and with the decoding error otherwise
// (counted; the caller delivers the record unchanged). It never waits. Runs on any goroutine.
func (s *Set) DeliverJSON(topic string, value []byte) ([]byte, error) {
	i := s.Match(topic)
	if i < 0 || !s.rules[i].spec.Deliver {
		return nil, ErrNoRule
	}
	r := s.rules[i]
	out, err := s.toJSON(r, value)
	var pending *Pending
	if errors.As(err, &pending) {
		return nil, err
	}
	if err != nil {
		r.toJSONErr.Add(1)
		return nil, err
	}
	r.toJSON.Add(1)
	return out, nil
}

func (s *Set) toJSON(r *rule, v []byte) ([]byte, error) {
	if len(v) >= 5 && v[0] == 0 {
		id := int(binary.BigEndian.Uint32(v[1:5]))
		l, err := s.schemaByID(id)
		if err != nil {
			return nil, err
		}
		body := v[5:]
		var index []int
		if l.format == Protobuf {
			var hdr sr.ConfluentHeader
			if index, body, err = hdr.DecodeIndex(body, 64); err != nil {
				return nil, fmt.Errorf("schema id %d: bad Protobuf message index: %w", id, err)
			}
		}
		return l.c.toJSON(body, index)
	}
	l := r.cur.Load()
	if l == nil {
		return nil, errors.New("schema not loaded")
	}
	if l.format == JSON || l.format == JSONSchema {
		return v, nil
	}
	if l.id > 0 {
		return nil, errors.New("value is not in the Confluent wire format")
	}
	return l.c.toJSON(v, nil)
}
