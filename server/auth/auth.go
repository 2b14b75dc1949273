// Package auth authenticates MQTT clients with JSON Web Tokens or user names and bcrypt-hashed passwords
// (passwords.go), and authorizes their topics.
//
// A Policy is immutable: verification keys, how tokens are read, and the compiled rules (roles → publish and
// subscribe patterns, with {identity} replaced by the client's identity when a topic is checked). An
// Authority holds the current Policy behind an atomic pointer, so a reload (SIGHUP in cmd/ferry) builds a new
// Policy off the event loops and swaps it in one store; a Policy that fails to build is never installed.
//
// A Principal is what a connection keeps: its identity and a pointer to the compiled grants of its roles,
// shared by every principal with the same roles under one Policy. Checks allocate nothing.
//
// This package reads no files: callers pass bytes (ParseKeyFile, ParseJWKS) and a decoded Rules value, so
// only cmd/ferry reads settings files.
package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/golang-jwt/jwt/v5"
)

// The two ways a CONNECT fails authentication. Errors returned by Authenticate wrap one of them.
var (
	// ErrBadCredentials: a token that is malformed, expired, not yet valid, badly signed, or for another
	// issuer or audience (MQTT 5 CONNACK 0x86, v3 return code 4).
	ErrBadCredentials = errors.New("bad credentials")
	// ErrNotAuthorized: no token where one is needed, or a valid token without a usable identity (0x87,
	// v3 return code 5).
	ErrNotAuthorized = errors.New("not authorized")
)

// Settings say how tokens are read and checked.
type Settings struct {
	TokenField    string // CONNECT field holding the token: "password" (default) or "username"
	IdentityClaim string // claim naming the client; default "sub"
	RolesClaim    string // claim listing its roles: an array of strings, or one space-separated string (OAuth "scope"); default "roles"
	Issuer        string // required "iss", if set
	Audience      string // required in "aud", if set
	Anonymous     bool   // clients without a token are accepted, with the rules' anonymous_role
	Users         Users  // user name / password clients (passwords.go); checked before tokens
}

func (s *Settings) defaults() {
	if s.TokenField == "" {
		s.TokenField = "password"
	}
	if s.IdentityClaim == "" {
		s.IdentityClaim = "sub"
	}
	if s.RolesClaim == "" {
		s.RolesClaim = "roles"
	}
}

// Policy is one immutable authentication and authorization configuration.
type Policy struct {
	s      Settings
	keys   *Keys
	parser *jwt.Parser
	rules  *compiledRules // nil: every client accepted has every privilege (authentication only)

	mu   sync.Mutex
	sets map[string]*grants // grants of a set of several roles, by their sorted names joined with ','
}

// maxRoleSets bounds the cache of role combinations; past it a combination is compiled per connection.
const maxRoleSets = 4096

// NewPolicy builds a Policy. keys may be nil when only anonymous clients are accepted; rules nil means no
// authorization: every client accepted may publish and subscribe to everything.
func NewPolicy(s Settings, keys *Keys, rules *Rules) (*Policy, error) {
	s.defaults()
	if s.TokenField != "password" && s.TokenField != "username" {
		return nil, fmt.Errorf("token field %q: want password or username", s.TokenField)
	}
	if keys.Len() == 0 && !s.Anonymous && len(s.Users) == 0 {
		return nil, errors.New("no token key, no password file and anonymous access off: every client would be refused")
	}
	p := &Policy{s: s, keys: keys, sets: map[string]*grants{}}
	if keys.Len() > 0 {
		opts := []jwt.ParserOption{jwt.WithValidMethods(keys.algorithms())}
		if s.Issuer != "" {
			opts = append(opts, jwt.WithIssuer(s.Issuer))
		}
		if s.Audience != "" {
			opts = append(opts, jwt.WithAudience(s.Audience))
		}
		p.parser = jwt.NewParser(opts...)
	}
	if rules != nil {
		cr, err := compileRules(rules)
		if err != nil {
			return nil, err
		}
		p.rules = cr
	}
	return p, nil
}

