package route

import (
	"errors"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"a/b", "want FILTER>KAFKA_TOPIC"},
		{">t", "empty topic filter"},
		{"a/#>", "empty Kafka topic"},
		{"a/#/b>t", "'#' must be the last level"},
		{"a/b#>t", "must be a whole level"},
		{"a/{x y}>t", "names are letters"},
		{"a/{x}/{x}>t", "defined twice"},
		{"a/{x}>t-{y}", "does not capture"},
		{"a/{x}>t-{x", "unclosed"},
		{"a/b>t/u", "only letters"},
		{"a/b>..", "not a legal Kafka topic"},
		{"a/{x}>t@x", "want {capture}"},
		{"a/{x}>t@{y}", "not captured"},
		{"a/b>" + strings.Repeat("x", 250), "longer than"},
		{"{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}>t", "more than 8"},
	} {
		_, err := Parse(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tc.spec, err, tc.want)
		}
	}
}

func TestRoute(t *testing.T) {
	tbl, err := NewTable([]string{
		"place/{site}/device/{dev}/#>devices-{site}@{dev}",
		"place/+/alarm>alarms",
		"place/#>places",
		"fleet/{id}/{kind}>fleet.{kind}.{id}",
		"odd/{x}>odd-{x}",
	}, "mqtt-messages", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		topic, kafka, key string
		rule              int
		err               error
	}{
		{"place/a/device/d1/temp", "devices-a", "d1", 0, nil},
		{"place/a/device/d1", "devices-a", "d1", 0, nil}, // '#' matches the parent level
		{"place/b/device/d2/x/y", "devices-b", "d2", 0, nil},
		{"place/a/alarm", "alarms", "", 1, nil},        // first match wins: rule 0 does not match, 1 does
		{"place/a/device", "places", "", 2, nil},       // too short for rule 0
		{"place/a/alarm/x", "places", "", 2, nil},      // too long for rule 1
		{"fleet/7/gps", "fleet.gps.7", "", 3, nil},     // two captures, reordered
		{"fleet/7", "mqtt-messages", "", -1, nil},      // unrouted: the default topic
		{"$SYS/place/x", "mqtt-messages", "", -1, nil}, // literal first level does not match '$'
		{"odd/a b", "", "", 4, ErrIllegalTopic},
		{"odd/" + strings.Repeat("x", 250), "", "", 4, ErrIllegalTopic},
		{"odd/.", "odd-.", "", 4, nil},
		{"place/a/device//temp", "devices-a", "", 0, nil}, // an empty capture is a value
	} {
		res, err := tbl.Route(tc.topic)
		if !errors.Is(err, tc.err) || res.Rule != tc.rule {
			t.Errorf("Route(%q) = %+v, %v; want rule %d, err %v", tc.topic, res, err, tc.rule, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		key := ""
		if res.HasKey {
			key = tc.topic[res.KeyFrom:res.KeyTo]
		}
		if res.Topic != tc.kafka || key != tc.key {
			t.Errorf("Route(%q) = %q key %q; want %q key %q", tc.topic, res.Topic, key, tc.kafka, tc.key)
		}
		if !tbl.RoutesTo(tc.topic, tc.kafka) {
			t.Errorf("RoutesTo(%q, %q) = false", tc.topic, tc.kafka)
		}
		if tbl.RoutesTo(tc.topic, tc.kafka+"x") || tbl.RoutesTo(tc.topic, "devices-z") {
			t.Errorf("RoutesTo(%q) accepts another topic", tc.topic)
		}
	}
}

func TestRefuseUnrouted(t *testing.T) {
	tbl, err := NewTable([]string{"a/#>ta"}, "mqtt-messages", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.Route("b/c"); !errors.Is(err, ErrUnrouted) {
		t.Fatalf("Route of an unrouted topic = %v, want ErrUnrouted", err)
	}
	if res, err := tbl.Route("a/c"); err != nil || res.Topic != "ta" {
		t.Fatalf("Route(a/c) = %+v, %v", res, err)
	}
	// Reading: a record of an unrouted topic still belongs in the default topic.
	if !tbl.RoutesTo("b/c", "mqtt-messages") || tbl.RoutesTo("a/c", "mqtt-messages") {
		t.Fatal("RoutesTo of the default topic is wrong")
	}
}

func TestMatchesTemplate(t *testing.T) {
	tbl, err := NewTable([]string{"place/{site}/#>devices-{site}", "x/{a}/{b}>t-{a}-{b}-z", "y/#>fixed"}, "m", false)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"devices-a": true, "devices-": true, "devices": false, "xdevices-a": false,
		"t-1-2-z": true, "t---z": true, "t-1-z": false, "t-1-2-y": false, "fixed": true, "fixedx": false,
		"m": false, "devices-a b": false,
	} {
		if got := tbl.MatchesTemplate(name); got != want {
			t.Errorf("MatchesTemplate(%q) = %v, want %v", name, got, want)
		}
	}
	if got := tbl.FixedTopics(); len(got) != 1 || got[0] != "fixed" {
		t.Errorf("FixedTopics = %q", got)
	}
	if got := tbl.Templated(); len(got) != 2 {
		t.Errorf("Templated = %d rules", len(got))
	}
}

func TestRouteAllocs(t *testing.T) {
	tbl, _ := NewTable([]string{"place/{site}/device/{dev}/#>devices-{site}@{dev}", "fixed/#>f"}, "m", false)
	if n := testing.AllocsPerRun(100, func() { _, _ = tbl.Route("fixed/a/b") }); n != 0 {
		t.Errorf("Route to a fixed topic: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = tbl.RoutesTo("place/a/device/d/t", "devices-a") }); n != 0 {
		t.Errorf("RoutesTo: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = tbl.Route("place/a/device/d/t") }); n != 1 {
		t.Errorf("Route to a templated topic: %v allocations, want 1", n)
	}
}

// Overlaps: some topic matches both the rule's filter and a subscription filter; MayHold: which Kafka topics a
// subscription needs.
func TestOverlapsMayHold(t *testing.T) {
	cases := []struct {
		rule, filter string
		want         bool
	}{
		{"place/{site}/device/#>d-{site}", "place/#", true},
		{"place/{site}/device/#>d-{site}", "place/a/device", true}, // '#' matches the parent level
		{"place/{site}/device/#>d-{site}", "place/+/alarm", false},
		{"place/{site}/device/#>d-{site}", "place", false},
		{"place/{site}/device/#>d-{site}", "#", true},
		{"place/{site}/device/#>d-{site}", "+/+/+/x/y", true},
		{"place/+/alarm>alarms", "place/a/alarm", true},
		{"place/+/alarm>alarms", "place/a/alarm/x", false},
		{"place/+/alarm>alarms", "place/a", false},
		{"place/+/alarm>alarms", "jobs/#", false},
		{"#>all", "$SYS/x", false},  // [MQTT-4.7.2-1]
		{"+/x>px", "$SYS/x", false}, // idem
		{"$SYS/#>sys", "#", false},
		{"$SYS/#>sys", "+/x", false},
		{"$SYS/#>sys", "$SYS/x", true},
		{"#>all", "#", true},
		{"a>fixed", "a/#", true},
		{"a/b>fixed", "a/+", true},
		{"a/b>fixed", "a/c", false},
	}
	for _, c := range cases {
		r, err := Parse(c.rule)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Overlaps(c.filter); got != c.want {
			t.Errorf("%q overlaps %q: %v, want %v", c.rule, c.filter, got, c.want)
		}
	}
	tbl, err := NewTable([]string{"place/{site}/device/#>devices-{site}", "place/+/alarm>alarms", "jobs/#>jobs"}, "msgs", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"place/#", "msgs", true},
		{"place/#", "devices-a", true},
		{"place/#", "alarms", true},
		{"place/#", "jobs", false},
		{"place/a/alarm", "devices-a", false},
		{"jobs/+", "jobs", true},
		{"jobs/+", "alarms", false},
		{"other/#", "msgs", true},
		{"other/#", "devices-x", false},
	} {
		if got := tbl.MayHold(c.filter, c.topic); got != c.want {
			t.Errorf("MayHold(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}
