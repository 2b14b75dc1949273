package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
