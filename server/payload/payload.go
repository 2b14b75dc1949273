// Package payload checks and converts MQTT payloads against per-topic contracts (--payload rules): any JSON, a
// JSON Schema, an Avro schema or a Protobuf message, the schema read from a file or from a Confluent-compatible
// schema registry. On the way into Kafka a payload that breaks its contract is refused, and JSON is converted
// to Avro or Protobuf in the Confluent wire format (magic byte 0, the schema id as 4 bytes big endian, for
// Protobuf the message-index array, then the body), so Kafka consumers with the registry's deserializers read
// the records as they are. On the way out, records of a rule with deliver=json are turned back into JSON for
// MQTT subscribers.
//
// Threads: Match and Ingest run on event loops and only compute: no I/O, no lock. Schemas from the registry are
// fetched by one goroutine (Start): at start, retried until loaded, and refreshed when the rule asks for the
// latest version; a new version replaces the old one atomically, and a failed refresh keeps the cached one.
// Until a rule's schema is first loaded, Ingest refuses its payloads with [Unavailable] (the caller does not
// acknowledge them: nothing unvalidated is written). DeliverJSON runs on any goroutine and never waits: a
// schema id it has not seen is fetched on a goroutine of its own while the caller holds the record ([Pending],
// byid.go), and remembered (ids are immutable).
package payload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ferrymq/ferry/kafkamux"
)

// Set is the compiled payload rules of an instance. Safe for concurrent use.
type Set struct {
	rules   []*rule
	cfg     cfg
	byID    sync.Map // registry schema id → *loaded, for delivery (byid.go)
	idMu    sync.Mutex
	ids     map[int]*idState // ids not known (yet): being fetched, or given up for a while
	regErrs atomic.Uint64
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
}

// rule is one --payload rule and its current schema.
type rule struct {
	spec      *Spec
	cur       atomic.Pointer[loaded]
	lastErr   atomic.Pointer[string] // why the schema is not loaded (or could not be refreshed)
	invalid   [NumReasons]atomic.Uint64
	converted atomic.Uint64 // payloads written in another format than published
	toJSON    atomic.Uint64 // records delivered as JSON
	toJSONErr atomic.Uint64 // records deliver=json could not decode (delivered as they are)
}

// loaded is a schema ready for use.
type loaded struct {
	c       codec
	format  Format
	id      int // registry id; 0 = none (file schema without id=)
	version int
	hdr     *kafkamux.ValueSchema // the record headers naming it; nil for json
}

type cfg struct {
	reg     *sr.Client
	refresh time.Duration
	timeout time.Duration
	hold    time.Duration
	log     *slog.Logger
}

// Opt configures a Set. Options follow franz-go's style, as the rest of Ferry's do: an interface over an
// unexported config that has defaults() and validate(), so only this package can make one.
type Opt interface{ apply(*cfg) }

type opt func(*cfg)

func (o opt) apply(c *cfg) { o(c) }

func (c *cfg) defaults() {
	c.refresh, c.timeout, c.log = 5*time.Minute, 10*time.Second, slog.New(slog.DiscardHandler)
}

func (c *cfg) validate() error {
	switch {
	case c.refresh < 0:
		return fmt.Errorf("invalid schema refresh interval %v: want 0 (never) or positive", c.refresh)
	case c.timeout <= 0:
		return fmt.Errorf("invalid schema registry timeout %v: want a positive duration", c.timeout)
	case c.log == nil:
		return errors.New("invalid payload rules logger: nil")
	}
	if c.hold <= 0 {
		c.hold = c.timeout
	}
	return nil
}

// Registry sets the schema registry client of registry: sources. Default: none (a registry: rule is an error).
func Registry(cl *sr.Client) Opt { return opt(func(c *cfg) { c.reg = cl }) }

// Refresh sets how often rules on a subject's latest version look for a new one. Default 5m; 0 = never.
func Refresh(d time.Duration) Opt { return opt(func(c *cfg) { c.refresh = d }) }

// FetchTimeout bounds one registry request. Default 10s.
func FetchTimeout(d time.Duration) Opt { return opt(func(c *cfg) { c.timeout = d }) }

// Logger sets the logger of registry trouble. Default: discard.
func Logger(l *slog.Logger) Opt { return opt(func(c *cfg) { c.log = l }) }

