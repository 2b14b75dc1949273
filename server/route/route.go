// Package route maps MQTT topics to Kafka topics: ordered rules, each an MQTT topic filter whose levels may be
// named captures, a Kafka topic name that may use them, and optionally a capture whose value is the partition
// key. The first rule whose filter matches a topic wins; a topic no rule matches goes to the default (the
// messages topic) or is refused.
//
//	place/{site}/device/{dev}/#>devices-{site}@{dev}
//
// A "{name}" level matches exactly one level, like '+', and captures it; '+' and a trailing '#' are allowed.
// Topics starting with '$' are not matched by a wildcard or capture in the first level [MQTT-4.7.2-1].
//
// Topics (topics.go) are the Kafka topics the rules write to, as one instance knows them: their indexes, which
// take publishes, creation on first use and discovery.
//
// It lives under server/ because only the server decides where a message goes (the publish side hands the
// chosen topic and key to offload, the read side checks records against it); it imports only the standard
// library, so cmd/ferry can validate rules without building a server, and reaches Kafka and the server through
// the small interfaces of topics.go (Kafka, Host). Everything here is safe for concurrent use once built; Route
// and RoutesTo do not allocate except to build a templated Kafka topic name.
package route

import (
	"errors"
	"fmt"
	"strings"
)

// MaxCaptures bounds the captures of one rule (they are tracked in a fixed array while matching).
const MaxCaptures = 8

// MaxTopicLen is the longest Kafka topic name.
const MaxTopicLen = 249

// ErrUnrouted is returned by Route when no rule matches and unrouted topics are refused.
var ErrUnrouted = errors.New("no route rule matches the topic")

// ErrIllegalTopic is returned by Route when a rule's template yields a name Kafka does not accept.
var ErrIllegalTopic = errors.New("the Kafka topic name built from the topic is not a legal Kafka topic name")

type levelKind uint8

const (
	litLevel  levelKind = iota
	plusLevel           // '+'
	capLevel            // {name}
	hashLevel           // trailing '#'
)

type level struct {
	kind levelKind
	lit  string // litLevel
	cap  int8   // capLevel: capture index
}

type part struct {
	lit string // literal text, or "" for a capture
	cap int8   // capture index when lit == ""
}

// Rule is one compiled route rule.
type Rule struct {
	Spec   string // as written: FILTER>KAFKA_TOPIC[@{capture}]
	Filter string // the MQTT filter as given (with {name} levels)
	Topic  string // the Kafka topic template

	levels []level
	tmpl   []part
	fixed  string // the Kafka topic when the template uses no capture
	key    int8   // capture index of the partition key; -1 = none (the record key, the MQTT topic)
	caps   []string
}

// Fixed returns the rule's Kafka topic when it does not depend on the MQTT topic.
func (r *Rule) Fixed() (string, bool) { return r.fixed, r.fixed != "" }

// HasKey reports whether the rule sets a partition key.
func (r *Rule) HasKey() bool { return r.key >= 0 }

