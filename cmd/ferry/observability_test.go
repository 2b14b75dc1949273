package main

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// metricName matches a metric name in a PromQL expression or an annotation.
var metricName = regexp.MustCompile(`\b(?:ferry|go|process)_[a-z0-9_]+\b`)

// The Grafana dashboard and the Prometheus alert rules of deploy/ are well formed and use only metrics that a
// running Ferry (the binary, embedded Kafka, one cleaning pass done) exposes on /metrics.
func TestObservabilityKit(t *testing.T) {
	used := map[string][]string{} // metric → where

	// The dashboard: JSON, unique panel ids, every panel queries something, through the datasource variable.
	raw, err := os.ReadFile("../../deploy/grafana/ferry-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("ferry-dashboard.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("ferry-dashboard.json: title %q uid %q, %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("dashboard: panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 || p.Datasource.UID != "${datasource}" {
			t.Errorf("dashboard panel %q: %d targets, datasource %q (want the ${datasource} variable)", p.Title, len(p.Targets), p.Datasource.UID)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("dashboard panel %q: a target without an expression", p.Title)
			}
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				used[m] = append(used[m], "dashboard panel "+p.Title)
			}
		}
	}

	// The alert rules: groups of rules, each with a name, an expression, a severity and a summary.
	raw, err = os.ReadFile("../../deploy/prometheus/ferry-alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("ferry-alerts.yaml: %v", err)
	}
	names := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %q: want alert, expr, labels.severity and annotations.summary", r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if names[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			names[r.Alert] = true
			for _, text := range []string{r.Expr, r.Annotations["description"], r.Annotations["summary"]} {
				for _, m := range metricName.FindAllString(text, -1) {
					used[m] = append(used[m], "alert "+r.Alert)
				}
			}
		}
	}
	if len(names) == 0 {
		t.Fatal("ferry-alerts.yaml has no rules")
	}

	// What a running instance exposes.
	families := runningFamilies(t)
	var missing []string
	for m, where := range used {
		if !families[m] {
			missing = append(missing, m+" (used by "+strings.Join(where, ", ")+")")
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("not exported by ferry: %s", m)
	}
	for _, want := range []string{"ferry_connections_current", "ferry_publish_stage_seconds_bucket", "ferry_delivery_stage_seconds_bucket",
		"ferry_kafka_up", "ferry_dropped_total", "ferry_embedded_kafka_disk_bytes"} {
		if len(used[want]) == 0 {
			t.Errorf("the kit does not use %s", want)
		}
	}
}

// runningFamilies starts the binary with its embedded Kafka and an admin address, waits until /metrics shows
// the embedded Kafka's cleaning figures (a pass has run), and returns the metric names it exposes: each family
// of a TYPE line, with _bucket, _sum and _count for histograms.
func runningFamilies(t *testing.T) map[string]bool {
	t.Helper()
	admin := startStandalone(t, nil, "--embedded-clean-interval", "1s")
	deadline := time.Now().Add(30 * time.Second)
	for {
		families := map[string]bool{}
		if resp, err := http.Get("http://" + admin + "/metrics"); err == nil {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				f, ok := strings.CutPrefix(sc.Text(), "# TYPE ")
				if !ok {
					continue
				}
				name, typ, _ := strings.Cut(f, " ")
				families[name] = true
				if typ == "histogram" {
					families[name+"_bucket"], families[name+"_sum"], families[name+"_count"] = true, true, true
				}
			}
			resp.Body.Close()
			if families["ferry_embedded_kafka_last_clean_duration_seconds"] {
				return families
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no /metrics with the embedded Kafka's cleaning figures on %s within 30 s (families seen: %d)", admin, len(families))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startStandalone starts the binary with its embedded Kafka in a temporary data dir, an admin address, the
// flags args and the variables env added to the environment, and returns the admin address. The process is
// stopped when the test ends.
func startStandalone(t *testing.T, env []string, args ...string) string {
	t.Helper()
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	mqttAddr, admin, dir := free(), free(), t.TempDir()
	cmd := exec.Command(binary, append([]string{"--mqtt", "tcp://" + mqttAddr, "--admin", admin, "--embedded-kafka-addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "data"), "--log-level", "error"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopProcess(cmd) })
	return admin
}
