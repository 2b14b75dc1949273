package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestPasswordFile(t *testing.T) {
	h, err := HashPassword([]byte("s3cret"), 4)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(h), "s3cret") {
		t.Fatal("the hash contains the password")
	}
	file := "# users\n\nalice:" + string(h) + "\nbob:" + string(h) + ":ops, viewer\n"
	users, err := ParsePasswordFile([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || users["bob"].Roles[1] != "viewer" || users["alice"].Roles != nil {
		t.Fatalf("users %+v", users)
	}
	for _, bad := range []struct{ file, want string }{
		{"carol:s3cret\n", "not a bcrypt hash"}, // plain text is refused
		{"a/b:" + string(h) + "\n", "one topic level"},
		{"alice:" + string(h) + "\nalice:" + string(h) + "\n", "listed twice"},
		{"alice\n", "want name:bcrypt-hash"},
	} {
		if _, err := ParsePasswordFile([]byte(bad.file)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v, want an error with %q", bad.file, err, bad.want)
		}
	}
	pol, err := NewPolicy(Settings{Users: users}, nil, &Rules{DefaultRole: "device", Roles: map[string]RoleRules{
		"device": {Publish: []string{"place/{identity}/#"}}, "ops": {Publish: []string{"ops/#"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if !pol.IsPasswordUser([]byte("alice")) || pol.IsPasswordUser([]byte("mallory")) || pol.IsPasswordUser(nil) {
		t.Fatal("IsPasswordUser")
	}
	pr, err := pol.VerifyPassword([]byte("alice"), []byte("s3cret"))
	if err != nil || pr.Identity() != "alice" || !pr.MayPublish("place/alice/x") || pr.MayPublish("ops/x") {
		t.Fatalf("alice: %v", err)
	}
	pr, err = pol.VerifyPassword([]byte("bob"), []byte("s3cret"))
	if err != nil || !pr.MayPublish("ops/x") || pr.MayPublish("place/bob/x") {
		t.Fatalf("bob: %v", err)
	}
	if _, err := pol.VerifyPassword([]byte("alice"), []byte("wrong")); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := pol.VerifyPassword([]byte("mallory"), []byte("s3cret")); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("unknown user: %v", err)
	}
}

// BenchmarkVerifyPassword is the CPU one password CONNECT costs at the default cost (the figure in
// docs/operations.md): go test -run '^$' -bench VerifyPassword -benchtime 20x ./server/auth/
func BenchmarkVerifyPassword(b *testing.B) {
	h, err := HashPassword([]byte("pw"), 0)
	if err != nil {
		b.Fatal(err)
	}
	pol, err := NewPolicy(Settings{Users: Users{"u": {Hash: h}}}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pol.VerifyPassword([]byte("u"), []byte("pw")); err != nil {
			b.Fatal(err)
		}
	}
}