// Parse compiles one rule: FILTER>KAFKA_TOPIC or FILTER>KAFKA_TOPIC@{capture}.
func Parse(spec string) (*Rule, error) {
	filter, rest, ok := strings.Cut(spec, ">")
	if !ok {
		return nil, errors.New("want FILTER>KAFKA_TOPIC[@{capture}]")
	}
	topic, key, hasKey := strings.Cut(rest, "@")
	r := &Rule{Spec: spec, Filter: filter, Topic: topic, key: -1}
	if filter == "" {
		return nil, errors.New("empty topic filter")
	}
	capIdx := map[string]int8{}
	lv := strings.Split(filter, "/")
	for i, l := range lv {
		switch {
		case l == "#":
			if i != len(lv)-1 {
				return nil, errors.New("'#' must be the last level of the filter")
			}
			r.levels = append(r.levels, level{kind: hashLevel})
		case l == "+":
			r.levels = append(r.levels, level{kind: plusLevel})
		case strings.HasPrefix(l, "{") && strings.HasSuffix(l, "}") && len(l) > 2:
			name := l[1 : len(l)-1]
			if !validName(name) {
				return nil, fmt.Errorf("capture %q: names are letters, digits and '_'", l)
			}
			if _, dup := capIdx[name]; dup {
				return nil, fmt.Errorf("capture %q defined twice", l)
			}
			if len(r.caps) == MaxCaptures {
				return nil, fmt.Errorf("more than %d captures", MaxCaptures)
			}
			capIdx[name] = int8(len(r.caps))
			r.levels = append(r.levels, level{kind: capLevel, cap: int8(len(r.caps))})
			r.caps = append(r.caps, name)
		case strings.ContainsAny(l, "+#{}\x00"):
			return nil, fmt.Errorf("level %q: '+', '#', '{' and '}' must be a whole level", l)
		default:
			r.levels = append(r.levels, level{kind: litLevel, lit: l})
		}
	}
	if topic == "" {
		return nil, errors.New("empty Kafka topic")
	}
	for s := topic; s != ""; {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			r.tmpl = append(r.tmpl, part{lit: s})
			break
		}
		if i > 0 {
			r.tmpl = append(r.tmpl, part{lit: s[:i]})
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("bad Kafka topic %q: unclosed '{'", topic)
		}
		name := s[i+1 : i+j]
		ci, ok := capIdx[name]
		if !ok {
			return nil, fmt.Errorf("bad Kafka topic %q: uses {%s}, which the filter does not capture", topic, name)
		}
		r.tmpl = append(r.tmpl, part{cap: ci})
		s = s[i+j+1:]
	}
	minLen := 0
	for _, p := range r.tmpl {
		for i := 0; i < len(p.lit); i++ {
			if !legalByte(p.lit[i]) {
				return nil, fmt.Errorf("bad Kafka topic %q: only letters, digits, '.', '_' and '-' are allowed", topic)
			}
		}
		minLen += len(p.lit)
	}
	if minLen > MaxTopicLen {
		return nil, fmt.Errorf("bad Kafka topic %q: longer than %d characters", topic, MaxTopicLen)
	}
	if len(r.tmpl) == 1 && r.tmpl[0].lit != "" {
		r.fixed = r.tmpl[0].lit
		if !LegalTopic(r.fixed) {
			return nil, fmt.Errorf("bad Kafka topic %q: not a legal Kafka topic name", topic)
		}
	}
	if hasKey {
		if !strings.HasPrefix(key, "{") || !strings.HasSuffix(key, "}") {
			return nil, fmt.Errorf("partition key %q: want {capture}", key)
		}
		ci, ok := capIdx[key[1:len(key)-1]]
		if !ok {
			return nil, fmt.Errorf("partition key %q is not captured by the filter", key)
		}
		r.key = ci
	}
	return r, nil
}

func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return s != ""
}

func legalByte(c byte) bool {
	return c == '.' || c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// LegalTopic reports whether s is a legal Kafka topic name: 1 to 249 of [a-zA-Z0-9._-], not "." or "..".
func LegalTopic(s string) bool {
	if s == "" || len(s) > MaxTopicLen || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !legalByte(s[i]) {
			return false
		}
	}
	return true
}

// span is a capture's byte range in the MQTT topic.
type span struct{ from, to int32 }

