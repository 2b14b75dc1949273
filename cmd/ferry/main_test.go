package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "ferry")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		panic("cannot build ferry: " + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Bad settings get one line naming the problem and exit status 2, before anything starts.
func TestBadSettings(t *testing.T) {
	dir := t.TempDir()
	yamlBad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(yamlBad, []byte("mqtt: [tcp://127.0.0.1:1]\nbogus: 3\n"), 0o644)
	yamlType := filepath.Join(dir, "type.yaml")
	os.WriteFile(yamlType, []byte("max-qos: abc\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "-bogus"},
		{[]string{"--max-qos", "5"}, "--max-qos"},
		{[]string{"--mqtt", "udp://127.0.0.1:1"}, `"udp://127.0.0.1:1"`},
		{[]string{"--receive-maximum", "0"}, "--receive-maximum"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--config", yamlBad}, `bad.yaml:2: unknown setting "bogus"`},
		{[]string{"--config", yamlType}, "type.yaml:1: max-qos"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "cannot read config file"},
		{[]string{"extra-arg"}, `unexpected argument "extra-arg"`},
		{[]string{"--embedded-retention-bytes", "1000"}, "--embedded-retention-bytes 1000"},
		{[]string{"--embedded-retention", "1s"}, "--embedded-retention 1s"},
		{[]string{"--embedded-clean-interval", "0s"}, "--embedded-clean-interval"},
	} {
		cmd := exec.Command(binary, tc.args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Errorf("%v: exit %v, want status 2 (output %q)", tc.args, err, out)
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%v: output %q, want one line naming %q", tc.args, out, tc.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
			t.Errorf("%v: a data directory was created before the settings were checked", tc.args)
		}
	}
}

// An unreachable --kafka-brokers ends the process with one clear error line and a non-zero exit.
func TestUnreachableKafka(t *testing.T) {
	cmd := exec.Command(binary, "--kafka-brokers", "127.0.0.1:1", "--mqtt", "tcp://127.0.0.1:0", "--log-level", "error")
	cmd.Dir = t.TempDir()
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("ferry started without Kafka: %s", out)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("took %v to give up", d)
	}
	last := strings.TrimSpace(string(out))
	if i := strings.LastIndex(last, "\n"); i >= 0 {
		last = last[i+1:]
	}
	if !strings.Contains(last, "cannot reach Kafka at 127.0.0.1:1") {
		t.Fatalf("last line %q does not say Kafka is unreachable", last)
	}
}

// Precedence: flags > environment > file > defaults, for plain and repeatable settings.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ferry.yaml")
	os.WriteFile(file, []byte("max-qos: 0\nreceive-maximum: 10\nsession-queue: 5\nmqtt:\n  - tcp://127.0.0.1:1001\n  - tcp://127.0.0.1:1002\n"), 0o644)
	env := map[string]string{"FERRY_RECEIVE_MAXIMUM": "20", "FERRY_SESSION_QUEUE": "6", "FERRY_CONFIG": file}
	c, err := loadConfig([]string{"--session-queue", "7"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.maxQoS != 0 || c.receiveMaximum != 20 || c.sessionQueue != 7 || c.partitions != 6 {
		t.Fatalf("max-qos %d (file 0), receive-maximum %d (env 20), session-queue %d (flag 7), partitions %d (default 6)",
			c.maxQoS, c.receiveMaximum, c.sessionQueue, c.partitions)
	}
	if got := strings.Join(c.mqtt.vals, " "); got != "tcp://127.0.0.1:1001 tcp://127.0.0.1:1002" {
		t.Fatalf("mqtt from file: %q", got)
	}
	env["FERRY_MQTT"] = "tcp://127.0.0.1:2001"
	c, err = loadConfig([]string{"--mqtt", "tcp://127.0.0.1:3001", "--mqtt", "tcp://127.0.0.1:3002"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.mqtt.vals, " "); got != "tcp://127.0.0.1:3001 tcp://127.0.0.1:3002" {
		t.Fatalf("repeated --mqtt flags: %q", got)
	}
	c, err = loadConfig(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.mqtt.vals, " "); got != "tcp://127.0.0.1:2001" {
		t.Fatalf("mqtt from env over file: %q", got)
	}
}

// `ferry check-config` validates settings without starting anything; the annotated example config passes.
func TestCheckConfig(t *testing.T) {
	example, err := filepath.Abs("../../deploy/ferry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out, err := exec.Command(binary, "check-config", "--config", example).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration ok") {
		t.Fatalf("example config: %v %s", err, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("receive-maximum: 10\nmax-qos: [1]\n"), 0o644)
	cmd := exec.Command(binary, "check-config", "--config", bad)
	cmd.Dir = dir
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "bad.yaml:2: max-qos") {
		t.Fatalf("bad config: %v %q, want exit 2 naming bad.yaml:2 and max-qos", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Fatal("check-config created a data directory")
	}
}

// Route rules: repeatable flag, YAML list, environment; a bad rule is one line naming the flag and the rule.
func TestConfigRoutes(t *testing.T) {
	none := func(string) string { return "" }
	c, err := loadConfig([]string{"--route", "place/{site}/device/{dev}/#>devices-{site}@{dev}", "--route", "place/#>places",
		"--route-unrouted", "refuse"}, none)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.route.vals) != 2 || c.route.vals[1] != "place/#>places" || c.routeUnrouted != "refuse" {
		t.Fatalf("routes %q unrouted %q", c.route.vals, c.routeUnrouted)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(file, []byte("route:\n  - a/{x}/#>ta-{x}\n  - b/#>tb\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = loadConfig([]string{"--config", file}, none); err != nil || len(c.route.vals) != 2 || c.routeUnrouted != "accept" {
		t.Fatalf("from YAML: %v %q", err, c.route.vals)
	}
	for _, tc := range []struct{ args []string }{
		{[]string{"--route", "a/{x}>t-{y}"}},
		{[]string{"--route", "a/b"}},
		{[]string{"--route", "a/b>bad/name"}},
		{[]string{"--route-unrouted", "drop"}},
	} {
		_, err := loadConfig(tc.args, none)
		if err == nil || !strings.Contains(err.Error(), tc.args[0]) || !strings.Contains(err.Error(), tc.args[1]) ||
			strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line naming the flag and the rule", tc.args, err)
		}
	}
}
