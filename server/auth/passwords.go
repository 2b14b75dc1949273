package auth

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// User name / password authentication, for fleets without tokens.
//
// A password file has one user per line, `name:bcrypt-hash[:role,role…]`; blank lines and lines starting
// with '#' are skipped. Passwords are never stored, only their bcrypt hashes (cmd/ferry's `ferry passwd`
// writes them). The user name is the client's identity ({identity} in the rules), so it must be usable as one
// topic level; roles name roles of the rules file, and a user without roles gets the default_role.
//
// Checking a password costs one bcrypt comparison: tens of milliseconds of CPU at cost 10, by design. Never
// call VerifyPassword on an event loop (the server runs it on a small bounded pool, CheckPool).

// User is one entry of a password file.
type User struct {
	Hash  []byte   // bcrypt hash of the password
	Roles []string // nil: the default role
}

// Users maps a user name to its entry.
type Users map[string]User

// DefaultPasswordCost is the bcrypt cost HashPassword uses when given 0.
const DefaultPasswordCost = bcrypt.DefaultCost

// HashPassword returns the bcrypt hash of password at cost (0: DefaultPasswordCost).
func HashPassword(password []byte, cost int) ([]byte, error) {
	if cost == 0 {
		cost = DefaultPasswordCost
	}
	if len(password) == 0 {
		return nil, errors.New("empty password")
	}
	h, err := bcrypt.GenerateFromPassword(password, cost)
	if err != nil {
		return nil, fmt.Errorf("cannot hash the password: %w", err)
	}
	return h, nil
}

// ParsePasswordFile reads a password file (see the file comment). Errors name the line.
func ParsePasswordFile(data []byte) (Users, error) {
	users := Users{}
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		name, u, err := ParsePasswordLine(string(line))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("line %d: user %q listed twice", i+1, name)
		}
		users[name] = u
	}
	return users, nil
}

// ParsePasswordLine reads one `name:hash[:roles]` line.
func ParsePasswordLine(line string) (string, User, error) {
	parts := strings.Split(line, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return "", User{}, errors.New("want name:bcrypt-hash or name:bcrypt-hash:role,role")
	}
	name, hash := parts[0], []byte(parts[1])
	if !UsableIdentity(name) {
		return "", User{}, fmt.Errorf("user %q: a user name is the identity, one topic level: no '/', '+', '#', leading '$'", name)
	}
	if _, err := bcrypt.Cost(hash); err != nil {
		return "", User{}, fmt.Errorf("user %q: the password is not a bcrypt hash (store hashes only: ferry passwd): %w", name, err)
	}
	u := User{Hash: hash}
	if len(parts) == 3 {
		for _, r := range strings.Split(parts[2], ",") {
			if r = strings.TrimSpace(r); r != "" {
				u.Roles = append(u.Roles, r)
			}
		}
	}
	return name, u, nil
}

// FormatPasswordLine is the line ParsePasswordLine reads back.
func FormatPasswordLine(name string, u User) string {
	s := name + ":" + string(u.Hash)
	if len(u.Roles) > 0 {
		s += ":" + strings.Join(u.Roles, ",")
	}
	return s
}

// IsPasswordUser reports whether username names a user of the password file: its CONNECT is checked with
// VerifyPassword, not as a token. Cheap: one map lookup.
func (p *Policy) IsPasswordUser(username []byte) bool {
	if len(p.s.Users) == 0 || len(username) == 0 {
		return false
	}
	_, ok := p.s.Users[string(username)]
	return ok
}

// VerifyPassword checks a user's password and returns its principal (identity = the user name). Errors wrap
// ErrBadCredentials. Costs one bcrypt comparison: never call it on an event loop. Safe for concurrent use.
func (p *Policy) VerifyPassword(username, password []byte) (*Principal, error) {
	u, ok := p.s.Users[string(username)]
	if !ok {
		return nil, fmt.Errorf("%w: no user %q", ErrBadCredentials, username)
	}
	if err := bcrypt.CompareHashAndPassword(u.Hash, password); err != nil {
		return nil, fmt.Errorf("%w: wrong password for user %q", ErrBadCredentials, username)
	}
	if len(u.Roles) == 0 {
		return p.principal(string(username), nil, fromDefault), nil
	}
	return p.principal(string(username), u.Roles, fromRoles), nil
}
