package auth

import (
	"strings"
	"testing"
)

func mustPattern(t *testing.T, s string) pattern {
	t.Helper()
	p, err := compilePattern(s)
	if err != nil {
		t.Fatalf("compile %q: %v", s, err)
	}
	return p
}

func TestAuthPatternMatchTopic(t *testing.T) {
	cases := []struct {
		pattern, topic, id string
		want               bool
	}{
		{"place/{identity}/#", "place/dev1/temp", "dev1", true},
		{"place/{identity}/#", "place/dev1", "dev1", true}, // '#' matches the parent level too
		{"place/{identity}/#", "place/dev2/temp", "dev1", false},
		{"place/{identity}/#", "place/dev1x/temp", "dev1", false},
		{"place/{identity}/#", "place", "dev1", false},
		{"place/{identity}/#", "place/+/temp", "+", false},     // an identity "+" never matches
		{"place/{identity}/#", "place/a/b/temp", "a/b", false}, // nor one with '/'
		{"place/{identity}/#", "place//temp", "", false},       // nor an empty one (anonymous)
		{"place/{identity}", "place/dev1", "dev1", true},
		{"place/{identity}", "place/dev1/x", "dev1", false},
		{"place/+/state", "place/x/state", "", true},
		{"place/+/state", "place/x/y/state", "", false},
		{"place/+/state", "place//state", "", true}, // an empty level is a level
		{"#", "a/b/c", "", true},
		{"#", "$SYS/broker", "", false}, // [MQTT-4.7.2-1] wildcards do not match '$' topics
		{"+/broker", "$SYS/broker", "", false},
		{"$SYS/#", "$SYS/broker/load", "", true},
		{"$SYS/+/load", "$SYS/broker/load", "", true},
		{"{identity}/#", "$dev/x", "$dev", false}, // a '$' identity is not usable
		{"{identity}/#", "dev/x", "dev", true},
		{"a/b", "a/b", "", true},
		{"a/b", "a/b/", "", false},
		{"a/b/", "a/b/", "", true},
		{"a/#", "a", "", true},
		{"a/+", "a", "", false},
		{"a/+/#", "a/x", "", true},
	}
	for _, c := range cases {
		p := mustPattern(t, c.pattern)
		if got := p.matchTopic(c.topic, c.id); got != c.want {
			t.Errorf("pattern %q topic %q identity %q: match = %v, want %v", c.pattern, c.topic, c.id, got, c.want)
		}
	}
}

func TestAuthPatternCoversFilter(t *testing.T) {
	cases := []struct {
		pattern, filter, id string
		want                bool
	}{
		// The device's own subtree.
		{"place/{identity}/#", "place/dev1/#", "dev1", true},
		{"place/{identity}/#", "place/dev1/+", "dev1", true},
		{"place/{identity}/#", "place/dev1/+/x/#", "dev1", true},
		{"place/{identity}/#", "place/dev1", "dev1", true},
		{"place/{identity}/#", "place/dev1/temp", "dev1", true},
		// Widening wildcards are refused.
		{"place/{identity}/#", "#", "dev1", false},
		{"place/{identity}/#", "+/dev1/#", "dev1", false},
		{"place/{identity}/#", "place/#", "dev1", false},
		{"place/{identity}/#", "place/+", "dev1", false},
		{"place/{identity}/#", "place/+/x", "dev1", false},
		{"place/{identity}/#", "place/+/#", "dev1", false},
		{"place/{identity}/#", "place/dev2/#", "dev1", false},
		// An identity with wildcard or separator characters never widens access.
		{"place/{identity}/#", "place/+/#", "+", false},
		{"place/{identity}/#", "place/#", "#", false},
		{"place/{identity}/#", "place/a/b/#", "a/b", false},
		{"place/{identity}/#", "place//#", "", false},
		// '+' in the pattern covers a literal or '+', not '#'.
		{"place/+/state", "place/+/state", "", true},
		{"place/+/state", "place/x/state", "", true},
		{"place/+/state", "place/#", "", false},
		{"place/+/state", "place/+/#", "", false},
		{"place/+/state", "place/+", "", false},
		{"place/+/state", "place/+/state/x", "", false},
		// '#' at different levels.
		{"#", "#", "", true},
		{"#", "a/+/b/#", "", true},
		{"#", "$SYS/#", "", false}, // '#' does not match '$' topics, so it does not cover them
		{"#", "$SYS/broker", "", false},
		{"+/#", "+/#", "", true},
		{"+/#", "#", "", false}, // conservative: both match every non-'$' topic, but '#' is not checked level by level
		{"a/#", "a", "", true},
		{"a/#", "a/#", "", true},
		{"a/#", "#", "", false},
		{"a/+/#", "a", "", false}, // "a/#" matches "a", which "a/+/#" does not
		{"a/+/#", "a/#", "", false},
		{"a/+/#", "a/x", "", true},
		{"a", "a/#", "", false},
		{"a", "a", "", true},
		{"a/b", "a/+", "", false},
		// '$' topics need a literal first level.
		{"$SYS/#", "$SYS/#", "", true},
		{"$SYS/#", "$SYS/+/load", "", true},
		{"$SYS/#", "#", "", false},
		{"+/x", "$SYS/x", "", false},
		{"+/x", "+/x", "", true},
	}
	for _, c := range cases {
		p := mustPattern(t, c.pattern)
		if got := p.coversFilter(c.filter, c.id); got != c.want {
			t.Errorf("pattern %q filter %q identity %q: covers = %v, want %v", c.pattern, c.filter, c.id, got, c.want)
		}
	}
}

