package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/server"
	"github.com/ferrymq/ferry/server/payload"
)

// payloadConfig holds the payload contracts (--payload) and the schema registry settings (docs/operations.md,
// "Payload contracts").
type payloadConfig struct {
	rules        listFlag
	invalidV3    string
	registry     string
	user         string
	password     string
	passwordFile string
	token        string
	tlsCA        string
	tlsCert      string
	tlsKey       string
	refresh      time.Duration
	timeout      time.Duration
	hold         time.Duration

	pass    string      // the password, from --schema-registry-password or its file
	tlsConf *tls.Config // loaded by validate
}

func addPayloadFlags(fs *flag.FlagSet, c *payloadConfig) {
	fs.Var(&c.rules, "payload", "payload rule FILTER=FORMAT[:SOURCE][;OPTION]..., repeatable, first match wins: FORMAT json, jsonschema, avro or protobuf; SOURCE file:PATH or registry:SUBJECT[/VERSION]; OPTIONs message=NAME (protobuf), id=N (file schema's registry id), deliver=json (records to MQTT as JSON). E.g. 'sensors/+/telemetry=avro:registry:telemetry-value' (no commas inside a rule)")
	fs.StringVar(&c.invalidV3, "payload-invalid-v3", "drop", "a v3 client's PUBLISH that breaks its payload rule: drop (acknowledged, counted) or disconnect (v5 clients get PUBACK/PUBREC 0x99)")
	fs.StringVar(&c.registry, "schema-registry", "", "Confluent-compatible schema registry URL(s), comma-separated, for registry: payload rules and deliver=json (empty = none)")
	fs.StringVar(&c.user, "schema-registry-user", "", "schema registry basic auth user")
	fs.StringVar(&c.password, "schema-registry-password", "", "schema registry basic auth password; prefer FERRY_SCHEMA_REGISTRY_PASSWORD or --schema-registry-password-file")
	fs.StringVar(&c.passwordFile, "schema-registry-password-file", "", "file holding the schema registry password (one trailing newline is ignored)")
	fs.StringVar(&c.token, "schema-registry-token", "", "schema registry bearer token (instead of user and password)")
	fs.StringVar(&c.tlsCA, "schema-registry-tls-ca", "", "PEM file of the CA that signed the schema registry's certificate (empty = system roots)")
	fs.StringVar(&c.tlsCert, "schema-registry-tls-cert", "", "PEM client certificate for a registry that requires mutual TLS (with --schema-registry-tls-key)")
	fs.StringVar(&c.tlsKey, "schema-registry-tls-key", "", "PEM key of --schema-registry-tls-cert")
	fs.DurationVar(&c.refresh, "schema-registry-refresh", 5*time.Minute, "how often payload rules on a subject's latest version look for a new one (0 = never)")
	fs.DurationVar(&c.timeout, "schema-registry-timeout", 10*time.Second, "bound on one schema registry request")
	fs.DurationVar(&c.hold, "schema-registry-hold", 10*time.Second, "deliver=json: how long records of a schema id not fetched yet wait for it (with the records behind them in their partition) while the registry cannot answer; then they are delivered unchanged")
}

func (c *payloadConfig) validate() error {
	switch {
	case c.invalidV3 != "drop" && c.invalidV3 != "disconnect":
		return fmt.Errorf("invalid --payload-invalid-v3 %s: want drop or disconnect", c.invalidV3)
	case c.refresh < 0:
		return fmt.Errorf("invalid --schema-registry-refresh %v: want 0 (never) or positive", c.refresh)
	case c.timeout < 100*time.Millisecond:
		return fmt.Errorf("invalid --schema-registry-timeout %v: want at least 100ms", c.timeout)
	case c.hold < 100*time.Millisecond:
		return fmt.Errorf("invalid --schema-registry-hold %v: want at least 100ms", c.hold)
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return fmt.Errorf("invalid --schema-registry-tls-cert/--schema-registry-tls-key: give both or neither")
	case c.password != "" && c.passwordFile != "":
		return fmt.Errorf("invalid --schema-registry-password-file %s: --schema-registry-password is set too; give one", c.passwordFile)
	case c.token != "" && c.user != "":
		return fmt.Errorf("invalid --schema-registry-token: --schema-registry-user is set too; give one")
	case c.registry == "" && (c.user != "" || c.token != "" || c.tlsCA != "" || c.tlsCert != ""):
		return fmt.Errorf("invalid --schema-registry: empty, but schema registry credentials or TLS files are set")
	}
	c.pass = c.password
	if c.passwordFile != "" {
		b, err := os.ReadFile(c.passwordFile)
		if err != nil {
			return fmt.Errorf("invalid --schema-registry-password-file: %w", err)
		}
		c.pass = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	}
	if c.user != "" && c.pass == "" {
		return fmt.Errorf("invalid --schema-registry-password: empty, want it for --schema-registry-user %s", c.user)
	}
	if c.tlsCA != "" || c.tlsCert != "" {
		conf, err := kafkamux.LoadTLSConfig(c.tlsCA, c.tlsCert, c.tlsKey, "")
		if err != nil {
			return fmt.Errorf("invalid --schema-registry-tls-ca/--schema-registry-tls-cert/--schema-registry-tls-key: %w", err)
		}
		c.tlsConf = conf
	}
	for _, r := range c.rules.vals {
		sp, err := payload.Parse(r)
		if err != nil {
			return fmt.Errorf("invalid --payload %q: %w", r, err)
		}
		if sp.Subject != "" && c.registry == "" {
			return fmt.Errorf("invalid --payload %q: a registry source needs --schema-registry", r)
		}
	}
	return nil
}

