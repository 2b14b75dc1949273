package auth

import (
	"fmt"
	"sort"
	"strings"
)

// Rules is the authorization rules file, decoded by the caller (cmd/ferry reads it as YAML: only cmd/ferry
// reads files of settings, see CONVENTIONS.md). Compile checks it.
type Rules struct {
	// DefaultRole is the role of a token that carries no roles claim (or an empty one). Empty: such a token
	// gets no privileges.
	DefaultRole string `yaml:"default_role" json:"default_role"`
	// AnonymousRole is the role of a client that sent no token, when anonymous access is allowed. Empty:
	// anonymous clients may connect but neither publish nor subscribe.
	AnonymousRole string `yaml:"anonymous_role" json:"anonymous_role"`
	// Roles maps a role name, as it appears in the roles claim, to its privileges.
	Roles map[string]RoleRules `yaml:"roles" json:"roles"`
}

// RoleRules are the topic privileges of one role: MQTT topic filters in which a whole level may be
// {identity}, replaced by the client's identity when a topic or filter is checked.
//
// Deny patterns refuse inside what the allow patterns grant, and deny wins, whatever the order and across
// all the roles of a client (mosquitto's "deny" works the same way):
//   - a PUBLISH to a topic matched by a DenyPublish pattern is refused, even if a Publish pattern matches;
//   - a SUBSCRIBE filter covered by a DenySubscribe pattern (every topic it can match is denied, e.g.
//     ops/internal/# or ops/internal/+/log under a deny of ops/internal/#) is refused;
//   - a wider filter that only overlaps a denied tree (# or ops/+/# there) is granted, but no message on a
//     denied topic is ever delivered through it: every delivery is checked (MayReceive).
type RoleRules struct {
	Publish       []string `yaml:"publish" json:"publish"`
	Subscribe     []string `yaml:"subscribe" json:"subscribe"`
	DenyPublish   []string `yaml:"deny_publish" json:"deny_publish"`
	DenySubscribe []string `yaml:"deny_subscribe" json:"deny_subscribe"`
}

// identityToken is the placeholder for the client's identity in a pattern; it must be a whole topic level.
const identityToken = "{identity}"

// Kinds of pattern levels.
const (
	lvLiteral  uint8 = iota
	lvPlus           // '+': exactly one level
	lvHash           // '#': this level and every one below it, or none (last level only)
	lvIdentity       // {identity}: exactly the client's identity
)

type level struct {
	kind uint8
	lit  string
}

// pattern is one compiled privilege pattern.
type pattern struct {
	src    string
	levels []level
}

// compilePattern checks and compiles one pattern of a rules file.
func compilePattern(s string) (pattern, error) {
	if s == "" {
		return pattern{}, fmt.Errorf("empty pattern")
	}
	if strings.HasPrefix(s, "$share/") {
		return pattern{}, fmt.Errorf("pattern %q: shared subscriptions cannot be granted by a pattern", s)
	}
	if strings.ContainsRune(s, 0) {
		return pattern{}, fmt.Errorf("pattern %q: contains U+0000", s)
	}
	parts := strings.Split(s, "/")
	p := pattern{src: s, levels: make([]level, len(parts))}
	for i, part := range parts {
		switch {
		case part == "#":
			if i != len(parts)-1 {
				return pattern{}, fmt.Errorf("pattern %q: '#' must be the last level", s)
			}
			p.levels[i] = level{kind: lvHash}
		case part == "+":
			p.levels[i] = level{kind: lvPlus}
		case part == identityToken:
			p.levels[i] = level{kind: lvIdentity}
		case strings.ContainsAny(part, "+#"):
			return pattern{}, fmt.Errorf("pattern %q: '+' and '#' must be a whole level", s)
		case strings.Contains(part, "{identity}"):
			return pattern{}, fmt.Errorf("pattern %q: {identity} must be a whole level", s)
		default:
			p.levels[i] = level{kind: lvLiteral, lit: part}
		}
	}
	return p, nil
}

