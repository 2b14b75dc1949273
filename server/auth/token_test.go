package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test-only")

func sign(t testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) []byte {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

func pemPublic(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func claims(extra map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "dev1", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func hmacPolicy(t testing.TB, s Settings) *Policy {
	t.Helper()
	keys, err := ParseKeyFile(append(append([]byte(nil), testSecret...), '\n'))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPolicy(s, keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuthTokenHS256(t *testing.T) {
	pol := hmacPolicy(t, Settings{Issuer: "https://issuer.example", Audience: "ferry"})
	good := map[string]any{"iss": "https://issuer.example", "aud": "ferry"}
	hour := time.Hour
	cases := []struct {
		name  string
		token []byte
		want  error
	}{
		{"valid", sign(t, jwt.SigningMethodHS256, testSecret, claims(good), ""), nil},
		{"valid HS512", sign(t, jwt.SigningMethodHS512, testSecret, claims(good), ""), nil},
		{"audience list", sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": "https://issuer.example", "aud": []string{"x", "ferry"}}), ""), nil},
		{"expired", sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": "https://issuer.example", "aud": "ferry", "exp": time.Now().Add(-hour).Unix()}), ""), ErrBadCredentials},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": "https://issuer.example", "aud": "ferry", "nbf": time.Now().Add(hour).Unix()}), ""), ErrBadCredentials},
		{"wrong signature", sign(t, jwt.SigningMethodHS256, []byte("another secret of at least 32 bytes!!"), claims(good), ""), ErrBadCredentials},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": "https://issuer.example", "aud": "other"}), ""), ErrBadCredentials},
		{"no audience", sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": "https://issuer.example"}), ""), ErrBadCredentials},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": "https://evil.example", "aud": "ferry"}), ""), ErrBadCredentials},
		{"missing identity", sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": "https://issuer.example", "aud": "ferry", "sub": nil}), ""), ErrNotAuthorized},
		{"identity with wildcard", sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": "https://issuer.example", "aud": "ferry", "sub": "+"}), ""), ErrNotAuthorized},
		{"identity with slash", sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": "https://issuer.example", "aud": "ferry", "sub": "a/b"}), ""), ErrNotAuthorized},
		{"alg none", []byte(jwtNone(claims(good))), ErrBadCredentials},
		{"garbage", []byte("not.a.token"), ErrBadCredentials},
		{"no token", nil, ErrNotAuthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pr, err := pol.Authenticate([]byte("user"), c.token, "")
			if c.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if pr.Identity() != "dev1" {
					t.Fatalf("identity %q", pr.Identity())
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

func jwtNone(c jwt.MapClaims) string {
	s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	return s
}

func TestAuthTokenUsernameFieldAndAnonymous(t *testing.T) {
	pol := hmacPolicy(t, Settings{TokenField: "username", Anonymous: true})
	tok := sign(t, jwt.SigningMethodHS256, testSecret, claims(nil), "")
	if _, err := pol.Authenticate(tok, nil, ""); err != nil {
		t.Fatalf("token in user name: %v", err)
	}
	pr, err := pol.Authenticate(nil, tok, "") // in the password: ignored, so anonymous
	if err != nil || pr.Identity() != "" {
		t.Fatalf("anonymous: %v %q", err, pr.Identity())
	}
	pr, err = pol.Authenticate(nil, nil, "cert-subject")
	if err != nil || pr.Identity() != "cert-subject" {
		t.Fatalf("certificate identity: %v", err)
	}
}

func TestAuthTokenRS256ES256(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		pub  any
		m    jwt.SigningMethod
		priv any
	}{{"RS256", &rk.PublicKey, jwt.SigningMethodRS256, rk}, {"ES256", &ek.PublicKey, jwt.SigningMethodES256, ek}} {
		t.Run(c.name, func(t *testing.T) {
			keys, err := ParseKeyFile(pemPublic(t, c.pub))
			if err != nil {
				t.Fatal(err)
			}
			pol, err := NewPolicy(Settings{}, keys, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pol.Authenticate(nil, sign(t, c.m, c.priv, claims(nil), ""), ""); err != nil {
				t.Fatalf("valid token refused: %v", err)
			}
			// The PEM text used as an HMAC secret must not verify (algorithm confusion).
			forged := sign(t, jwt.SigningMethodHS256, pemPublic(t, c.pub), claims(nil), "")
			if _, err := pol.Authenticate(nil, forged, ""); !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("HS256 token signed with the public key: %v", err)
			}
		})
	}
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestAuthJWKS(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ekb, _ := ek.PublicKey.Bytes() // 0x04 || x || y
	set := map[string]any{"keys": []map[string]any{
		{"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": b64u(rk.N.Bytes()), "e": b64u(big.NewInt(int64(rk.E)).Bytes())},
		{"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64u(ekb[1:33]), "y": b64u(ekb[33:])},
		{"kty": "oct", "kid": "h1", "k": b64u(testSecret)},
		{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}, // skipped
	}}
	data, _ := json.Marshal(set)
	keys, err := ParseJWKS(data)
	if err != nil {
		t.Fatal(err)
	}
	if keys.Len() != 3 {
		t.Fatalf("%d keys", keys.Len())
	}
	pol, err := NewPolicy(Settings{}, keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string][]byte{
		"RS256 kid":    sign(t, jwt.SigningMethodRS256, rk, claims(nil), "r1"),
		"ES256 kid":    sign(t, jwt.SigningMethodES256, ek, claims(nil), "e1"),
		"ES256 no kid": sign(t, jwt.SigningMethodES256, ek, claims(nil), ""),
		"HS256 kid":    sign(t, jwt.SigningMethodHS256, testSecret, claims(nil), "h1"),
	} {
		if _, err := pol.Authenticate(nil, tok, ""); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := pol.Authenticate(nil, sign(t, jwt.SigningMethodES256, ek, claims(nil), "r1"), ""); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("ES256 token naming the RSA key's kid: %v", err)
	}
	if _, err := pol.Authenticate(nil, sign(t, jwt.SigningMethodRS384, rk, claims(nil), "r1"), ""); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("RS384 token for a key limited to RS256: %v", err)
	}
}

func TestAuthKeyFileErrors(t *testing.T) {
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(ek)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	cases := map[string]struct {
		data []byte
		want string
	}{
		"private key":   {pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), "private key"},
		"short secret":  {[]byte("secret\n"), "too short"},
		"broken PEM":    {[]byte("-----BEGIN PUBLIC KEY-----\nnope\n"), "PEM"},
		"small RSA key": {pemPublic(t, &small.PublicKey), "1024 bits"},
	}
	for name, c := range cases {
		if _, err := ParseKeyFile(c.data); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one containing %q", name, err, c.want)
		}
	}
	for name, c := range map[string]struct{ data, want string }{
		"not JSON":  {"{", "not a JWKS"},
		"empty":     {`{"keys":[]}`, "no signature key"},
		"bad curve": {`{"keys":[{"kty":"EC","crv":"P-192","x":"AA","y":"AA"}]}`, "unsupported curve"},
		"bad point": {`{"keys":[{"kty":"EC","crv":"P-256","x":"AQ","y":"AQ"}]}`, "invalid EC point"},
		"bad kty":   {`{"keys":[{"kty":"XYZ"}]}`, "unsupported key type"},
	} {
		if _, err := ParseJWKS([]byte(c.data)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("JWKS %s: err = %v, want one containing %q", name, err, c.want)
		}
	}
}

func TestAuthReloadRebinds(t *testing.T) {
	rules := func(pub string) *Rules {
		return &Rules{DefaultRole: "device", Roles: map[string]RoleRules{"device": {Publish: []string{pub}}}}
	}
	keys, _ := ParseKeyFile(testSecret)
	p1, err := NewPolicy(Settings{}, keys, rules("a/{identity}"))
	if err != nil {
		t.Fatal(err)
	}
	a := NewAuthority(p1)
	pr, err := p1.Authenticate(nil, sign(t, jwt.SigningMethodHS256, testSecret, claims(nil), ""), "")
	if err != nil {
		t.Fatal(err)
	}
	if a.Current(pr) != pr || !pr.MayPublish("a/dev1") {
		t.Fatal("first policy")
	}
	p2, _ := NewPolicy(Settings{}, keys, rules("b/{identity}"))
	a.Replace(p2)
	pr2 := a.Current(pr)
	if pr2 == pr || pr2.MayPublish("a/dev1") || !pr2.MayPublish("b/dev1") || pr2.Identity() != "dev1" {
		t.Fatal("a reload must apply the new rules to a connected principal")
	}
	if a.Current(pr2) != pr2 {
		t.Fatal("rebinding must happen once")
	}
}

// Verifying a token is CPU work on the event loop that accepts the CONNECT.
func BenchmarkAuthVerifyHS256(b *testing.B) {
	pol := hmacPolicy(b, Settings{})
	tok := sign(b, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"roles": []string{"device"}}), "")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pol.Authenticate(nil, tok, ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthVerifyES256(b *testing.B) {
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keys, err := ParseKeyFile(pemPublic(b, &ek.PublicKey))
	if err != nil {
		b.Fatal(err)
	}
	pol, _ := NewPolicy(Settings{}, keys, nil)
	tok := sign(b, jwt.SigningMethodES256, ek, claims(map[string]any{"roles": []string{"device"}}), "")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pol.Authenticate(nil, tok, ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthVerifyRS256(b *testing.B) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	keys, err := ParseKeyFile(pemPublic(b, &rk.PublicKey))
	if err != nil {
		b.Fatal(err)
	}
	pol, _ := NewPolicy(Settings{}, keys, nil)
	tok := sign(b, jwt.SigningMethodRS256, rk, claims(nil), "")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pol.Authenticate(nil, tok, ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthMayPublish(b *testing.B) {
	pol, _ := NewPolicy(Settings{Anonymous: true}, nil, &Rules{DefaultRole: "device",
		Roles: map[string]RoleRules{"device": {Publish: []string{"cmd/{identity}/#", "place/{identity}/#"}}}})
	pr := pol.principal("dev-000123", nil, fromDefault)
	b.ReportAllocs()
	for b.Loop() {
		if !pr.MayPublish("place/dev-000123/sensors/temp") {
			b.Fatal("denied")
		}
	}
}
