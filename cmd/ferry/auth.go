package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/ferrymq/ferry/server/auth"
)

// authConfig holds the --auth-* settings: JWT authentication and topic authorization (server/auth). The
// files they name are read at start, by check-config, and again on SIGHUP.
type authConfig struct {
	jwtKey        string // PEM public key or HMAC secret file
	jwks          string // JWKS file
	tokenField    string
	identityClaim string
	rolesClaim    string
	issuer        string
	audience      string
	rules         string // YAML rules file
	passwords     string // password file: name:bcrypt-hash[:roles] (ferry passwd)
	anonymous     bool
}

func addAuthFlags(fs *flag.FlagSet, c *authConfig) {
	fs.StringVar(&c.jwtKey, "auth-jwt-key", "", "file with the key that verifies client tokens: a PEM public key (RS*, PS*, ES*, EdDSA) or an HMAC secret (HS*, at least 32 bytes); turns authentication on")
	fs.StringVar(&c.jwks, "auth-jwks", "", "JWKS file with the keys that verify client tokens (RSA, EC, Ed25519, oct); turns authentication on")
	fs.StringVar(&c.tokenField, "auth-token-field", "password", "CONNECT field that carries the token: password or username")
	fs.StringVar(&c.identityClaim, "auth-identity-claim", "sub", "token claim naming the client: its {identity} in the rules")
	fs.StringVar(&c.rolesClaim, "auth-roles-claim", "roles", "token claim listing the client's roles (an array, or a space-separated string such as scope)")
	fs.StringVar(&c.issuer, "auth-issuer", "", "required token issuer (iss); empty = not checked")
	fs.StringVar(&c.audience, "auth-audience", "", "required token audience (aud); empty = not checked")
	fs.StringVar(&c.rules, "auth-rules", "", "YAML file of roles and their publish/subscribe topic patterns (deploy/auth-rules.yaml); empty = every authenticated client may do everything")
	fs.StringVar(&c.passwords, "auth-passwords", "", "file of user names and bcrypt password hashes, one name:hash[:role,role] a line, written by `ferry passwd`; turns authentication on")
	fs.BoolVar(&c.anonymous, "auth-anonymous", false, "with authentication on, accept clients without a token (they get the rules' anonymous_role)")
}

// enabled reports whether authentication and authorization are on: a key or a rules file is configured.
// Without them every client is accepted with every privilege, as before.
func (c *authConfig) enabled() bool {
	return c.jwtKey != "" || c.jwks != "" || c.rules != "" || c.passwords != ""
}

// validate checks the settings without reading the files.
func (c *authConfig) validate() error {
	if c.tokenField != "password" && c.tokenField != "username" {
		return fmt.Errorf("invalid --auth-token-field %s: want password or username", c.tokenField)
	}
	if c.identityClaim == "" || c.rolesClaim == "" {
		return errors.New("invalid --auth-identity-claim or --auth-roles-claim: want a claim name")
	}
	if c.enabled() && c.jwtKey == "" && c.jwks == "" && c.passwords == "" && !c.anonymous {
		return errors.New("--auth-rules without --auth-jwt-key, --auth-jwks or --auth-passwords needs --auth-anonymous: every client would be refused")
	}
	return nil
}

// policy reads the key and rules files and builds a Policy. Errors are one line naming the setting and file.
func (c *authConfig) policy() (*auth.Policy, error) {
	var keys *auth.Keys
	if c.jwtKey != "" {
		k, err := readWith(c.jwtKey, auth.ParseKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--auth-jwt-key %s: %w", c.jwtKey, err)
		}
		keys = keys.Merge(k)
	}
	if c.jwks != "" {
		k, err := readWith(c.jwks, auth.ParseJWKS)
		if err != nil {
			return nil, fmt.Errorf("--auth-jwks %s: %w", c.jwks, err)
		}
		keys = keys.Merge(k)
	}
	var users auth.Users
	if c.passwords != "" {
		u, err := readWith(c.passwords, auth.ParsePasswordFile)
		if err != nil {
			return nil, fmt.Errorf("--auth-passwords %s: %w", c.passwords, err)
		}
		users = u
	}
	var rules *auth.Rules
	if c.rules != "" {
		r, err := readWith(c.rules, parseRules)
		if err != nil {
			return nil, fmt.Errorf("--auth-rules %s: %w", c.rules, err)
		}
		rules = r
	}
	p, err := auth.NewPolicy(auth.Settings{TokenField: c.tokenField, IdentityClaim: c.identityClaim,
		RolesClaim: c.rolesClaim, Issuer: c.issuer, Audience: c.audience, Anonymous: c.anonymous, Users: users}, keys, rules)
	if err != nil {
		if c.rules != "" {
			return nil, fmt.Errorf("--auth-rules %s: %w", c.rules, err) // the settings were checked: the rules are wrong
		}
		return nil, fmt.Errorf("authentication settings: %w", err)
	}
	return p, nil
}

func readWith[T any](path string, parse func([]byte) (T, error)) (T, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var zero T
		return zero, fmt.Errorf("cannot read: %w", errors.Unwrap(err)) // the path is named by the caller
	}
	return parse(data)
}

// parseRules decodes a rules file (see deploy/auth-rules.yaml); unknown keys are errors, so a misspelt
// "subscribe" does not silently grant nothing.
func parseRules(data []byte) (*auth.Rules, error) {
	var r auth.Rules
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty rules file")
		}
		return nil, errors.New(oneLine(strings.ReplaceAll(err.Error(), " in type auth.RoleRules", "")))
	}
	if len(r.Roles) == 0 {
		return nil, errors.New("no roles: want a roles mapping of role names to publish/subscribe patterns")
	}
	return &r, nil
}

// oneLine joins a multi-line message (yaml lists several errors on lines of their own) into one line.
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	if len(parts) > 1 && strings.HasSuffix(parts[0], ":") {
		return parts[0] + " " + strings.Join(parts[1:], "; ")
	}
	return strings.Join(parts, "; ")
}

// authority builds the Authority the server checks against, or nil when authentication is off.
func (c *authConfig) authority() (*auth.Authority, error) {
	if !c.enabled() {
		return nil, nil
	}
	p, err := c.policy()
	if err != nil {
		return nil, err
	}
	return auth.NewAuthority(p), nil
}

// reloadFunc re-reads the auth files into a; a file that fails keeps the policy in force.
func (c *authConfig) reloadFunc(a *auth.Authority) func() error {
	return func() error {
		p, err := c.policy()
		if err != nil {
			return err
		}
		a.Replace(p)
		return nil
	}
}

// reloader is one thing SIGHUP reloads: the auth keys and rules, TLS certificates, ...
type reloader struct {
	name string
	fn   func() error // builds the new state completely before installing it; on error the old one stays
}

// reloadAll runs every reloader once, logging each outcome. Runs on the SIGHUP goroutine.
func reloadAll(log *slog.Logger, rs []reloader) {
	if len(rs) == 0 {
		log.Info("SIGHUP received: nothing to reload")
		return
	}
	for _, r := range rs {
		if err := r.fn(); err != nil {
			log.Error("reload failed; the previous configuration stays in force", "what", r.name, "err", err)
			continue
		}
		log.Info("reloaded", "what", r.name)
	}
}
