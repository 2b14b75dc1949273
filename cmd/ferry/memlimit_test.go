package main

import (
	"bufio"
	"bytes"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The memory limit comes from --memory-limit, else GOMEMLIMIT, else (standalone mode with a size bound) the
// flags, else none; the derived limit moves with the flags by the documented terms. No memory is measured.
func TestMemoryLimitPlan(t *testing.T) {
	const mib = 1 << 20
	noLimit := func(string) (string, bool) { return "", false }
	withEnv := func(string) (string, bool) { return "300MiB", true }
	plan := func(env func(string) (string, bool), loops int, args ...string) memoryLimit {
		t.Helper()
		c, err := loadConfig(args, noEnv)
		if err != nil {
			t.Fatal(err)
		}
		return planMemoryLimit(c, loops, env)
	}
	// Defaults, 2 event loops: 64 MiB base + 64 MiB recent cache + 2 × 8 MiB × 2 in flight, and the index of
	// 5/4 × 512 MiB of 89-byte batches at 72 B × 5/2 each.
	def := plan(noLimit, 2)
	want := int64(64*mib + 64*mib + 32*mib + 671088640/89*180)
	if def.source != "derived" || def.static != want {
		t.Fatalf("defaults: %+v, want derived %d", def, want)
	}
	if got := plan(noLimit, 4); got.static != want+2*8*mib*2 {
		t.Errorf("4 event loops: %d, want 32 MiB more than %d", got.static, want)
	}
	if got, want2 := plan(noLimit, 2, "--embedded-retention-bytes", strconv.Itoa(1024*mib)), int64(160*mib+1342177280/89*180); got.static != want2 {
		t.Errorf("twice the size bound: %d, want %d (the index term twice)", got.static, want2)
	}
	if got := plan(noLimit, 2, "--recent-cache-bytes", "0"); got.static != want-64*mib {
		t.Errorf("no recent cache: %d, want %d", got.static, want-64*mib)
	}
	for _, c := range []struct {
		name   string
		env    func(string) (string, bool)
		args   []string
		source string
		static int64
	}{
		{"no size bound", noLimit, []string{"--embedded-retention-bytes", "0"}, "none", 0},
		{"real Kafka", noLimit, []string{"--kafka-brokers", "127.0.0.1:1"}, "none", 0},
		{"GOMEMLIMIT", withEnv, nil, "GOMEMLIMIT", 0},
		{"GOMEMLIMIT=off", func(string) (string, bool) { return "off", true }, nil, "GOMEMLIMIT", 0},
		{"flag", noLimit, []string{"--memory-limit", "200000000"}, "flag", 200000000},
		{"flag over GOMEMLIMIT", withEnv, []string{"--memory-limit", "200000000"}, "flag", 200000000},
		{"flag off", withEnv, []string{"--memory-limit", "-1"}, "none", 0},
	} {
		if got := plan(c.env, 2, c.args...); got.source != c.source || got.static != c.static {
			t.Errorf("%s: %s %d, want %s %d", c.name, got.source, got.static, c.source, c.static)
		}
	}
	for _, bad := range []string{"-2", "1000"} {
		if _, err := loadConfig([]string{"--memory-limit", bad}, noEnv); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
			t.Errorf("--memory-limit %s: %v, want an error naming the flag", bad, err)
		}
	}
}

// The tuner sets the planned limit, follows its derived part by whole MiB, leaves GOMEMLIMIT's alone, lifts
// a limit when none is planned, and warns once when the live heap nears the limit.
func TestGCTunerKeepsMemoryLimit(t *testing.T) {
	tu := newGCTuner()
	tu.set = func(int) int { return 0 }
	tu.free = func() {}
	var limits []int64
	tu.setLimit = func(v int64) int64 { limits = append(limits, v); return 0 }
	tu.limit = 0
	var logged bytes.Buffer
	tu.log = slog.New(slog.NewTextHandler(&logged, nil))

	tu.step(time.Second) // nothing planned yet: nothing set
	if len(limits) != 0 {
		t.Fatalf("limits set before a plan: %v", limits)
	}
	others := int64(0)
	tu.limitMemory(memoryLimit{source: "derived", static: 1 << 40, others: func() int64 { return others }})
	tu.step(time.Second)
	others = 512 << 10 // less than a MiB more: kept
	tu.step(time.Second)
	others = 3 << 20
	tu.step(time.Second)
	if want := []int64{1 << 40, 1<<40 + 3<<20}; len(limits) != 2 || limits[0] != want[0] || limits[1] != want[1] {
		t.Fatalf("limits set %v, want %v", limits, want)
	}
	if strings.Contains(logged.String(), "near the memory limit") {
		t.Fatalf("warned far below the limit: %s", logged.String())
	}

	tu.limitMemory(memoryLimit{source: "GOMEMLIMIT"})
	tu.step(time.Second)
	if len(limits) != 2 {
		t.Fatalf("GOMEMLIMIT's limit was replaced: %v", limits)
	}
	tu.limitMemory(memoryLimit{source: "none"})
	tu.step(time.Second)
	if len(limits) != 3 || limits[2] != math.MaxInt64 {
		t.Fatalf("no limit planned: set %v, want the limit lifted (MaxInt64)", limits)
	}

	// A limit below this test's live heap: the warning, once per gcWarnGap.
	tu.limitMemory(memoryLimit{source: "flag", static: 1 << 20})
	tu.step(time.Second)
	tu.step(time.Second)
	if n := strings.Count(logged.String(), "near the memory limit"); n != 1 {
		t.Fatalf("warnings: %d, want 1:\n%s", n, logged.String())
	}
}

// The binary sets and shows the limit: derived from the flags by default, GOMEMLIMIT's when that is set, the
// flag's over both.
func TestMemoryLimitOfTheBinary(t *testing.T) {
	c, err := loadConfig([]string{"--embedded-retention-bytes", "100000000"}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	derived := strconv.FormatInt(derivedMemoryLimit(c, numCPU()), 10)
	for _, tc := range []struct {
		name, env     string
		args          []string
		limit, source string
	}{
		{"derived", "", nil, derived, "derived"},
		{"GOMEMLIMIT", "GOMEMLIMIT=300MiB", nil, "314572800", "GOMEMLIMIT"},
		{"flag", "GOMEMLIMIT=300MiB", []string{"--memory-limit", "200000000"}, "200000000", "flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			binaryMetrics(t, tc.env, append([]string{"--embedded-retention-bytes", "100000000"}, tc.args...), func(m map[string]string) bool {
				return m["ferry_memory_limit_bytes"] == tc.limit && m[`ferry_memory_limit_info{source="`+tc.source+`"}`] == "1"
			})
		})
	}
}

// binaryMetrics starts the binary in standalone mode with env added to the environment, and reads its
// /metrics samples of the memory limit (name with labels → value) until want accepts them (the tuner sets a
// limit at its first tick after the data dir is loaded), failing after 30 s.
func binaryMetrics(t *testing.T, env string, args []string, want func(map[string]string) bool) {
	t.Helper()
	var vars []string
	if env != "" {
		vars = append(vars, env)
	}
	admin := startStandalone(t, vars, args...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := map[string]string{}
		if resp, err := http.Get("http://" + admin + "/metrics"); err == nil {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if k, v, ok := strings.Cut(sc.Text(), " "); ok && strings.HasPrefix(k, "ferry_memory_limit") {
					m[k] = v
				}
			}
			resp.Body.Close()
			if want(m) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("memory limit in /metrics on %s after 30 s: %v", admin, m)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