// TokenInUsername reports whether the token is read from the CONNECT user name instead of the password.
func (p *Policy) TokenInUsername() bool { return p.s.TokenField == "username" }

// Principal is an authenticated (or anonymous) client: its identity and its compiled privileges.
type Principal struct {
	identity string
	g        *grants
	pol      *Policy
	origin   uint8
}

// Where a principal's roles came from, so that a new Policy can resolve them again.
const (
	fromRoles     uint8 = iota // the token's roles claim
	fromDefault                // no roles claim: the default role
	fromAnonymous              // no token
)

// Identity returns the client's identity ("" for an anonymous client).
func (pr *Principal) Identity() string { return pr.identity }

// Roles returns the roles whose privileges the principal has, joined with ',' ("*" without rules).
func (pr *Principal) Roles() string { return pr.g.name }

// MayPublish reports whether the principal may publish to topic (a topic name). Allocation-free.
func (pr *Principal) MayPublish(topic string) bool { return pr.g.mayPublish(topic, pr.identity) }

// MaySubscribe reports whether the principal may subscribe to filter (a valid topic filter): true only if
// one subscribe pattern covers every topic the filter matches, so a wildcard cannot widen access, and no
// deny pattern covers it (deny wins). Allocation-free.
func (pr *Principal) MaySubscribe(filter string) bool { return pr.g.maySubscribe(filter, pr.identity) }

// MayReceive reports whether a message on topic may be delivered to the principal: its topic must match one
// of the subscribe patterns. Allocation-free; one comparison for a role that may subscribe to "#".
func (pr *Principal) MayReceive(topic string) bool { return pr.g.mayReceive(topic, pr.identity) }

// Authenticate checks a CONNECT's credentials. username and password are the CONNECT fields (nil when
// absent); certIdentity is the identity a verified TLS client certificate gives, "" if none. The token is
// read from the configured field; without a token, a certificate identity gets the default role, and
// otherwise the client is anonymous (refused unless anonymous access is on). Errors wrap ErrBadCredentials
// or ErrNotAuthorized and say why, for logs. Runs on an event loop: verifying a signature is CPU work (see
// the benchmarks), nothing blocks.
func (p *Policy) Authenticate(username, password []byte, certIdentity string) (*Principal, error) {
	token := password
	if p.TokenInUsername() {
		token = username
	}
	if len(token) == 0 {
		if certIdentity != "" {
			if !UsableIdentity(certIdentity) {
				return nil, fmt.Errorf("%w: certificate identity %q cannot be a topic level", ErrNotAuthorized, certIdentity)
			}
			return p.principal(certIdentity, nil, fromDefault), nil
		}
		if !p.s.Anonymous {
			return nil, fmt.Errorf("%w: no token in the CONNECT %s", ErrNotAuthorized, p.s.TokenField)
		}
		return p.principal("", nil, fromAnonymous), nil
	}
	if p.parser == nil {
		return nil, fmt.Errorf("%w: a token was sent but no token key is configured", ErrBadCredentials)
	}
	claims := jwt.MapClaims{}
	if _, err := p.parser.ParseWithClaims(string(token), claims, p.keyFor); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCredentials, err)
	}
	id, _ := claims[p.s.IdentityClaim].(string)
	if id == "" {
		return nil, fmt.Errorf("%w: token has no %q claim", ErrNotAuthorized, p.s.IdentityClaim)
	}
	if !UsableIdentity(id) {
		return nil, fmt.Errorf("%w: identity %q cannot be a topic level (no '/', '+', '#', leading '$')", ErrNotAuthorized, id)
	}
	roles, ok := rolesOf(claims[p.s.RolesClaim])
	if !ok {
		return p.principal(id, nil, fromDefault), nil
	}
	return p.principal(id, roles, fromRoles), nil
}

