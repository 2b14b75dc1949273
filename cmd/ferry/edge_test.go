package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The rate-limit and redirect settings: each is a flag, a FERRY_ variable and a YAML key, and a bad value is
// one error naming the flag.
func TestEdgeSettings(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-connection-rate", "-1"}, "--max-connection-rate"},
		{[]string{"--max-publish-rate", "NaN"}, "--max-publish-rate"},
		{[]string{"--publish-burst", "-3"}, "--publish-burst"},
		{[]string{"--publish-rate-grace", "10ms"}, "--publish-rate-grace"},
		{[]string{"--redirect-by", "topic"}, "--redirect-by"},
		{[]string{"--redirect-by", "client-id"}, "--advertise"},
		{[]string{"--advertise", "nohost"}, "--advertise"},
		{[]string{"--advertise", "h:99999"}, "--advertise"},
	} {
		_, err := loadConfig(tc.args, noEnv)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line naming %s", tc.args, err, tc.want)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(file, []byte("max-publish-rate: 50\nredirect-by: client-id\nadvertise: a.example:1883\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"FERRY_MAX_CONNECTION_RATE": "2.5", "FERRY_CONNECTION_BURST": "10"}
	c, err := loadConfig([]string{"--config", file, "--publish-burst", "100"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	e := c.edge
	if e.maxPublishRate != 50 || e.publishBurst != 100 || e.maxConnectionRate != 2.5 || e.connectionBurst != 10 ||
		e.redirectBy != "client-id" || e.advertise != "a.example:1883" {
		t.Fatalf("settings from file, environment and flags: %+v", e)
	}
}
