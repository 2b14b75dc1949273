package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/golang-jwt/jwt/v5"
)

// A test-only HMAC secret.
const testAuthSecret = "ferry-cmd-test-secret-0123456789abcdef\n"

// Bad auth files and settings get one line naming the setting, the file and the problem, and exit status 2,
// from ferry and from ferry check-config.
func TestAuthBadFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := write("secret", testAuthSecret)
	badPattern := write("bad-pattern.yaml", "roles:\n  device:\n    publish: [\"place/#/x\"]\n")
	typo := write("typo.yaml", "roles:\n  device:\n    publsh: [\"a\"]\n")
	undefined := write("undefined.yaml", "default_role: nobody\nroles:\n  device:\n    publish: [a]\n")
	notYAML := write("not.yaml", "roles: [\n")
	shortKey := write("short", "abc\n")
	badJWKS := write("jwks.json", `{"keys":[{"kty":"EC","crv":"P-256","x":"AQ","y":"AQ"}]}`)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--auth-jwt-key", key, "--auth-rules", badPattern}, []string{"--auth-rules", badPattern, `pattern "place/#/x": '#' must be the last level`}},
		{[]string{"--auth-jwt-key", key, "--auth-rules", typo}, []string{typo, "publsh"}},
		{[]string{"--auth-jwt-key", key, "--auth-rules", undefined}, []string{undefined, `default_role "nobody"`}},
		{[]string{"--auth-jwt-key", key, "--auth-rules", notYAML}, []string{notYAML, "yaml"}},
		{[]string{"--auth-jwt-key", key, "--auth-rules", filepath.Join(dir, "missing.yaml")}, []string{"missing.yaml", "cannot read"}},
		{[]string{"--auth-jwt-key", shortKey}, []string{"--auth-jwt-key", shortKey, "too short"}},
		{[]string{"--auth-jwks", badJWKS}, []string{"--auth-jwks", badJWKS, "invalid EC point"}},
		{[]string{"--auth-rules", badPattern}, []string{"needs --auth-anonymous"}},
		{[]string{"--auth-jwt-key", key, "--auth-token-field", "clientid"}, []string{"--auth-token-field"}},
	} {
		for _, sub := range [][]string{nil, {"check-config"}} {
			args := append(append([]string{}, sub...), tc.args...)
			if sub == nil {
				args = append(args, "--mqtt", "tcp://127.0.0.1:0", "--data-dir", dir)
			}
			out, err := exec.Command(binary, args...).CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Errorf("%v: exit %v, want status 2 (output %q)", args, err, out)
				continue
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 {
				t.Errorf("%v: %d lines, want one: %q", args, len(lines), out)
				continue
			}
			for _, w := range tc.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("%v: %q does not name %q", args, lines[0], w)
				}
			}
		}
	}
}

// The annotated example rules file is valid, and check-config says so.
func TestAuthExampleRules(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "secret")
	if err := os.WriteFile(key, []byte(testAuthSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "check-config", "--auth-jwt-key", key, "--auth-rules", "../../deploy/auth-rules.yaml",
		"--auth-anonymous").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration ok") {
		t.Fatalf("check-config of deploy/auth-rules.yaml: %v %s", err, out)
	}
}

// A reload installs new rules; one that fails keeps the rules in force.
func TestAuthReload(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "secret")
	rules := filepath.Join(dir, "rules.yaml")
	os.WriteFile(key, []byte(testAuthSecret), 0o600)
	os.WriteFile(rules, []byte("default_role: d\nanonymous_role: d\nroles:\n  d:\n    publish: [a/#]\n"), 0o600)
	c := authConfig{jwtKey: key, rules: rules, tokenField: "password", identityClaim: "sub", rolesClaim: "roles", anonymous: true}
	a, err := c.authority()
	if err != nil {
		t.Fatal(err)
	}
	may := func(topic string) bool {
		pr, err := a.Policy().Authenticate(nil, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		return pr.MayPublish(topic)
	}
	if !may("a/x") || may("b/x") {
		t.Fatal("initial rules")
	}
	reload := c.reloadFunc(a)
	os.WriteFile(rules, []byte("default_role: d\nanonymous_role: d\nroles:\n  d:\n    publish: [b/#]\n"), 0o600)
	if err := reload(); err != nil {
		t.Fatal(err)
	}
	if may("a/x") || !may("b/x") {
		t.Fatal("reloaded rules not in force")
	}
	os.WriteFile(rules, []byte("roles:\n  d:\n    publish: [\"b/#/c\"]\n"), 0o600)
	if err := reload(); err == nil || !strings.Contains(err.Error(), rules) {
		t.Fatalf("bad rules file: %v", err)
	}
	if !may("b/x") {
		t.Fatal("a failed reload changed the rules in force")
	}
}

// SIGHUP re-reads the rules file: a connected client's next publish is checked with the new rules, and a bad
// file is logged and leaves the rules in force, without stopping the broker.
func TestAuthSIGHUP(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "secret")
	rules := filepath.Join(dir, "rules.yaml")
	os.WriteFile(key, []byte(testAuthSecret), 0o600)
	setRules := func(pub string) {
		os.WriteFile(rules, []byte("default_role: d\nroles:\n  d:\n    publish: [\""+pub+"\"]\n"), 0o600)
	}
	setRules("a/{identity}/#")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(binary, "--mqtt", "tcp://"+addr, "--embedded-kafka-addr", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"),
		"--auth-jwt-key", key, "--auth-rules", rules, "--log-level", "info")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
		}
	}()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine := func(want string) string {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("ferry exited before logging %q", want)
				}
				if strings.Contains(l, want) {
					return l
				}
			case <-timeout:
				t.Fatalf("no log line %q", want)
			}
		}
	}
	waitLine("ferry is serving MQTT")

	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "dev1"}).SignedString([]byte(strings.TrimSpace(testAuthSecret)))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "hup", CleanStart: true, KeepAlive: 30, Password: []byte(tok), PasswordFlag: true}); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	code := func(topic string) byte {
		r, _ := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("x")})
		if r == nil {
			t.Fatalf("publish %s: no PUBACK", topic)
		}
		return r.ReasonCode
	}
	if code("a/dev1/x") != 0 || code("b/dev1/x") != 0x87 {
		t.Fatal("initial rules not in force")
	}
	setRules("b/{identity}/#")
	cmd.Process.Signal(syscall.SIGHUP)
	waitLine("reloaded")
	if code("a/dev1/x") != 0x87 || code("b/dev1/x") != 0 {
		t.Fatal("reloaded rules not in force")
	}
	setRules("b/#/x")
	cmd.Process.Signal(syscall.SIGHUP)
	if l := waitLine("reload failed"); !strings.Contains(l, rules) || !strings.Contains(l, "must be the last level") {
		t.Fatalf("log line %q does not name the file and the problem", l)
	}
	if code("b/dev1/x") != 0 {
		t.Fatal("a failed reload changed the rules in force")
	}
}
