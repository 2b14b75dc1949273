package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/server/auth"
)

// ferry passwd stores bcrypt hashes only, adds, replaces and removes users, keeps other lines, and the file
// it writes is what --auth-passwords reads; a file with a plain-text password is refused.
func TestPasswd(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "passwords")
	run := func(stdin string, args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := passwd(args, strings.NewReader(stdin), &out, &errOut)
		return code, out.String() + errOut.String()
	}
	if code, out := run("first-secret\n", "--cost", "4", file, "alice"); code != 0 {
		t.Fatalf("add: %d %s", code, out)
	}
	if code, out := run("bob-secret\n", "--cost", "4", "--roles", "operator", file, "bob"); code != 0 {
		t.Fatalf("add bob: %d %s", code, out)
	}
	if code, out := run("second-secret\n", "--cost", "4", file, "alice"); code != 0 {
		t.Fatalf("replace: %d %s", code, out)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "secret") {
		t.Fatalf("a password is stored in plain text:\n%s", data)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	users, err := auth.ParsePasswordFile(data)
	if err != nil || len(users) != 2 || users["bob"].Roles[0] != "operator" {
		t.Fatalf("file %q: %v", data, err)
	}
	pol, err := auth.NewPolicy(auth.Settings{Users: users}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pol.VerifyPassword([]byte("alice"), []byte("second-secret")); err != nil {
		t.Fatalf("replaced password: %v", err)
	}
	if _, err := pol.VerifyPassword([]byte("alice"), []byte("first-secret")); err == nil {
		t.Fatal("the old password still works")
	}
	if code, out := run("", "--delete", file, "bob"); code != 0 {
		t.Fatalf("delete: %d %s", code, out)
	}
	if data, _ := os.ReadFile(file); strings.Contains(string(data), "bob") {
		t.Fatal("bob not removed")
	}
	if code, _ := run("x\n", file, "a/b"); code == 0 {
		t.Fatal("a user name with '/' accepted")
	}
	if code, _ := run("\n", file, "carol"); code == 0 {
		t.Fatal("an empty password accepted")
	}

	// --auth-passwords refuses a plain-text password, naming the file and the user.
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("dave:hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "check-config", "--auth-passwords", plain).CombinedOutput()
	if err == nil || !strings.Contains(string(out), plain) || !strings.Contains(string(out), "not a bcrypt hash") {
		t.Fatalf("check-config with a plain-text password: %v %s", err, out)
	}
	if out, err := exec.Command(binary, "check-config", "--auth-passwords", file).CombinedOutput(); err != nil {
		t.Fatalf("check-config with the file ferry passwd wrote: %v %s", err, out)
	}
}
