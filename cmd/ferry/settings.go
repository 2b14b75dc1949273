package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strings"

	"github.com/ferrymq/ferry/server"
)

// This file holds what makes a settings error say where the setting came from (a flag, a FERRY_* variable or
// a line of the --config file), the refusal of unknown FERRY_* variables, and the listener checks: schemes,
// host:port shorthand, and no anonymous access beyond loopback unless asked for.

// envName is the environment variable of a setting: FERRY_ and the name in upper case, '-' → '_'.
func envName(setting string) string {
	return "FERRY_" + strings.ToUpper(strings.ReplaceAll(setting, "-", "_"))
}

// settingRef matches a setting named in an error message: --max-qos, --kafka-sasl-user.
var settingRef = regexp.MustCompile(`--[a-z0-9]+(?:-[a-z0-9]+)*`)

// explain rewrites a settings error so that each setting it names is named by its source: a flag stays
// --name, a variable becomes FERRY_NAME, and a key of the --config file loses its dashes while the message
// starts with the file and the key's line, as compilers do ("ferry.yaml:12: invalid max-qos 9: want 0, 1 or
// 2"). Settings left at their defaults stay --name.
func (c *config) explain(err error) error {
	if err == nil || len(c.sources) == 0 {
		return err
	}
	var where string
	msg := settingRef.ReplaceAllStringFunc(err.Error(), func(m string) string {
		name := m[2:]
		switch s := c.sources[name]; {
		case s == "" || strings.HasPrefix(s, "--"):
			return m
		case strings.HasPrefix(s, "FERRY_"):
			return s
		default: // file:line
			if where == "" {
				where = s
			}
			return name
		}
	})
	if where != "" {
		msg = where + ": " + msg
	}
	if msg == err.Error() {
		return err
	}
	return &settingError{msg: msg, err: err}
}

// settingError is a settings error reworded by explain; it unwraps to the original.
type settingError struct {
	msg string
	err error
}

func (e *settingError) Error() string { return e.msg }
func (e *settingError) Unwrap() error { return e.err }

// toolVariables are FERRY_* variables of Ferry's own scripts and tests (scripts/, .ci/run), not settings. They
// are ignored, so that `FERRY_BIN=./ferry scripts/crash.sh` can start Ferry with them in its environment.
var toolVariables = map[string]bool{
	"FERRY_BIN": true, "FERRY_ARGS": true, "FERRY_CACHE": true,
	"FERRY_BROWSER_TEST": true, "FERRY_CHROMIUM": true, "FERRY_MQTTJS": true,
}

// checkEnvironment refuses FERRY_* variables that name no setting: a misspelt FERRY_MAXQOS would otherwise be
// ignored without a word. The error names the first (in sorted order) and the setting closest to it.
func checkEnvironment(environ []string) error {
	known := map[string]bool{}
	var names []string
	for _, n := range settingNames() {
		known[envName(n)] = true
		names = append(names, envName(n))
	}
	var unknown []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "FERRY_") && !known[k] && !toolVariables[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	msg := fmt.Sprintf("unknown environment variable %s: no setting has that name", unknown[0])
	if best := closest(unknown[0], names); best != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", best)
	} else {
		msg += " (a setting's variable is FERRY_ and its flag name in upper case, '-' as '_': ferry --help lists them)"
	}
	if len(unknown) > 1 {
		msg += "; also unknown: " + strings.Join(unknown[1:], ", ")
	}
	return errors.New(msg)
}

// unknownFlagHint adds the closest flag to the flag package's "flag provided but not defined: -x".
func unknownFlagHint(err error) error {
	const prefix = "flag provided but not defined: -"
	name, ok := strings.CutPrefix(err.Error(), prefix)
	if !ok {
		return err
	}
	name = strings.TrimPrefix(name, "-")
	if best := closest(name, settingNames()); best != "" {
		return fmt.Errorf("unknown flag --%s (did you mean --%s?)", name, best)
	}
	return fmt.Errorf("unknown flag --%s (ferry --help lists the flags)", name)
}