// New parses the rules (FILTER=FORMAT[:SOURCE][;OPTION]..., see [Spec]) in order and loads file schemas; registry
// schemas load when Start runs. Errors name the rule.
func New(specs []string, opts ...Opt) (*Set, error) {
	var c cfg
	c.defaults()
	for _, o := range opts {
		o.apply(&c)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	s := &Set{cfg: c, done: make(chan struct{}), ids: map[int]*idState{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, raw := range specs {
		sp, err := Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("payload rule %q: %w", raw, err)
		}
		r := &rule{spec: sp}
		switch {
		case sp.Subject != "" && c.reg == nil:
			return nil, fmt.Errorf("payload rule %q: a registry source needs a schema registry (--schema-registry)", raw)
		case sp.Subject != "":
			why := "schema registry subject " + sp.Subject + " not loaded yet"
			r.lastErr.Store(&why)
		case sp.File != "":
			text, err := os.ReadFile(sp.File)
			if err != nil {
				return nil, fmt.Errorf("payload rule %q: %w", raw, err)
			}
			cd, err := compile(sp.Format, string(text), sp.Message, nil)
			if err != nil {
				return nil, fmt.Errorf("payload rule %q: %s: %w", raw, sp.File, err)
			}
			l := &loaded{c: cd, format: sp.Format, id: sp.ID}
			l.hdr = header(sp, "file:"+sp.File, sp.ID)
			r.cur.Store(l)
			if sp.ID > 0 {
				s.byID.Store(sp.ID, l)
			}
		default:
			r.cur.Store(&loaded{c: jsonCodec{}, format: JSON})
		}
		s.rules = append(s.rules, r)
	}
	return s, nil
}

func header(sp *Spec, ref string, id int) *kafkamux.ValueSchema {
	f := sp.Format
	h := &kafkamux.ValueSchema{Format: []byte(f.String()), Ref: []byte(ref), Binary: f == Avro || f == Protobuf || sp.Frame}
	if id > 0 {
		h.ID = []byte(strconv.Itoa(id))
	}
	return h
}

// Len returns the number of rules.
func (s *Set) Len() int { return len(s.rules) }

// Filter returns rule i's topic filter (the metrics' rule label).
func (s *Set) Filter(i int) string { return s.rules[i].spec.Filter }

// Match returns the index of the first rule whose filter matches the topic, or -1. It does not allocate.
func (s *Set) Match(topic string) int {
	for i, r := range s.rules {
		if match(r.spec.Filter, topic) {
			return i
		}
	}
	return -1
}

// Unavailable is the error of a payload whose rule has no schema loaded yet.
type Unavailable struct{ Why string }

func (e *Unavailable) Error() string { return "schema not available: " + e.Why }

// Ingest checks the payload against rule i and appends what is to be written to Kafka to dst: the payload
// itself (json, jsonschema; with framing=confluent after the Confluent wire format header) or its conversion
// in the Confluent wire format (avro, protobuf; the body alone for a file schema without id=). hdr names the schema for the record's headers (nil for json). It fails with
// *Invalid (counted) or *Unavailable (counted). Runs on an event loop: it computes only.
func (s *Set) Ingest(i int, dst, payload []byte) (out []byte, hdr *kafkamux.ValueSchema, err error) {
	r := s.rules[i]
	l := r.cur.Load()
	if l == nil {
		r.invalid[ReasonUnavailable].Add(1)
		return dst, nil, &Unavailable{Why: *r.lastErr.Load()}
	}
	start := len(dst)
	if l.id > 0 && (l.format == Avro || l.format == Protobuf || r.spec.Frame) {
		dst = append(dst, 0, byte(l.id>>24), byte(l.id>>16), byte(l.id>>8), byte(l.id))
		if pc, ok := l.c.(*protoCodec); ok {
			dst = appendIndex(dst, pc.index)
		}
	}
	out, err = l.c.ingest(dst, payload)
	if err != nil {
		var inv *Invalid
		if errors.As(err, &inv) {
			r.invalid[inv.Reason].Add(1)
		}
		return out[:start], nil, err
	}
	if l.format == Avro || l.format == Protobuf {
		r.converted.Add(1)
	}
	return out, l.hdr, nil
}

// appendIndex appends the Confluent Protobuf message-index array: a single 0 for the first message, else the
// count and the indexes as zig-zag varints.
func appendIndex(b []byte, idx []int) []byte {
	if len(idx) == 1 && idx[0] == 0 {
		return append(b, 0)
	}
	b = binary.AppendVarint(b, int64(len(idx)))
	for _, i := range idx {
		b = binary.AppendVarint(b, int64(i))
	}
	return b
}

// Ready reports whether every rule has a schema; if not, why (the first rule without one).
func (s *Set) Ready() (bool, string) {
	for _, r := range s.rules {
		if r.cur.Load() == nil {
			return false, fmt.Sprintf("payload rule %s: %s", r.spec.Filter, *r.lastErr.Load())
		}
	}
	return true, ""
}

// RuleStats are the counters of one rule.
type RuleStats struct {
	Filter        string
	Invalid       [NumReasons]uint64 // refused payloads by reason
	Converted     uint64             // payloads written as Avro or Protobuf
	DeliveredJSON uint64             // records delivered to MQTT as JSON
	DeliverErrors uint64             // records deliver=json could not decode (delivered unchanged)
	Loaded        bool               // a schema is loaded
	SchemaID      int                // its registry id (0 = none)
	SchemaVersion int                // its subject version (0 = file)
}

// Stats returns the counters of every rule, in order, and the registry requests that failed.
func (s *Set) Stats() ([]RuleStats, uint64) {
	out := make([]RuleStats, len(s.rules))
	for i, r := range s.rules {
		st := &out[i]
		st.Filter = r.spec.Filter
		for k := range st.Invalid {
			st.Invalid[k] = r.invalid[k].Load()
		}
		st.Converted, st.DeliveredJSON, st.DeliverErrors = r.converted.Load(), r.toJSON.Load(), r.toJSONErr.Load()
		if l := r.cur.Load(); l != nil {
			st.Loaded, st.SchemaID, st.SchemaVersion = true, l.id, l.version
		}
	}
	return out, s.regErrs.Load()
}
