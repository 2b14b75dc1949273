package load

import (
	"crypto/tls"
	"slices"
	"testing"
)

func TestParseTLSGroups(t *testing.T) {
	got, err := ParseTLSGroups(" X25519, curvep256 ")
	if err != nil || !slices.Equal(got, []tls.CurveID{tls.X25519, tls.CurveP256}) {
		t.Fatalf("got %v, %v; want [X25519 CurveP256]", got, err)
	}
	if got, err := ParseTLSGroups(""); got != nil || err != nil {
		t.Fatalf("empty: %v, %v; want Go's default (nil)", got, err)
	}
	if _, err := ParseTLSGroups("X25519,X448"); err == nil {
		t.Fatal("X448 accepted")
	}
}