// match matches topic against the rule's filter and fills caps.
func (r *Rule) match(topic string, caps *[MaxCaptures]span) bool {
	pos := 0
	for i, l := range r.levels {
		if l.kind == hashLevel {
			// '#' also matches the parent level [MQTT-4.7.1-2]; not a '$' topic at the first level.
			return !(i == 0 && strings.HasPrefix(topic, "$"))
		}
		if pos > len(topic) {
			return false // the topic has fewer levels
		}
		end := strings.IndexByte(topic[pos:], '/')
		if end < 0 {
			end = len(topic)
		} else {
			end += pos
		}
		seg := topic[pos:end]
		switch l.kind {
		case litLevel:
			if seg != l.lit {
				return false
			}
		case plusLevel, capLevel:
			if i == 0 && strings.HasPrefix(topic, "$") {
				return false // [MQTT-4.7.2-1]
			}
			if l.kind == capLevel {
				caps[l.cap] = span{int32(pos), int32(end)}
			}
		}
		pos = end + 1
	}
	return pos == len(topic)+1 // every level of the topic consumed
}

// Table is an ordered list of rules with what happens to topics none matches.
type Table struct {
	rules  []*Rule
	def    string // the default Kafka topic (the messages topic)
	refuse bool   // unrouted topics are refused on publish
}

// NewTable compiles specs in order. def is the Kafka topic of unrouted topics (when accepted, and always on
// the read side); refuse refuses publishes no rule matches.
func NewTable(specs []string, def string, refuse bool) (*Table, error) {
	t := &Table{def: def, refuse: refuse}
	for _, s := range specs {
		r, err := Parse(s)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", s, err)
		}
		t.rules = append(t.rules, r)
	}
	return t, nil
}

// Rules returns the compiled rules, in order.
func (t *Table) Rules() []*Rule { return t.rules }

// Default returns the Kafka topic of unrouted topics.
func (t *Table) Default() string { return t.def }

// Result is where a publish goes.
type Result struct {
	Topic string // Kafka topic
	Rule  int    // index of the rule that matched; -1 = unrouted (the default topic)
	// Partition key: topic[KeyFrom:KeyTo] when HasKey (a capture of the MQTT topic).
	KeyFrom, KeyTo int
	HasKey         bool
}

// Route returns where a message published to the MQTT topic goes. It fails with ErrUnrouted when no rule
// matches and the table refuses unrouted topics, and with ErrIllegalTopic when the matching rule builds an
// illegal Kafka topic name from the topic's captures.
func (t *Table) Route(topic string) (Result, error) {
	var caps [MaxCaptures]span
	for i, r := range t.rules {
		if !r.match(topic, &caps) {
			continue
		}
		res := Result{Topic: r.fixed, Rule: i}
		if r.key >= 0 {
			c := caps[r.key]
			res.KeyFrom, res.KeyTo, res.HasKey = int(c.from), int(c.to), true
		}
		if r.fixed == "" {
			n := 0
			for _, p := range r.tmpl {
				if p.lit != "" {
					n += len(p.lit)
				} else {
					c := caps[p.cap]
					n += int(c.to - c.from)
				}
			}
			var b strings.Builder
			b.Grow(n)
			for _, p := range r.tmpl {
				if p.lit != "" {
					b.WriteString(p.lit)
				} else {
					b.WriteString(topic[caps[p.cap].from:caps[p.cap].to])
				}
			}
			res.Topic = b.String()
			if !LegalTopic(res.Topic) {
				return Result{Rule: i}, ErrIllegalTopic
			}
		}
		return res, nil
	}
	if t.refuse {
		return Result{Rule: -1}, ErrUnrouted
	}
	return Result{Topic: t.def, Rule: -1}, nil
}

// RoutesTo reports whether a record of the MQTT topic belongs in kafkaTopic: the first matching rule names
// it, or no rule matches and it is the default topic (whatever the refuse setting: a Kafka producer may write
// unrouted topics to the default topic). It does not allocate.
func (t *Table) RoutesTo(topic, kafkaTopic string) bool {
	var caps [MaxCaptures]span
	for _, r := range t.rules {
		if !r.match(topic, &caps) {
			continue
		}
		if r.fixed != "" {
			return kafkaTopic == r.fixed
		}
		rest := kafkaTopic
		for _, p := range r.tmpl {
			s := p.lit
			if s == "" {
				s = topic[caps[p.cap].from:caps[p.cap].to]
			}
			if !strings.HasPrefix(rest, s) {
				return false
			}
			rest = rest[len(s):]
		}
		return rest == "" && LegalTopic(kafkaTopic)
	}
	return kafkaTopic == t.def
}

