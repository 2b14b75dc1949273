package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ferrymq/ferry/kafkamux/kafkatest"
)

// Bad Kafka client settings: one line naming the flag, exit status 2, nothing started.
func TestBadKafkaSettings(t *testing.T) {
	dir := t.TempDir()
	pki := kafkatest.NewPKI(t)
	ext := []string{"--kafka-brokers", "127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--kafka-sasl-mechanism", "gssapi"}, "--kafka-sasl-mechanism gssapi"},
		{[]string{"--kafka-sasl-mechanism", "plain", "--kafka-sasl-user", "u", "--kafka-sasl-password", "p"}, "--kafka-sasl-mechanism plain: needs --kafka-brokers"},
		{append(ext, "--kafka-sasl-mechanism", "plain", "--kafka-sasl-password", "p"), "--kafka-sasl-user"},
		{append(ext, "--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-user", "u"), "--kafka-sasl-password"},
		{append(ext, "--kafka-sasl-user", "u"), "needs --kafka-sasl-mechanism"},
		{append(ext, "--kafka-sasl-mechanism", "plain", "--kafka-sasl-user", "u", "--kafka-sasl-password-file", filepath.Join(dir, "nope")), "--kafka-sasl-password-file"},
		{append(ext, "--kafka-sasl-mechanism", "plain", "--kafka-sasl-user", "u", "--kafka-sasl-password", "p", "--kafka-sasl-password-file", pki.CAFile), "give one"},
		{[]string{"--kafka-tls"}, "--kafka-tls: needs --kafka-brokers"},
		{append(ext, "--kafka-tls-ca", pki.CAFile), "--kafka-tls-ca " + pki.CAFile + ": needs --kafka-tls"},
		{append(ext, "--kafka-tls", "--kafka-tls-ca", filepath.Join(dir, "nope.pem")), "--kafka-tls-ca"},
		{append(ext, "--kafka-tls", "--kafka-tls-cert", pki.ClientCertFile), "give both or neither"},
		{[]string{"--kafka-compression", "brotli"}, "--kafka-compression brotli"},
		{[]string{"--kafka-linger", "-1s"}, "--kafka-linger"},
		{[]string{"--kafka-batch-bytes", "10"}, "--kafka-batch-bytes 10"},
		{[]string{"--kafka-qos0-acks", "leader"}, "--kafka-qos0-acks leader"},
		{[]string{"--kafka-client-id", ""}, "--kafka-client-id"},
		{[]string{"--kafka-replication-factor", "0"}, "--kafka-replication-factor 0"},
		{[]string{"--kafka-replication-factor", "3"}, "--kafka-replication-factor 3: the embedded Kafka has one broker"},
		{[]string{"--kafka-topic-config", "retention.ms"}, "--kafka-topic-config retention.ms"},
		{[]string{"--kafka-topic-config", "sessions:cleanup.policy=delete"}, "cleanup.policy is set by Ferry"},
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
	}
}

// Kafka settings from a file, the environment and flags; the password from a file or the environment.
func TestKafkaSettings(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("from-file\n"), 0o600)
	file := filepath.Join(dir, "ferry.yaml")
	os.WriteFile(file, []byte("kafka-brokers: k1:9092\nkafka-sasl-mechanism: scram-sha-256\nkafka-sasl-user: ferry\n"+
		"kafka-compression: zstd\nkafka-topic-config:\n  - retention.ms=86400000\n  - sessions:min.compaction.lag.ms=60000\n"), 0o644)
	env := map[string]string{"FERRY_CONFIG": file, "FERRY_KAFKA_SASL_PASSWORD": "from-env", "FERRY_KAFKA_LINGER": "5ms"}
	c, err := loadConfig([]string{"--kafka-batch-bytes", "2000000"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	k := c.kafka
	if k.password != "from-env" || k.linger != 5*time.Millisecond || k.batchBytes != 2000000 || k.compression != "zstd" ||
		strings.Join(k.topicConfig.vals, " ") != "retention.ms=86400000 sessions:min.compaction.lag.ms=60000" {
		t.Fatalf("settings %+v", k)
	}
	if n := len(k.kafkaOpts()); n != 5+1+1+2 { // fixed, compression, SASL, two topic configs
		t.Fatalf("%d kafkamux options", n)
	}
	delete(env, "FERRY_KAFKA_SASL_PASSWORD")
	c, err = loadConfig([]string{"--kafka-sasl-password-file", pw}, func(k string) string { return env[k] })
	if err != nil || c.kafka.password != "from-file" {
		t.Fatalf("password from file: %q, %v", c.kafka.password, err)
	}
}

// A wrong SASL password ends the process promptly with one line saying SASL authentication failed; the right
// one (from a file) gets Ferry serving, over TLS.
func TestKafkaSASLPasswordFile(t *testing.T) {
	pki := kafkatest.NewPKI(t)
	c := kafkatest.Cluster(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "ferry", "pw-right-42"), kfake.TLS(pki.ServerTLS(false)))
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("pw-wrong-42\n"), 0o600)
	args := []string{"--kafka-brokers", c.ListenAddrs()[0], "--mqtt", "tcp://127.0.0.1:0", "--log-level", "error",
		"--kafka-sasl-mechanism", "scram-sha-256", "--kafka-sasl-user", "ferry", "--kafka-sasl-password-file", pw,
		"--kafka-tls", "--kafka-tls-ca", pki.CAFile}
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("wrong password: exit %v, want 1 (output %q)", err, out)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("took %v to give up", d)
	}
	if !strings.Contains(string(out), `SASL SCRAM-SHA-256 authentication as user "ferry" failed`) || strings.Contains(string(out), "pw-wrong-42") {
		t.Fatalf("wrong password: output %q", out)
	}

	os.WriteFile(pw, []byte("pw-right-42\n"), 0o600)
	cmd = exec.Command(binary, args...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("ferry exited with the right password: %v", err)
	case <-time.After(3 * time.Second): // serving
	}
	cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("ferry did not stop on SIGINT")
	}
}
