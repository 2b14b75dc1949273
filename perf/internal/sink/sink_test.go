package sink

import "testing"

func TestMatch(t *testing.T) {
	cases := []struct {
		f, t string
		want bool
	}{
		{"bench/#", "bench/1", true},
		{"bench/#", "bench", true},
		{"bench/#", "benchx/1", false},
		{"#", "a/b/c", true},
		{"#", "$SYS/x", false},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/+", "a/b/c", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"bench/fanout", "bench/fanout", true},
	}
	for _, c := range cases {
		if got := Match(c.f, c.t); got != c.want {
			t.Errorf("Match(%q, %q) = %v", c.f, c.t, got)
		}
	}
}