// appendPayloadMetrics appends the metrics of the payload rules (none without rules). The rule label is the
// rule's topic filter: bounded by the configuration.
func appendPayloadMetrics(dst []byte, srv *server.Server) []byte {
	rules, regErrs := srv.PayloadStats()
	if rules == nil {
		return dst
	}
	p := &promWriter{b: dst}
	p.family("ferry_payload_refused_total", "counter", "Publishes refused by their payload rule (--payload), by rule and reason: not_json, schema_mismatch, schema_unavailable.")
	for _, r := range rules {
		for i, n := range payload.ReasonNames {
			p.u("ferry_payload_refused_total", r.Invalid[i], "rule", r.Filter, "reason", n)
		}
	}
	p.family("ferry_payload_converted_total", "counter", "Payloads converted from JSON to Avro or Protobuf on their way into Kafka, by rule.")
	for _, r := range rules {
		p.u("ferry_payload_converted_total", r.Converted, "rule", r.Filter)
	}
	p.family("ferry_payload_delivered_json_total", "counter", "Records delivered to MQTT subscribers as JSON by a deliver=json rule, by rule.")
	for _, r := range rules {
		p.u("ferry_payload_delivered_json_total", r.DeliveredJSON, "rule", r.Filter)
	}
	p.family("ferry_payload_deliver_errors_total", "counter", "Records a deliver=json rule could not decode (unknown schema id, bad body), delivered unchanged, by rule.")
	for _, r := range rules {
		p.u("ferry_payload_deliver_errors_total", r.DeliverErrors, "rule", r.Filter)
	}
	p.family("ferry_payload_schema_id", "gauge", "Registry id of the schema a payload rule uses; 0 = none (json, a file schema without id=); -1 = not loaded yet.")
	for _, r := range rules {
		id := int64(r.SchemaID)
		if !r.Loaded {
			id = -1
		}
		p.i("ferry_payload_schema_id", id, "rule", r.Filter)
	}
	p.family("ferry_schema_registry_errors_total", "counter", "Schema registry requests that failed (cached schemas stay in use).")
	p.u("ferry_schema_registry_errors_total", regErrs)
	now, total, lost := srv.PayloadHeld()
	p.family("ferry_payload_held_records", "gauge", "Records held for deliver=json while their schema id is fetched, with the records behind them in their partitions.")
	p.i("ferry_payload_held_records", now)
	p.family("ferry_payload_held_total", "counter", "Records ever held for deliver=json (see ferry_payload_held_records).")
	p.u("ferry_payload_held_total", total)
	p.family("ferry_payload_held_overflow_total", "counter", "Held records delivered unchanged because their partition held too many.")
	p.u("ferry_payload_held_overflow_total", lost)
	return p.b
}

// set builds the payload rules: it reads and compiles their file schemas (registry ones load when the Set
// starts). nil without rules.
func (c *payloadConfig) set(log *slog.Logger) (*payload.Set, error) {
	if len(c.rules.vals) == 0 {
		return nil, nil
	}
	opts := []payload.Opt{payload.Refresh(c.refresh), payload.FetchTimeout(c.timeout), payload.Hold(c.hold), payload.Logger(log)}
	if c.registry != "" {
		ropts := []sr.ClientOpt{sr.URLs(strings.Split(c.registry, ",")...), sr.UserAgent("ferry/" + version)}
		if c.tlsConf != nil {
			ropts = append(ropts, sr.HTTPClient(&http.Client{
				Timeout:   c.timeout,
				Transport: &http.Transport{TLSClientConfig: c.tlsConf, DialContext: (&net.Dialer{Timeout: c.timeout}).DialContext},
			}))
		} else {
			ropts = append(ropts, sr.HTTPClient(&http.Client{Timeout: c.timeout}))
		}
		switch {
		case c.user != "":
			ropts = append(ropts, sr.BasicAuth(c.user, c.pass))
		case c.token != "":
			ropts = append(ropts, sr.BearerToken(c.token))
		}
		cl, err := sr.NewClient(ropts...)
		if err != nil {
			return nil, fmt.Errorf("invalid --schema-registry %s: %w", c.registry, err)
		}
		opts = append(opts, payload.Registry(cl))
	}
	s, err := payload.New(c.rules.vals, opts...)
	if err != nil {
		return nil, fmt.Errorf("invalid --payload: %w", err)
	}
	return s, nil
}