// UsableIdentity reports whether id can stand for {identity}: a non-empty single topic level that is not a
// wildcard and not a '$' topic. An identity with '/', '+', '#', U+0000 or a leading '$' would widen what a
// pattern grants (a device "a/b" would own place/a/b/#, one named "+" every place); such identities are
// refused at CONNECT, and a pattern never matches them (defence in depth).
func UsableIdentity(id string) bool {
	return id != "" && id[0] != '$' && !strings.ContainsAny(id, "/+#\x00")
}

// nextLevel splits the first level off s: level, the rest after the '/', and whether there was a '/'.
func nextLevel(s string) (string, string, bool) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// matchTopic reports whether topic (a topic name: no wildcards) is matched by p for identity id. It does
// not allocate. A pattern whose first level is a wildcard does not match a topic that starts with '$'
// [MQTT-4.7.2-1]; {identity} never matches when id is not usable.
func (p *pattern) matchTopic(topic, id string) bool {
	if len(topic) > 0 && topic[0] == '$' && p.levels[0].kind != lvLiteral {
		return false
	}
	rest, more := topic, true
	for i := range p.levels {
		lv := &p.levels[i]
		if lv.kind == lvHash {
			return true // "a/#" matches "a" too [MQTT-4.7.1-2]
		}
		if !more {
			return false // the topic is shorter than the pattern
		}
		var t string
		t, rest, more = nextLevel(rest)
		switch lv.kind {
		case lvLiteral:
			if t != lv.lit {
				return false
			}
		case lvIdentity:
			if t != id || !UsableIdentity(id) {
				return false
			}
		}
	}
	return !more
}

// coversFilter reports whether every topic that filter (a valid topic filter) matches is also matched by p
// for identity id: a subscription to filter can then receive nothing p does not grant. It does not
// allocate.
//
// Level by level: a pattern '#' covers anything from there on; a pattern '+' covers one literal or '+' level
// but not '#' (which also matches several levels, or none); a literal or {identity} level covers only the
// same literal (a wildcard in the filter would reach other identities). When the filter ends, the pattern
// must end too, or go on with a '#' alone (which matches no level). At the first level, a wildcard in the
// pattern does not cover a filter level starting with '$', as it would not match such topics.
func (p *pattern) coversFilter(filter, id string) bool {
	rest, more := filter, true
	for i := range p.levels {
		lv := &p.levels[i]
		if !more {
			return lv.kind == lvHash // '#' is always the last level
		}
		var f string
		f, rest, more = nextLevel(rest)
		if i == 0 && lv.kind != lvLiteral && len(f) > 0 && f[0] == '$' {
			return false
		}
		switch lv.kind {
		case lvHash:
			return true
		case lvPlus:
			if f == "#" {
				return false
			}
		case lvLiteral:
			if f != lv.lit {
				return false // also when f is '+' or '#'
			}
		case lvIdentity:
			if f != id || !UsableIdentity(id) {
				return false
			}
		}
	}
	return !more // the filter has levels the pattern does not
}

// grants are the compiled privileges of one set of roles. They are shared, read-only, by every principal
// with the same roles under one Policy: {identity} is substituted at match time, so nothing is compiled per
// client.
type grants struct {
	name      string // the roles, sorted and joined with ',', for logs
	publish   []pattern
	subscribe []pattern
	denyPub   []pattern // deny wins over publish (RoleRules)
	denySub   []pattern // deny wins over subscribe and delivery
	pubAll    bool      // publish has "#": every topic not starting with '$'
	subAll    bool      // subscribe has "#"
}

// everything is the grant of a policy without rules: authentication only.
// It allows every topic and filter, '$' ones included, as Ferry does without authorization.
var everything = &grants{name: "*", pubAll: true, subAll: true}

// nothing is the grant of a principal without any role.
var nothing = &grants{name: ""}

func (g *grants) mayPublish(topic, id string) bool {
	if g == everything {
		return true
	}
	if matchesAny(g.denyPub, topic, id) {
		return false // deny wins
	}
	if g.pubAll && (len(topic) == 0 || topic[0] != '$') {
		return true
	}
	return matchesAny(g.publish, topic, id)
}