// Every topic a covered filter matches must be matched by the pattern: checked against a small universe of
// topics built from the levels the cases use.
func TestAuthCoverageImpliesMatch(t *testing.T) {
	levels := []string{"a", "b", "dev1", "$SYS", ""}
	topics := append([]string(nil), levels...) // every topic of one to three levels
	for depth := 1; depth < 3; depth++ {
		for _, t := range topics {
			if strings.Count(t, "/") != depth-1 {
				continue
			}
			for _, l := range levels {
				topics = append(topics, t+"/"+l)
			}
		}
	}
	filters := []string{"#", "+", "a/#", "a/+", "+/#", "a/+/#", "a/dev1/#", "+/dev1", "$SYS/#", "a", "a/b", "dev1/#", "+/+/+"}
	patterns := []string{"#", "a/#", "a/{identity}/#", "{identity}/#", "+/{identity}", "a/+", "$SYS/#", "+/#", "a/+/#"}
	for _, ps := range patterns {
		p := mustPattern(t, ps)
		for _, f := range filters {
			if !p.coversFilter(f, "dev1") {
				continue
			}
			fp := mustPattern(t, f) // a filter is a pattern without {identity}
			for _, topic := range topics {
				if fp.matchTopic(topic, "") && !p.matchTopic(topic, "dev1") {
					t.Errorf("pattern %q covers filter %q, yet the filter matches %q and the pattern does not", ps, f, topic)
				}
			}
		}
	}
}

func TestAuthPatternErrors(t *testing.T) {
	for _, s := range []string{"", "a/#/b", "a/b#", "a+/b", "place/dev-{identity}/#", "$share/g/a", "a\x00"} {
		if _, err := compilePattern(s); err == nil {
			t.Errorf("pattern %q: compiled, want an error", s)
		}
	}
}

