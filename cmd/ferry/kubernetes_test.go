package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The Kubernetes manifests of deploy/kubernetes, checked offline (no cluster, no kubeconform): every document
// parses and has a known kind with its API version and a name; selectors select the StatefulSet's pods; every
// --flag of a container and every FERRY_* variable (from env or a Secret) is a setting, and together they pass
// loadConfig; the probes use the admin server's /readyz and /healthz on the --admin port; each listener's port
// is a container port; the grace period covers preStop and --shutdown-timeout; instance ids come from the pod
// name; files named by flags are mounted.
func TestKubernetesManifests(t *testing.T) {
	var files []string
	for _, pattern := range []string{"../../deploy/kubernetes/*.yaml", "../../deploy/kubernetes/*/*.yaml"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 4 {
		t.Fatalf("found %d manifest files, want the cluster and standalone variants: %v", len(files), files)
	}
	apiVersions := map[string]string{"Service": "v1", "Secret": "v1", "ConfigMap": "v1", "StatefulSet": "apps/v1",
		"PodDisruptionBudget": "policy/v1", "Kustomization": "kustomize.config.k8s.io/v1beta1"}
	byKind := map[string][]k8sDoc{}
	for _, f := range files {
		docs, err := decodeYAMLDocs(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, d := range docs {
			kind, api := str(d.get("kind")), str(d.get("apiVersion"))
			if want, ok := apiVersions[kind]; !ok || api != want {
				t.Errorf("%s: kind %q apiVersion %q, want one of %v", d, kind, api, apiVersions)
				continue
			}
			if kind == "Kustomization" {
				for _, r := range list(d.get("resources")) {
					if _, err := os.Stat(filepath.Join(filepath.Dir(f), str(r))); err != nil {
						t.Errorf("%s: resource %v: %v", d, r, err)
					}
				}
				continue
			}
			if str(d.get("metadata", "name")) == "" {
				t.Errorf("%s: no metadata.name", d)
			}
			byKind[kind] = append(byKind[kind], d)
		}
	}
	if len(byKind["StatefulSet"]) < 2 || len(byKind["PodDisruptionBudget"]) == 0 {
		t.Fatalf("want a StatefulSet per variant and a PodDisruptionBudget, found %d and %d",
			len(byKind["StatefulSet"]), len(byKind["PodDisruptionBudget"]))
	}
	secrets := map[string]map[string]string{}
	for _, s := range byKind["Secret"] {
		data := map[string]string{}
		for k, v := range mapOf(s.get("stringData")) {
			data[k] = str(v)
		}
		secrets[str(s.get("metadata", "name"))] = data
	}
	services := map[string]k8sDoc{}
	for _, s := range byKind["Service"] {
		services[str(s.get("metadata", "name"))] = s
	}
	for _, ss := range byKind["StatefulSet"] {
		checkStatefulSet(t, ss, secrets, services)
	}
	selects := func(d k8sDoc, sel map[string]any) (k8sDoc, bool) {
		for _, ss := range byKind["StatefulSet"] {
			if len(sel) > 0 && subset(sel, mapOf(ss.get("spec", "template", "metadata", "labels"))) {
				return ss, true
			}
		}
		return k8sDoc{}, false
	}
	for _, s := range byKind["Service"] {
		ss, ok := selects(s, mapOf(s.get("spec", "selector")))
		if !ok {
			t.Errorf("%s: its selector selects no StatefulSet's pods", s)
			continue
		}
		ports := containerPorts(ss)
		for _, p := range list(s.get("spec", "ports")) {
			target := mapOf(p)["targetPort"]
			if name, ok := target.(string); ok {
				if _, ok := ports[name]; !ok {
					t.Errorf("%s: targetPort %q is not a port of %s", s, name, ss)
				}
			} else if n, ok := target.(int); ok && !hasValue(ports, n) {
				t.Errorf("%s: targetPort %d is not a port of %s", s, n, ss)
			}
		}
	}
	for _, p := range byKind["PodDisruptionBudget"] {
		if _, ok := selects(p, mapOf(p.get("spec", "selector", "matchLabels"))); !ok {
			t.Errorf("%s: its selector selects no StatefulSet's pods", p)
		}
		if p.get("spec", "maxUnavailable") == nil && p.get("spec", "minAvailable") == nil {
			t.Errorf("%s: neither maxUnavailable nor minAvailable", p)
		}
	}
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkStatefulSet checks one StatefulSet running Ferry against the binary's settings.
func checkStatefulSet(t *testing.T, ss k8sDoc, secrets map[string]map[string]string, services map[string]k8sDoc) {
	t.Helper()
	spec := ss.get("spec")
	if svc, ok := services[str(path(spec, "serviceName"))]; !ok || str(svc.get("spec", "clusterIP")) != "None" {
		t.Errorf("%s: serviceName %q is not a headless Service of the manifests", ss, str(path(spec, "serviceName")))
	}
	if !subset(mapOf(path(spec, "selector", "matchLabels")), mapOf(path(spec, "template", "metadata", "labels"))) {
		t.Errorf("%s: selector.matchLabels do not match the pod template's labels", ss)
	}
	pod := path(spec, "template", "spec")
	if path(pod, "securityContext", "runAsNonRoot") != true {
		t.Errorf("%s: the pod does not set securityContext.runAsNonRoot", ss)
	}
	var c map[string]any
	for _, x := range list(path(pod, "containers")) {
		if str(mapOf(x)["name"]) == "ferry" {
			c = mapOf(x)
		}
	}
	if c == nil {
		t.Fatalf("%s: no container named ferry", ss)
	}

	// The environment: env (values, or the pod name for fieldRef metadata.name) and envFrom Secrets.
	env := map[string]string{}
	for _, e := range list(c["env"]) {
		name := str(mapOf(e)["name"])
		env[name] = str(mapOf(e)["value"])
		if str(path(e, "valueFrom", "fieldRef", "fieldPath")) == "metadata.name" {
			env[name] = str(ss.get("metadata", "name")) + "-0"
		}
	}
	for _, from := range list(c["envFrom"]) {
		name := str(path(from, "secretRef", "name"))
		data, ok := secrets[name]
		if !ok {
			t.Errorf("%s: envFrom Secret %q is not in the manifests", ss, name)
		}
		for k, v := range data {
			env[k] = v
		}
	}
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	if err := checkEnvironment(environ); err != nil {
		t.Errorf("%s: %v", ss, err)
	}

	// The flags, with $(VAR) expanded as the kubelet does.
	var args []string
	for _, a := range list(c["args"]) {
		s := str(a)
		name, _, _ := strings.Cut(strings.TrimPrefix(s, "--"), "=")
		if !strings.HasPrefix(s, "--") || !containsString(settingNames(), name) {
			t.Errorf("%s: argument %q is not a --flag of ferry", ss, s)
		}
		for _, m := range envRef.FindAllStringSubmatch(s, -1) {
			if _, ok := env[m[1]]; !ok {
				t.Errorf("%s: argument %q refers to $(%s), which the container's env does not define", ss, s, m[1])
			}
		}
		args = append(args, envRef.ReplaceAllStringFunc(s, func(m string) string { return env[m[2:len(m)-1]] }))
	}
	if !containsArg(list(c["args"]), "--instance-id=$(POD_NAME)") {
		t.Errorf("%s: --instance-id is not the pod name ($(POD_NAME)): instance ids must be stable per ordinal", ss)
	}
	cfg, err := loadConfig(args, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("%s: the container's settings do not load: %v", ss, err)
	}

	// Ports, probes and the admin server.
	ports := containerPorts(ss)
	_, adminPort, err := net.SplitHostPort(cfg.admin)
	if err != nil {
		t.Fatalf("%s: --admin %q: %v (the probes need the admin server)", ss, cfg.admin, err)
	}
	for probe, want := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		get := path(c[probe], "httpGet")
		if get == nil {
			t.Errorf("%s: no %s.httpGet", ss, probe)
			continue
		}
		if p := str(path(get, "path")); p != want {
			t.Errorf("%s: %s path %q, want %s", ss, probe, p, want)
		}
		port := path(get, "port")
		if name, ok := port.(string); ok {
			port = ports[name]
		}
		if fmt.Sprint(port) != adminPort {
			t.Errorf("%s: %s port %v is not the --admin port %s", ss, probe, path(get, "port"), adminPort)
		}
	}
	for _, l := range cfg.mqtt.vals {
		_, port, _ := net.SplitHostPort(strings.SplitN(strings.SplitN(l, "://", 2)[1], "/", 2)[0])
		port, _, _ = strings.Cut(port, "?")
		n, _ := strconv.Atoi(port)
		if !hasValue(ports, n) {
			t.Errorf("%s: listener %s: port %s is not a container port", ss, l, port)
		}
	}

	// Graceful drain: the grace period covers the preStop pause and Ferry's own shutdown timeout.
	grace, _ := path(pod, "terminationGracePeriodSeconds").(int)
	sleep, _ := path(c["lifecycle"], "preStop", "sleep", "seconds").(int)
	if need := time.Duration(sleep)*time.Second + cfg.shutdownTimeout; time.Duration(grace)*time.Second <= need {
		t.Errorf("%s: terminationGracePeriodSeconds %d does not exceed preStop %ds + --shutdown-timeout %v", ss, grace, sleep, cfg.shutdownTimeout)
	}

	// Files named by flags are mounted; the embedded Kafka's data dir is a volume, with one replica.
	mounted := func(file string) bool {
		for _, m := range list(c["volumeMounts"]) {
			if mp := str(mapOf(m)["mountPath"]); mp != "" && strings.HasPrefix(file, strings.TrimSuffix(mp, "/")+"/") || file == mp {
				return true
			}
		}
		return false
	}
	for _, f := range []string{cfg.auth.passwords, cfg.auth.jwtKey, cfg.auth.jwks, cfg.auth.rules, cfg.tls.cert, cfg.tls.key, cfg.tls.clientCA} {
		if f != "" && !mounted(f) {
			t.Errorf("%s: %s is not under a volumeMount", ss, f)
		}
	}
	if cfg.kafkaBrokers == "" {
		if !mounted(cfg.dataDir + "/x") {
			t.Errorf("%s: embedded Kafka: --data-dir %s is not a mounted volume", ss, cfg.dataDir)
		}
		if r, _ := path(spec, "replicas").(int); r != 1 {
			t.Errorf("%s: embedded Kafka with %d replicas, want exactly 1 (one process per data dir)", ss, r)
		}
		if len(list(path(spec, "volumeClaimTemplates"))) == 0 {
			t.Errorf("%s: embedded Kafka without a volumeClaimTemplate: its data would not outlive the pod", ss)
		}
	}
}

// k8sDoc is one decoded YAML document and where it came from.
type k8sDoc struct {
	m    map[string]any
	file string
	i    int
}

func (d k8sDoc) String() string {
	return fmt.Sprintf("%s doc %d (%v %v)", filepath.Base(d.file), d.i+1, d.get("kind"), d.get("metadata", "name"))
}
func (d k8sDoc) get(keys ...string) any { return path(d.m, keys...) }

func decodeYAMLDocs(file string) ([]k8sDoc, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []k8sDoc
	for i := 0; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return docs, nil
		} else if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if m != nil {
			docs = append(docs, k8sDoc{m: m, file: file, i: len(docs)})
		}
	}
}

func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any) string           { s, _ := v.(string); return s }
func list(v any) []any           { l, _ := v.([]any); return l }
func mapOf(v any) map[string]any { m, _ := v.(map[string]any); return m }

func subset(a, b map[string]any) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// containerPorts maps the port names of a StatefulSet's ferry container to their numbers.
func containerPorts(ss k8sDoc) map[string]any {
	ports := map[string]any{}
	for _, c := range list(ss.get("spec", "template", "spec", "containers")) {
		for _, p := range list(mapOf(c)["ports"]) {
			ports[str(mapOf(p)["name"])] = mapOf(p)["containerPort"]
		}
	}
	return ports
}

func hasValue(m map[string]any, n int) bool {
	for _, v := range m {
		if v == n {
			return true
		}
	}
	return false
}

func containsString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func containsArg(l []any, s string) bool {
	for _, x := range l {
		if str(x) == s {
			return true
		}
	}
	return false
}