func (g *grants) mayReceive(topic, id string) bool {
	if g == everything {
		return true
	}
	if matchesAny(g.denySub, topic, id) {
		return false // deny wins, also through a wider filter granted before
	}
	if g.subAll && (len(topic) == 0 || topic[0] != '$') {
		return true
	}
	return matchesAny(g.subscribe, topic, id)
}

func (g *grants) maySubscribe(filter, id string) bool {
	if g == everything {
		return true
	}
	for i := range g.denySub {
		if g.denySub[i].coversFilter(filter, id) {
			return false // deny wins: every topic the filter matches is denied
		}
	}
	for i := range g.subscribe {
		if g.subscribe[i].coversFilter(filter, id) {
			return true
		}
	}
	return false
}

// matchesAny reports whether one of ps matches topic for identity id.
func matchesAny(ps []pattern, topic, id string) bool {
	for i := range ps {
		if ps[i].matchTopic(topic, id) {
			return true
		}
	}
	return false
}

// compiledRules is a checked rules file.
type compiledRules struct {
	roles         map[string]*grants // one role each
	defaultRole   string
	anonymousRole string
}

// compileRules checks r: every pattern valid, the default and anonymous roles defined. Errors name the role
// and the pattern.
func compileRules(r *Rules) (*compiledRules, error) {
	cr := &compiledRules{roles: make(map[string]*grants, len(r.Roles)), defaultRole: r.DefaultRole,
		anonymousRole: r.AnonymousRole}
	names := make([]string, 0, len(r.Roles))
	for n := range r.Roles {
		names = append(names, n)
	}
	sort.Strings(names) // the first error is the same on every run
	for _, n := range names {
		if n == "" || strings.ContainsAny(n, ", ") {
			return nil, fmt.Errorf("role %q: a role name must be non-empty, without spaces or commas", n)
		}
		rr := r.Roles[n]
		g := &grants{name: n}
		for _, s := range rr.Publish {
			p, err := compilePattern(s)
			if err != nil {
				return nil, fmt.Errorf("role %s: publish: %w", n, err)
			}
			g.publish = append(g.publish, p)
		}
		for _, s := range rr.Subscribe {
			p, err := compilePattern(s)
			if err != nil {
				return nil, fmt.Errorf("role %s: subscribe: %w", n, err)
			}
			g.subscribe = append(g.subscribe, p)
		}
		for _, s := range rr.DenyPublish {
			p, err := compilePattern(s)
			if err != nil {
				return nil, fmt.Errorf("role %s: deny_publish: %w", n, err)
			}
			g.denyPub = append(g.denyPub, p)
		}
		for _, s := range rr.DenySubscribe {
			p, err := compilePattern(s)
			if err != nil {
				return nil, fmt.Errorf("role %s: deny_subscribe: %w", n, err)
			}
			g.denySub = append(g.denySub, p)
		}
		g.finish()
		cr.roles[n] = g
	}
	if r.DefaultRole != "" && cr.roles[r.DefaultRole] == nil {
		return nil, fmt.Errorf("default_role %q is not a role of the file", r.DefaultRole)
	}
	if r.AnonymousRole != "" && cr.roles[r.AnonymousRole] == nil {
		return nil, fmt.Errorf("anonymous_role %q is not a role of the file", r.AnonymousRole)
	}
	return cr, nil
}

// finish sets the fast-path flags.
func (g *grants) finish() {
	for _, p := range g.publish {
		if p.src == "#" {
			g.pubAll = true
		}
	}
	for _, p := range g.subscribe {
		if p.src == "#" {
			g.subAll = true
		}
	}
}

// union merges the grants of several roles (sorted by name).
func union(gs []*grants) *grants {
	if len(gs) == 1 {
		return gs[0]
	}
	u := &grants{}
	names := make([]string, len(gs))
	for i, g := range gs {
		names[i] = g.name
		u.publish = append(u.publish, g.publish...)
		u.subscribe = append(u.subscribe, g.subscribe...)
		u.denyPub = append(u.denyPub, g.denyPub...) // a deny of any role wins
		u.denySub = append(u.denySub, g.denySub...)
	}
	u.name = strings.Join(names, ",")
	u.finish()
	return u
}
