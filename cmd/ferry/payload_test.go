package main

import (
	"encoding/base64"
	"encoding/pem"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// Payload settings: bad rules, a registry rule without a registry and half-given credentials are one line
// naming the setting; a YAML list of rules works; a broken schema file is found before anything starts.
func TestPayloadSettings(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "t.schema.json")
	bad := filepath.Join(dir, "bad.avsc")
	os.WriteFile(good, []byte(`{"type":"object"}`), 0o600)
	os.WriteFile(bad, []byte(`{"type":"record"`), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--payload", "a/#=xml"}, `invalid --payload "a/#=xml": format "xml"`},
		{[]string{"--payload", "a=avro:registry:t-value"}, "needs --schema-registry"},
		{[]string{"--payload-invalid-v3", "close"}, "invalid --payload-invalid-v3 close"},
		{[]string{"--schema-registry", "http://r", "--schema-registry-user", "u"}, "invalid --schema-registry-password"},
		{[]string{"--schema-registry-tls-ca", "ca.pem"}, "invalid --schema-registry"},
	} {
		_, err := loadConfig(tc.args, noEnv)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: got %v, want one line with %q", tc.args, err, tc.want)
		}
	}
	yml := filepath.Join(dir, "ferry.yaml")
	os.WriteFile(yml, []byte("payload:\n  - a/#=jsonschema:file:"+good+"\n  - b/+=json\npayload-invalid-v3: disconnect\n"), 0o600)
	c, err := loadConfig([]string{"--config", yml}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.payload.set(slog.Default())
	if err != nil || set.Len() != 2 || c.payload.invalidV3 != "disconnect" {
		t.Fatalf("%v %v", set, err)
	}
	c, err = loadConfig([]string{"--payload", "a=avro:file:" + bad}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.payload.set(slog.Default()); err == nil || !strings.Contains(err.Error(), "cannot parse Avro schema") {
		t.Fatalf("broken schema file: %v", err)
	}
}

// The registry settings reach the registry: basic auth and a CA file for an https:// registry (srfake, franz-go's
// fake registry, behind an httptest TLS server). A wrong password leaves the rule without its schema, and the
// reason names the subject.
func TestPayloadRegistryAuthTLS(t *testing.T) {
	reg := srfake.New(srfake.WithAuth("Basic " + base64.StdEncoding.EncodeToString([]byte("ferry:s3cret"))))
	defer reg.Close()
	reg.SeedSchema("t-value", 1, 3, sr.Schema{Schema: `{"type":"string"}`, Type: sr.TypeAvro})
	ts := httptest.NewTLSServer(reg.Handler())
	defer ts.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600)
	for _, pass := range []string{"s3cret", "wrong"} {
		c, err := loadConfig([]string{"--payload", "a/#=avro:registry:t-value", "--schema-registry", ts.URL,
			"--schema-registry-user", "ferry", "--schema-registry-tls-ca", ca, "--schema-registry-timeout", "2s"},
			func(k string) string {
				if k == "FERRY_SCHEMA_REGISTRY_PASSWORD" {
					return pass
				}
				return ""
			})
		if err != nil {
			t.Fatal(err)
		}
		set, err := c.payload.set(slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		set.Start()
		if pass == "s3cret" {
			for ok, _ := set.Ready(); !ok; ok, _ = set.Ready() {
				time.Sleep(5 * time.Millisecond)
			}
		} else {
			for _, n := set.Stats(); n == 0; _, n = set.Stats() {
				time.Sleep(5 * time.Millisecond)
			}
			if ok, why := set.Ready(); ok || !strings.Contains(why, "t-value") || !strings.Contains(why, "not authorized") {
				t.Errorf("wrong password: ready %v %q", ok, why)
			}
		}
		set.Close()
	}
}
