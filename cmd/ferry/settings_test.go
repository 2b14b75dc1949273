package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func noEnv(string) string { return "" }

// A settings error names where the value came from: the flag, the FERRY_* variable, or the file and line.
func TestSettingErrorsNameTheirSource(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(file, []byte("log-level: info\nmax-qos: 9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"flag", []string{"--max-qos", "9"}, nil, "invalid --max-qos 9: want 0, 1 or 2"},
		{"variable", nil, map[string]string{"FERRY_MAX_QOS": "9"}, "invalid FERRY_MAX_QOS 9: want 0, 1 or 2"},
		{"file", []string{"--config", file}, nil, file + ":2: invalid max-qos 9: want 0, 1 or 2"},
		{"variable over file", []string{"--config", file}, map[string]string{"FERRY_MAX_QOS": "7"}, "invalid FERRY_MAX_QOS 7"},
		{"flag over variable", []string{"--max-qos", "8"}, map[string]string{"FERRY_MAX_QOS": "7"}, "invalid --max-qos 8"},
		{"variable in a listener", nil, map[string]string{"FERRY_MQTT": "mqtt://127.0.0.1:1883"}, `invalid FERRY_MQTT "mqtt://127.0.0.1:1883"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(tc.args, func(k string) string { return tc.env[k] })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// Unknown FERRY_* variables are refused with the closest setting's name; the scripts' own variables are not.
func TestUnknownEnvironmentVariables(t *testing.T) {
	if err := checkEnvironment([]string{"FERRY_MAX_QOS=1", "FERRY_BIN=/x/ferry", "HOME=/root", "FERRY_CONFIG=a.yaml"}); err != nil {
		t.Fatalf("known and tool variables refused: %v", err)
	}
	err := checkEnvironment([]string{"PATH=/bin", "FERRY_MAXQOS=1"})
	if err == nil || !strings.Contains(err.Error(), "FERRY_MAXQOS") || !strings.Contains(err.Error(), "did you mean FERRY_MAX_QOS?") {
		t.Fatalf("FERRY_MAXQOS: %v, want a refusal naming it and FERRY_MAX_QOS", err)
	}
	err = checkEnvironment([]string{"FERRY_SOMETHING_ELSE_ENTIRELY=1"})
	if err == nil || strings.Contains(err.Error(), "did you mean") || !strings.Contains(err.Error(), "ferry --help") {
		t.Fatalf("far from any setting: %v, want a refusal without a guess", err)
	}

	// Through the binary: one line, status 2, before anything starts.
	cmd := exec.Command(binary, "--mqtt", "tcp://127.0.0.1:1")
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "FERRY_MAXQOS=1")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 ||
		!strings.Contains(string(out), "did you mean FERRY_MAX_QOS?") {
		t.Fatalf("binary with FERRY_MAXQOS: %v %q, want status 2 and one line with the hint", err, out)
	}
	out, err = exec.Command(binary, "--max-qso", "1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unknown flag --max-qso (did you mean --max-qos?)") {
		t.Fatalf("--max-qso: %v %q, want a hint for --max-qos", err, out)
	}
}

// Listener URLs: host:port is tcp://host:port; mqtt://, ssl:// and unknown schemes are refused with the one meant.
func TestListenerSchemes(t *testing.T) {
	c, err := loadConfig([]string{"--mqtt", "127.0.0.1:1883", "--mqtt", "localhost:1884"}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.mqtt.vals, " "); got != "tcp://127.0.0.1:1883 tcp://localhost:1884" {
		t.Fatalf("host:port listeners became %q", got)
	}
	for in, want := range map[string]string{
		"mqtt://127.0.0.1:1883":  "use tcp://",
		"mqtts://127.0.0.1:8883": "use tls://",
		"ssl://127.0.0.1:8883":   "use tls://",
		"udp://127.0.0.1:1883":   "want tcp://, tls://, ws:// or wss://",
	} {
		_, err := loadConfig([]string{"--mqtt", in}, noEnv)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--mqtt") {
			t.Errorf("--mqtt %s: %v, want a refusal naming --mqtt and %q", in, err, want)
		}
	}
}

// Secure defaults: no listener setting means loopback only; a listener beyond loopback without authentication
// needs --auth-anonymous; authentication or required client certificates are enough.
func TestSecureDefaults(t *testing.T) {
	c, err := loadConfig(nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.mqtt.vals, " "); got != "tcp://127.0.0.1:1883" {
		t.Fatalf("default listener %q, want tcp://127.0.0.1:1883", got)
	}
	for _, l := range []string{"tcp://0.0.0.0:1883", "tcp://:1883", ":1883", "ws://[::]:8080/mqtt", "tcp://192.0.2.7:1883", "tcp://mqtt.example.com:1883"} {
		_, err := loadConfig([]string{"--mqtt", "tcp://127.0.0.1:1884", "--mqtt", l}, noEnv)
		if err == nil || !strings.Contains(err.Error(), "--auth-anonymous") || !strings.Contains(err.Error(), "beyond loopback") {
			t.Errorf("--mqtt %s without authentication: %v, want a refusal naming --auth-anonymous", l, err)
		}
		if _, err := loadConfig([]string{"--mqtt", l, "--auth-anonymous"}, noEnv); err != nil {
			t.Errorf("--mqtt %s --auth-anonymous: %v", l, err)
		}
		if _, err := loadConfig([]string{"--mqtt", l, "--auth-passwords", "/nonexistent/passwords"}, noEnv); err != nil {
			t.Errorf("--mqtt %s --auth-passwords: %v", l, err)
		}
	}
	for _, l := range []string{"tcp://127.0.0.1:1883", "tcp://[::1]:1883", "tcp://localhost:1883", "ws://127.0.0.2:8080/mqtt"} {
		if _, err := loadConfig([]string{"--mqtt", l}, noEnv); err != nil {
			t.Errorf("loopback --mqtt %s: %v", l, err)
		}
	}
	if _, err := loadConfig([]string{"--mqtt", "tls://0.0.0.0:8883", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"}, noEnv); err != nil {
		t.Errorf("TLS listener requiring client certificates: %v", err)
	}
	if _, err := loadConfig([]string{"--mqtt", "tls://0.0.0.0:8883", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem",
		"--tls-client-auth", "verify-if-given"}, noEnv); err == nil {
		t.Errorf("TLS listener with optional client certificates accepted without authentication")
	}

	// The binary refuses with one line and status 2, and logs at start who may connect.
	cmd := exec.Command(binary, "--mqtt", "tcp://0.0.0.0:1")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--auth-anonymous") {
		t.Fatalf("ferry --mqtt tcp://0.0.0.0:1: %v %q, want status 2 naming --auth-anonymous", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	line := startAndReadLog(t, "authentication off", "--mqtt", "tcp://0.0.0.0:"+strconv.Itoa(port), "--auth-anonymous", "--log-format", "json")
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["level"] != "WARN" {
		t.Fatalf("start line %q: %v, want a JSON warning", line, err)
	}
}

// startAndReadLog starts the binary with args and an embedded Kafka in a temporary directory, and returns the
// first log line containing want; the process is stopped with SIGINT afterwards.
func startAndReadLog(t *testing.T, want string, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	args = append(args, "--embedded-kafka-addr", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"))
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stopProcess(cmd)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			if !sent && strings.Contains(sc.Text(), want) {
				found <- sc.Text()
				sent = true
			}
		}
		close(found)
	}()
	select {
	case l, ok := <-found:
		if !ok {
			t.Fatalf("ferry %v exited without logging %q", args, want)
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("ferry %v: no log line %q within 30 s", args, want)
	}
	return ""
}

// stopProcess interrupts a started ferry and waits for it, killing it after 30 s.
func stopProcess(cmd *exec.Cmd) {
	cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// JSON logs write durations with their unit, like the text format.
func TestJSONLogDurations(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(&config{logLevel: "info", logFormat: "json"}, &buf)
	log.Info("x", "wait", 1500*time.Millisecond)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["wait"] != "1.5s" {
		t.Fatalf("duration logged as %#v, want \"1.5s\"", rec["wait"])
	}
}

// `ferry --help` names every command, and its flags are the flag set's.
func TestHelpUsage(t *testing.T) {
	out, err := exec.Command(binary, "--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(string(out), "\nflags:\n")
	for _, want := range []string{"usage: ferry [flags]", "ferry check-config", "ferry passwd", "ferry version"} {
		if !strings.Contains(head, want) {
			t.Errorf("--help usage lacks %q:\n%s", want, head)
		}
	}
	for _, n := range settingNames() {
		if !strings.Contains(string(out), "\n  -"+n+" ") && !strings.Contains(string(out), "\n  -"+n+"\n") {
			t.Errorf("--help does not list -%s", n)
		}
	}
}

// `ferry version` prints the stamped version, or the one Go records from the git tags, never an empty one.
func TestVersion(t *testing.T) {
	if got := buildVersion("v1.2.3"); got != "v1.2.3" {
		t.Fatalf("stamped version replaced: %q", got)
	}
	out, err := exec.Command(binary, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^ferry (dev|v[0-9]+\.[0-9]+\.[0-9]+\S*)\n$`).Match(out) {
		t.Fatalf("ferry version printed %q, want ferry dev or ferry vX.Y.Z…", out)
	}
}

// Holding QoS 0 publishers is on by default; the flag, a YAML key or FERRY_QOS0_HOLD turn it off.
func TestQoS0HoldDefaultOn(t *testing.T) {
	c, err := loadConfig(nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !c.qos0Hold {
		t.Fatal("qos0-hold is off by default, want on")
	}
	c, err = loadConfig([]string{"--qos0-hold=false"}, noEnv)
	if err != nil || c.qos0Hold {
		t.Fatalf("--qos0-hold=false: hold %v, err %v; want off", c != nil && c.qos0Hold, err)
	}
	env := func(k string) string {
		if k == "FERRY_QOS0_HOLD" {
			return "false"
		}
		return ""
	}
	if c, err = loadConfig(nil, env); err != nil || c.qos0Hold {
		t.Fatalf("FERRY_QOS0_HOLD=false: hold %v, err %v; want off", c != nil && c.qos0Hold, err)
	}
}
