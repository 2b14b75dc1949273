package mqttcodec

import (
	"strings"
	"testing"
)

func TestValidTopicName(t *testing.T) {
	good := []string{"a", "/", "a/b", "/a/", "$SYS/x", "a b/c", "sport/tennis/player1", "\u00fcber/\u4e16\u754c", "\U0001F600",
		"\x01control", "\u0085", "\uFFFF", "\uFDD0", "a//b", strings.Repeat("x", 65535)}
	for _, s := range good {
		if err := ValidTopicName([]byte(s)); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	bad := map[string]string{
		"":                           "is empty",
		"+":                          "wildcard '+' at byte 0",
		"a/#":                        "wildcard '#' at byte 2",
		"a\x00":                      "u+0000 at byte 1",
		"\xED\xA0\x80":               "not well-formed utf-8 at byte 0",
		"ok\xC0\xAF":                 "not well-formed utf-8 at byte 2",
		strings.Repeat("x", 65536):   "longer than 65535 bytes",
		"abcdefgh\x00":               "u+0000 at byte 8",
		"abcdefghijklmnop\xFFqrstuv": "not well-formed utf-8 at byte 16",
	}
	for s, msg := range bad {
		wantReason(t, ValidTopicName([]byte(s)), TopicNameInvalid, "mqttcodec: topic name: ", msg)
	}
}

func TestValidTopicFilter(t *testing.T) {
	good := []string{"#", "+", "+/+", "a/#", "/#", "+/#", "a/+/b/#", "$share/g/t", "$SYS/#", "/", "//", "+//+"}
	for _, s := range good {
		if err := ValidTopicFilter([]byte(s)); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	bad := map[string]string{
		"":       "is empty",
		"a#":     "'#' at byte 1 must occupy a whole level",
		"#/a":    "'#' at byte 0 must be the last level",
		"a+":     "'+' at byte 1 must occupy a whole level",
		"+a/b":   "'+' at byte 0 must occupy a whole level",
		"a/+#":   "'+' at byte 2 must occupy a whole level",
		"a/\xff": "not well-formed utf-8 at byte 2",
	}
	for s, msg := range bad {
		wantReason(t, ValidTopicFilter([]byte(s)), TopicFilterInvalid, "mqttcodec: topic filter: ", msg)
	}
}

func TestParseShared(t *testing.T) {
	for _, c := range []struct{ in, group, filter string }{
		{"$share/g/t", "g", "t"}, {"$share/group-1/a/+/#", "group-1", "a/+/#"}, {"$share/g/#", "g", "#"},
		{"$share/g//", "g", "/"}, {"$share/\u00e9/x", "\u00e9", "x"},
	} {
		g, f, shared, err := ParseShared([]byte(c.in))
		if err != nil || !shared || string(g) != c.group || string(f) != c.filter {
			t.Fatalf("%q: %q %q %v %v", c.in, g, f, shared, err)
		}
	}
	g, f, shared, err := ParseShared([]byte("a/+"))
	if err != nil || shared || g != nil || string(f) != "a/+" {
		t.Fatalf("non-shared: %q %q %v %v", g, f, shared, err)
	}
	_, _, shared, err = ParseShared([]byte("a+"))
	if shared {
		t.Fatal("shared")
	}
	wantReason(t, err, TopicFilterInvalid)
	for in, msg := range map[string]string{
		"$share/":       "no topic filter after the share name",
		"$share/g":      "no topic filter after the share name",
		"$share//t":     "empty share name",
		"$share/g+/t":   "share name contains '+'",
		"$share/#/t":    "share name contains '#'",
		"$share/g/":     "shared subscription topic filter: is empty",
		"$share/g/a#":   "must occupy a whole level",
		"$share/\xff/t": "share name is not well-formed utf-8",
		"$share/g/\x00": "u+0000",
	} {
		_, _, shared, err := ParseShared([]byte(in))
		if !shared {
			t.Fatalf("%q not seen as shared", in)
		}
		wantReason(t, err, TopicFilterInvalid, msg)
	}
	// "$sharex/..." and "$SHARE/..." are ordinary filters.
	if _, _, shared, err := ParseShared([]byte("$SHARE/g/t")); shared || err != nil {
		t.Fatal("$SHARE")
	}
}

func TestMatch(t *testing.T) {
	cases := []struct {
		f, t string
		want bool
	}{
		{"a", "a", true}, {"a", "b", false}, {"a", "a/b", false}, {"a/b", "a", false},
		{"#", "a", true}, {"#", "a/b/c", true}, {"#", "/", true}, {"#", "$a", false},
		{"a/#", "a", true}, {"a/#", "a/", true}, {"a/#", "a/b/c", true}, {"a/#", "ab", false}, {"a/#", "b/a", false},
		{"+", "a", true}, {"+", "", false}, {"+", "a/b", false}, {"+", "/", false},
		{"+/+", "/", true}, {"/+", "/", true}, {"+/", "a/", true}, {"+/", "a", false},
		{"a/+/c", "a/b/c", true}, {"a/+/c", "a//c", true}, {"a/+/c", "a/b/d", false}, {"a/+/c", "a/b/c/d", false},
		{"a/+/#", "a/b", true}, {"a/+/#", "a", false}, {"+/#", "a", true}, {"+/+/#", "a", false},
		{"a/b", "a/b/", false}, {"a/b/", "a/b/", true}, {"a//b", "a//b", true}, {"a//b", "a/b", false},
		{"$SYS/+", "$SYS/load", true}, {"$SYS/#", "$SYS", true}, {"+/x", "$SYS/x", false},
		{"", "a", false}, {"a", "", false},
		{"sport/tennis/+/#", "sport/tennis/player1", true},
		{"\u00e9/+", "\u00e9/x", true},
	}
	for _, c := range cases {
		if got := Match([]byte(c.f), []byte(c.t)); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.f, c.t, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		Match([]byte("sport/+/player1/#"), []byte("sport/tennis/player1/score/wimbledon"))
	}); n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}

func TestUTF8Helpers(t *testing.T) {
	if !ValidUTF8([]byte("h\u00e9llo \U0001F600")) || ValidUTF8([]byte("a\x00")) || ValidUTF8([]byte{0xED, 0xA0, 0x80}) {
		t.Fatal("ValidUTF8")
	}
	for s, want := range map[string]bool{"plain": false, "tab\there": true, "\x7f": true, "\u0085": true, "\u00a0": false,
		"\uFDD0": true, "\uFFFE": true, "\U0001FFFF": true, "\U0010FFFF": true, "\uFFFD": false} {
		if HasDiscouraged([]byte(s)) != want {
			t.Errorf("HasDiscouraged(%q) != %v", s, want)
		}
	}
	p := &Publish{Payload: []byte("ok\x00"), Props: mkProps(PropPayloadFormat, 1)}
	if err := CheckPayloadFormat(p); err != nil {
		t.Fatal(err)
	}
	p.Payload = []byte("ok\xff")
	wantReason(t, CheckPayloadFormat(p), PayloadFormatInvalid, "not well-formed utf-8 at byte 2")
	p.Props = Properties{}
	if CheckPayloadFormat(p) != nil {
		t.Fatal("binary payload checked")
	}
}