func TestAuthUsableIdentity(t *testing.T) {
	for id, want := range map[string]bool{"dev1": true, "a@b.example": true, "": false, "+": false, "#": false,
		"a/b": false, "x+": false, "$dev": false, "a\x00": false} {
		if got := UsableIdentity(id); got != want {
			t.Errorf("UsableIdentity(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestAuthRulesErrors(t *testing.T) {
	cases := []struct {
		r    Rules
		want string
	}{
		{Rules{Roles: map[string]RoleRules{"d": {Publish: []string{"a/#/b"}}}}, "role d: publish: pattern \"a/#/b\""},
		{Rules{DefaultRole: "x", Roles: map[string]RoleRules{"d": {}}}, "default_role \"x\""},
		{Rules{AnonymousRole: "x"}, "anonymous_role \"x\""},
		{Rules{Roles: map[string]RoleRules{"a,b": {}}}, "role \"a,b\""},
	}
	for _, c := range cases {
		_, err := compileRules(&c.r)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("rules %+v: error %v, want one containing %q", c.r, err, c.want)
		}
	}
}

func TestAuthGrantsUnion(t *testing.T) {
	pol, err := NewPolicy(Settings{Anonymous: true}, nil, &Rules{
		DefaultRole: "device", AnonymousRole: "guest",
		Roles: map[string]RoleRules{
			"device": {Publish: []string{"place/{identity}/#"}, Subscribe: []string{"place/{identity}/#"}},
			"viewer": {Subscribe: []string{"dash/#"}},
			"guest":  {Subscribe: []string{"public/#"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	pr := pol.principal("dev1", []string{"viewer", "device", "unknown"}, fromRoles)
	if pr.Roles() != "device,viewer" {
		t.Fatalf("roles %q", pr.Roles())
	}
	if !pr.MaySubscribe("dash/+") || !pr.MaySubscribe("place/dev1/#") || pr.MaySubscribe("place/+/#") {
		t.Fatal("union of roles is wrong")
	}
	if pr2 := pol.principal("dev2", []string{"device", "viewer"}, fromRoles); pr2.g != pr.g {
		t.Fatal("principals of the same roles do not share their grants")
	}
	if pr := pol.principal("dev1", []string{"unknown"}, fromRoles); pr.MayPublish("place/dev1/x") {
		t.Fatal("unknown roles must give no privileges")
	}
	anon := pol.principal("", nil, fromAnonymous)
	if !anon.MayReceive("public/x") || anon.MayPublish("place//x") || anon.MaySubscribe("place/+/#") {
		t.Fatal("anonymous role is wrong")
	}
}

func TestAuthAllocs(t *testing.T) {
	pol, err := NewPolicy(Settings{Anonymous: true}, nil, &Rules{DefaultRole: "device",
		Roles: map[string]RoleRules{"device": {Publish: []string{"a/b", "place/{identity}/#"}, Subscribe: []string{"place/{identity}/+/state"}}}})
	if err != nil {
		t.Fatal(err)
	}
	pr := pol.principal("dev1", nil, fromDefault)
	n := testing.AllocsPerRun(100, func() {
		if !pr.MayPublish("place/dev1/temp") || !pr.MaySubscribe("place/dev1/+/state") || !pr.MayReceive("place/dev1/x/state") {
			t.Fatal("denied")
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per check, want 0", n)
	}
}

// Deny patterns refuse inside an allowed tree; deny wins over any allow, of the same role or another one.
func TestAuthDenyPrecedence(t *testing.T) {
	pol, err := NewPolicy(Settings{Anonymous: true}, nil, &Rules{AnonymousRole: "all",
		Roles: map[string]RoleRules{
			"all": {Publish: []string{"#"}, Subscribe: []string{"#"},
				DenyPublish: []string{"ops/internal/#", "place/{identity}/cmd"}, DenySubscribe: []string{"ops/internal/#"}},
			"ops":   {Publish: []string{"ops/#"}, Subscribe: []string{"ops/#"}},
			"quiet": {DenySubscribe: []string{"ops/public/noise"}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	all := pol.principal("", nil, fromAnonymous)
	for _, c := range []struct {
		what string
		got  bool
		want bool
	}{
		{"publish ops/internal/x", all.MayPublish("ops/internal/x"), false},
		{"publish ops/internal", all.MayPublish("ops/internal"), false}, // '#' matches the parent level
		{"publish ops/public/x", all.MayPublish("ops/public/x"), true},
		{"subscribe ops/internal/#", all.MaySubscribe("ops/internal/#"), false},
		{"subscribe ops/internal/+/log", all.MaySubscribe("ops/internal/+/log"), false},
		{"subscribe # (overlaps: granted)", all.MaySubscribe("#"), true},
		{"subscribe ops/+/x (overlaps: granted)", all.MaySubscribe("ops/+/x"), true},
		{"receive ops/internal/x through a wide filter", all.MayReceive("ops/internal/x"), false},
		{"receive ops/public/x", all.MayReceive("ops/public/x"), true},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	// {identity} in a deny pattern.
	dev := pol.principal("dev1", []string{"all"}, fromRoles)
	if dev.MayPublish("place/dev1/cmd") || !dev.MayPublish("place/dev2/cmd") {
		t.Fatal("{identity} in deny_publish")
	}
	// Across roles: the deny of "all" wins over the allow of "ops"; a role with only denies takes away.
	both := pol.principal("x", []string{"ops", "all"}, fromRoles)
	if both.MayPublish("ops/internal/x") || both.MaySubscribe("ops/internal/#") || both.MayReceive("ops/internal/y") {
		t.Fatal("an allow of another role beat a deny")
	}
	q := pol.principal("x", []string{"ops", "quiet"}, fromRoles)
	if q.MaySubscribe("ops/public/noise") || !q.MaySubscribe("ops/public/#") || q.MayReceive("ops/public/noise") {
		t.Fatal("deny-only role")
	}
	if _, err := NewPolicy(Settings{Anonymous: true}, nil, &Rules{Roles: map[string]RoleRules{"r": {DenySubscribe: []string{"a/#/b"}}}}); err == nil || !strings.Contains(err.Error(), "deny_subscribe") {
		t.Fatalf("bad deny pattern: %v", err)
	}
	n := testing.AllocsPerRun(100, func() {
		_ = all.MayPublish("ops/internal/x") || all.MaySubscribe("ops/internal/#") || all.MayReceive("ops/internal/x")
	})
	if n != 0 {
		t.Fatalf("%v allocations per deny check", n)
	}
}