// closest returns the name nearest to s by edit distance, or "" when none is near enough to be a misspelling.
func closest(s string, names []string) string {
	best, bestD := "", -1
	for _, n := range names {
		if d := editDistance(s, n); bestD < 0 || d < bestD {
			best, bestD = n, d
		}
	}
	if bestD < 0 || bestD > max(2, len(strings.TrimPrefix(s, "FERRY_"))/3) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// validateListeners completes and checks --mqtt: "host:port" alone becomes tcp://host:port; a scheme other
// than those of --help is refused with the one meant (the server package also accepts mqtt://, ssl:// and
// mqtts:// for embedders, but the binary keeps one spelling per transport); and a listener reachable from
// other hosts needs authentication or an explicit --auth-anonymous.
func (c *config) validateListeners() error {
	for i, l := range c.mqtt.vals {
		if !strings.Contains(l, "://") {
			l = "tcp://" + l
			c.mqtt.vals[i] = l
		}
		scheme, _, _ := strings.Cut(l, "://")
		switch scheme {
		case "tcp", "tcp4", "tcp6", "tls", "ws", "wss":
		case "mqtt":
			return fmt.Errorf("invalid --mqtt %q: unknown scheme mqtt://, use tcp:// for plain MQTT (tls:// for MQTT over TLS)", l)
		case "mqtts", "ssl":
			return fmt.Errorf("invalid --mqtt %q: unknown scheme %s://, use tls:// for MQTT over TLS", l, scheme)
		default:
			return fmt.Errorf("invalid --mqtt %q: unknown scheme %s://, want tcp://, tls://, ws:// or wss://", l, scheme)
		}
	}
	if open := c.exposedWithoutAuth(); len(open) > 0 && !c.auth.anonymous {
		return fmt.Errorf("invalid --mqtt %s: listens beyond loopback without authentication, so anyone who reaches it may publish and subscribe to every topic; "+
			"turn authentication on (--auth-passwords, --auth-jwt-key or --auth-jwks) or accept anonymous clients explicitly with --auth-anonymous", open[0])
	}
	return nil
}

// exposedWithoutAuth lists the listeners where a client from another host could connect without credentials:
// all those not bound to a loopback address, unless authentication is on; a tls:// or wss:// listener that
// requires client certificates (--tls-client-ca with --tls-client-auth require) authenticates by itself.
func (c *config) exposedWithoutAuth() []string {
	if c.auth.enabled() {
		return nil
	}
	var open []string
	for _, l := range c.mqtt.vals {
		u, err := url.Parse(l)
		if err != nil {
			continue // the server refuses it with the reason
		}
		if (u.Scheme == "tls" || u.Scheme == "wss") && c.tls.clientCA != "" && c.tls.clientAuth == server.TLSClientCertRequire {
			continue
		}
		if !isLoopback(u.Hostname()) {
			open = append(open, l)
		}
	}
	return open
}

// isLoopback reports whether a listener's host is a loopback address: "" (every address) is not.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// logAccess says at start who may connect: authentication on, or anonymous clients, and where.
func logAccess(log *slog.Logger, c *config) {
	switch open := c.exposedWithoutAuth(); {
	case c.auth.enabled():
		log.Info("authentication on", "passwords", c.auth.passwords != "", "jwt", c.auth.jwtKey != "" || c.auth.jwks != "",
			"rules", c.auth.rules != "", "anonymous_clients", c.auth.anonymous)
	case len(open) > 0:
		log.Warn("authentication off: anonymous clients may publish and subscribe to every topic (auth-anonymous is set)",
			"listeners", open)
	default:
		log.Info("authentication off: anonymous clients are accepted on loopback listeners only (and with a client certificate on TLS listeners that require one); "+
			"a listener on another address needs authentication or auth-anonymous", "listeners", c.mqtt.vals)
	}
}