// rolesOf reads a roles claim: an array of strings or a space-separated string. ok is false when the claim
// is absent or empty.
func rolesOf(v any) ([]string, bool) {
	var roles []string
	switch r := v.(type) {
	case string:
		roles = strings.Fields(r)
	case []any:
		for _, e := range r {
			if s, ok := e.(string); ok && s != "" {
				roles = append(roles, s)
			}
		}
	}
	return roles, len(roles) > 0
}

// keyFor is the jwt Keyfunc: the keys that verify the token's algorithm (and its kid, when both the token
// and the key have one).
func (p *Policy) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	kid, _ := t.Header["kid"].(string)
	var set jwt.VerificationKeySet
	for i := range p.keys.keys {
		k := &p.keys.keys[i]
		if kid != "" && k.kid != "" && k.kid != kid {
			continue
		}
		if slices.Contains(k.algs, alg) {
			set.Keys = append(set.Keys, k.pub)
		}
	}
	switch len(set.Keys) {
	case 0:
		return nil, fmt.Errorf("no key for alg %s, kid %q", alg, kid)
	case 1:
		return set.Keys[0], nil
	}
	return set, nil
}

// principal resolves roles (nil for the default or anonymous role) into a Principal of this Policy.
func (p *Policy) principal(id string, roles []string, origin uint8) *Principal {
	return &Principal{identity: id, g: p.grantsFor(roles, origin), pol: p, origin: origin}
}

// grantsFor returns the shared grants of a set of role names. Unknown roles are ignored: a token whose
// roles are all unknown has no privileges (it does not fall back to the default role).
func (p *Policy) grantsFor(roles []string, origin uint8) *grants {
	r := p.rules
	if r == nil {
		return everything
	}
	switch origin {
	case fromAnonymous:
		if !p.s.Anonymous || r.anonymousRole == "" {
			return nothing
		}
		return r.roles[r.anonymousRole]
	case fromDefault:
		if r.defaultRole == "" {
			return nothing
		}
		return r.roles[r.defaultRole]
	}
	var known []*grants
	for _, n := range roles {
		if g := r.roles[n]; g != nil && !slices.Contains(known, g) {
			known = append(known, g)
		}
	}
	switch len(known) {
	case 0:
		return nothing
	case 1:
		return known[0]
	}
	slices.SortFunc(known, func(a, b *grants) int { return strings.Compare(a.name, b.name) })
	names := make([]string, len(known))
	for i, g := range known {
		names[i] = g.name
	}
	key := strings.Join(names, ",")
	p.mu.Lock()
	defer p.mu.Unlock()
	if g := p.sets[key]; g != nil {
		return g
	}
	g := union(known)
	if len(p.sets) < maxRoleSets {
		p.sets[key] = g
	}
	return g
}

// Authority holds the current Policy. Every method is safe for concurrent use.
type Authority struct {
	cur atomic.Pointer[Policy]
}

// NewAuthority returns an Authority serving p.
func NewAuthority(p *Policy) *Authority {
	a := &Authority{}
	a.cur.Store(p)
	return a
}

// Policy returns the current Policy.
func (a *Authority) Policy() *Policy { return a.cur.Load() }

// Replace installs p for every check from now on. Connected clients keep their identity and roles; their
// next check uses p's rules (see Current).
func (a *Authority) Replace(p *Policy) { a.cur.Store(p) }

// Current returns pr under the current Policy: pr itself, or, after a Replace, a new Principal with the same
// identity and roles resolved by the new rules (allocated once per connection and reload). The caller keeps
// the result in place of pr. One atomic load when nothing changed.
func (a *Authority) Current(pr *Principal) *Principal {
	p := a.cur.Load()
	if pr.pol == p {
		return pr
	}
	var roles []string
	if pr.origin == fromRoles && pr.g.name != "" && pr.g != everything {
		roles = strings.Split(pr.g.name, ",")
	}
	return p.principal(pr.identity, roles, pr.origin)
}
