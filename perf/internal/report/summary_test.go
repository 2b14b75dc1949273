package report

import (
	"bytes"
	"strings"
	"testing"
)

func TestSummarizeMediansAndRatios(t *testing.T) {
	mk := func(target string, v float64) *Result {
		r := &Result{Scenario: "fanin", Label: "fanin-qos1", TargetName: target}
		r.Add("delivered", v, "msg/s", "higher")
		return r
	}
	rs := []*Result{mk("mosquitto", 50000), mk("mosquitto", 60000), mk("mosquitto", 55000),
		mk("ferry", 110000), mk("ferry", 100000), mk("ferry", 120000)}
	var b bytes.Buffer
	Summarize(&b, rs, []string{"ferry", "mosquitto"}, "ferry")
	out := b.String()
	for _, want := range []string{
		"| metric | ferry | mosquitto | ferry ÷ mosquitto |",
		"| delivered | 110.0k msg/s (100.0k msg/s–120.0k msg/s, n=3) | 55.0k msg/s (50.0k msg/s–60.0k msg/s, n=3) | 2× |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestFmt(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{{734, "B", "734 B"}, {27.6 * 1024, "B", "27.6 KB"}, {53600, "/cpu-s", "53.6k /cpu-s"}, {4.9, "ms", "4.90 ms"}, {1.2e6, "msg/s", "1.20M msg/s"}} {
		if got := Fmt(c.v, c.unit); got != c.want {
			t.Errorf("Fmt(%v, %s) = %q want %q", c.v, c.unit, got, c.want)
		}
	}
}