// Templated returns the rules whose Kafka topic uses captures.
func (t *Table) Templated() []*Rule {
	var out []*Rule
	for _, r := range t.rules {
		if r.fixed == "" {
			out = append(out, r)
		}
	}
	return out
}

// FixedTopics returns the distinct Kafka topics of rules without captures, in rule order.
func (t *Table) FixedTopics() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range t.rules {
		if r.fixed != "" && !seen[r.fixed] {
			seen[r.fixed] = true
			out = append(out, r.fixed)
		}
	}
	return out
}

// MatchesTemplate reports whether the Kafka topic name could have been built by the rule's template (each
// capture standing for any run, possibly empty, of legal characters). For a rule without captures it is an
// equality test.
func (r *Rule) MatchesTemplate(name string) bool {
	if r.fixed != "" {
		return name == r.fixed
	}
	if !LegalTopic(name) {
		return false
	}
	return matchParts(r.tmpl, name)
}

func matchParts(ps []part, s string) bool {
	if len(ps) == 0 {
		return s == ""
	}
	if p := ps[0]; p.lit != "" {
		return strings.HasPrefix(s, p.lit) && matchParts(ps[1:], s[len(p.lit):])
	}
	for i := 0; i <= len(s); i++ { // a capture: try every length (names are short; rules few)
		if matchParts(ps[1:], s[i:]) {
			return true
		}
	}
	return false
}

// MatchesTemplate reports whether any rule of the table could produce the Kafka topic name.
func (t *Table) MatchesTemplate(name string) bool {
	for _, r := range t.rules {
		if r.MatchesTemplate(name) {
			return true
		}
	}
	return false
}

// Overlaps reports whether some MQTT topic matches both the rule's filter and the MQTT topic filter f (a
// subscription's: '+' and a trailing '#' are wildcards): whether records the rule routes can match f.
func (r *Rule) Overlaps(f string) bool {
	fl := strings.Split(f, "/")
	for i := 0; ; i++ {
		rEnd, fEnd := i >= len(r.levels), i >= len(fl)
		rHash := !rEnd && r.levels[i].kind == hashLevel
		fHash := !fEnd && fl[i] == "#"
		if rHash || fHash {
			// '#' matches what is left, none or more levels; in the first level, not a '$' topic.
			if i == 0 {
				return !(rHash && !fHash && fl[0] != "+" && strings.HasPrefix(fl[0], "$")) &&
					!(fHash && !rHash && r.levels[0].kind == litLevel && strings.HasPrefix(r.levels[0].lit, "$"))
			}
			return true
		}
		if rEnd || fEnd {
			return rEnd && fEnd
		}
		rWild, fWild := r.levels[i].kind != litLevel, fl[i] == "+"
		switch {
		case rWild && fWild:
		case rWild:
			if i == 0 && strings.HasPrefix(fl[0], "$") {
				return false // [MQTT-4.7.2-1]
			}
		case fWild:
			if i == 0 && strings.HasPrefix(r.levels[0].lit, "$") {
				return false
			}
		case r.levels[i].lit != fl[i]:
			return false
		}
	}
}

// MayHold reports whether the Kafka topic may hold records that a subscription to the MQTT topic filter f
// receives: it is the default topic (which holds what no rule matches), or a rule that can produce its name
// routes topics that can match f. A reader of f needs every Kafka topic for which it is true, and no other.
func (t *Table) MayHold(f, kafkaTopic string) bool {
	if kafkaTopic == t.def {
		return true
	}
	for _, r := range t.rules {
		if r.MatchesTemplate(kafkaTopic) && r.Overlaps(f) {
			return true
		}
	}
	return false
}
