package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
)

// Keys are the keys tokens are verified with: from a key file (one PEM public key, or an HMAC secret) and/or
// a JWKS file. Read-only once built.
//
// A JWKS file is parsed here with the standard library (RSA modulus and exponent, EC points, octet secrets
// from base64url) rather than with a JWK library: it is about a hundred lines, and the JWK libraries for Go
// either pull in a large dependency tree (lestrrat-go/jwx) or bring HTTP fetching and refresh goroutines
// (MicahParks/keyfunc) that Ferry does not want: keys are files, reloaded on SIGHUP.
type Keys struct {
	keys []key
}

type key struct {
	kid  string   // JWKS "kid"; "" for a key file
	algs []string // JWS algorithms the key may verify
	pub  any      // []byte (HMAC), *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// minHMACBytes is the shortest HMAC secret accepted: RFC 7518 section 3.2 wants a key at least as long as
// the hash output (32 bytes for HS256).
const minHMACBytes = 32

// minRSABits is the smallest RSA modulus accepted.
const minRSABits = 2048

// Len returns the number of keys.
func (k *Keys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// Merge returns the keys of k and o together.
func (k *Keys) Merge(o *Keys) *Keys {
	out := &Keys{}
	if k != nil {
		out.keys = append(out.keys, k.keys...)
	}
	if o != nil {
		out.keys = append(out.keys, o.keys...)
	}
	return out
}

// ParseKeyFile reads a key file: a PEM public key ("PUBLIC KEY": RSA, ECDSA P-256/384/521 or Ed25519; "RSA
// PUBLIC KEY"; or a "CERTIFICATE", whose public key is used), or else an HMAC secret: the file's bytes,
// trailing white space removed, at least 32 of them. A private key is refused: Ferry only verifies.
func ParseKeyFile(data []byte) (*Keys, error) {
	trimmed := bytes.TrimSpace(data)
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		secret := bytes.TrimRight(data, " \t\r\n")
		if len(secret) < minHMACBytes {
			return nil, fmt.Errorf("not a PEM key, and too short for an HMAC secret (%d bytes, want at least %d)", len(secret), minHMACBytes)
		}
		return &Keys{keys: []key{{algs: []string{"HS256", "HS384", "HS512"}, pub: bytes.Clone(secret)}}}, nil
	}
	block, rest := pem.Decode(trimmed)
	if block == nil {
		return nil, errors.New("cannot decode the PEM block")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("more than one PEM block: give one public key (use a JWKS file for several)")
	}
	var pub any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
		return nil, fmt.Errorf("holds a private key (%s): give Ferry the public key only", block.Type)
	default:
		return nil, fmt.Errorf("PEM block %q is not a public key or certificate", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot parse the %s: %w", block.Type, err)
	}
	k, err := publicKey("", "", pub)
	if err != nil {
		return nil, err
	}
	return &Keys{keys: []key{k}}, nil
}

// publicKey checks an asymmetric key and lists the algorithms it verifies; alg, if set (JWKS "alg"),
// narrows them to that one.
func publicKey(kid, alg string, pub any) (key, error) {
	var algs []string
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() < minRSABits {
			return key{}, fmt.Errorf("RSA key of %d bits: want at least %d", p.N.BitLen(), minRSABits)
		}
		algs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	case *ecdsa.PublicKey:
		switch p.Curve {
		case elliptic.P256():
			algs = []string{"ES256"}
		case elliptic.P384():
			algs = []string{"ES384"}
		case elliptic.P521():
			algs = []string{"ES512"}
		default:
			return key{}, errors.New("ECDSA key on an unsupported curve (want P-256, P-384 or P-521)")
		}
	case ed25519.PublicKey:
		algs = []string{"EdDSA"}
	default:
		return key{}, fmt.Errorf("unsupported public key type %T", pub)
	}
	if alg != "" {
		if !slices.Contains(algs, alg) {
			return key{}, fmt.Errorf("key %q: alg %s does not fit its key type", kid, alg)
		}
		algs = []string{alg}
	}
	return key{kid: kid, algs: algs, pub: pub}, nil
}

// jwk is one entry of a JWKS file (RFC 7517, 7518).
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	K   string `json:"k"`
}

// ParseJWKS reads a JSON Web Key Set: {"keys": [...]} with RSA, EC (P-256/384/521), OKP (Ed25519) and oct
// (HMAC) keys. Keys marked "use": "enc" are skipped; a key Ferry cannot use is an error naming it, so a typo
// does not silently disable a key; a set without any usable key is an error.
func ParseJWKS(data []byte) (*Keys, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS JSON document: %w", err)
	}
	out := &Keys{}
	for i, j := range set.Keys {
		if j.Use == "enc" {
			continue
		}
		k, err := j.key()
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, j.Kid, err)
		}
		out.keys = append(out.keys, k)
	}
	if len(out.keys) == 0 {
		return nil, errors.New("no signature key in the set")
	}
	return out, nil
}

func b64(name, s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("missing %q", name)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not base64url: %w", name, err)
	}
	return b, nil
}

func (j *jwk) key() (key, error) {
	switch j.Kty {
	case "RSA":
		n, err := b64("n", j.N)
		if err != nil {
			return key{}, err
		}
		e, err := b64("e", j.E)
		if err != nil {
			return key{}, err
		}
		eb := new(big.Int).SetBytes(e)
		if !eb.IsInt64() || eb.Int64() < 3 || eb.Int64() > 1<<31-1 {
			return key{}, errors.New("RSA exponent out of range")
		}
		return publicKey(j.Kid, j.Alg, &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(eb.Int64())})
	case "EC":
		var curve elliptic.Curve
		switch j.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return key{}, fmt.Errorf("unsupported curve %q", j.Crv)
		}
		x, err := b64("x", j.X)
		if err != nil {
			return key{}, err
		}
		y, err := b64("y", j.Y)
		if err != nil {
			return key{}, err
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(x) > size || len(y) > size {
			return key{}, errors.New("EC coordinates longer than the curve's")
		}
		pt := make([]byte, 1+2*size)
		pt[0] = 4 // uncompressed point
		copy(pt[1+size-len(x):], x)
		copy(pt[1+2*size-len(y):], y)
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, pt)
		if err != nil {
			return key{}, fmt.Errorf("invalid EC point: %w", err)
		}
		return publicKey(j.Kid, j.Alg, pub)
	case "OKP":
		if j.Crv != "Ed25519" {
			return key{}, fmt.Errorf("unsupported OKP curve %q", j.Crv)
		}
		x, err := b64("x", j.X)
		if err != nil {
			return key{}, err
		}
		if len(x) != ed25519.PublicKeySize {
			return key{}, errors.New("Ed25519 key of the wrong size")
		}
		return publicKey(j.Kid, j.Alg, ed25519.PublicKey(x))
	case "oct":
		k, err := b64("k", j.K)
		if err != nil {
			return key{}, err
		}
		if len(k) < minHMACBytes {
			return key{}, fmt.Errorf("HMAC secret of %d bytes: want at least %d", len(k), minHMACBytes)
		}
		algs := []string{"HS256", "HS384", "HS512"}
		if j.Alg != "" {
			if !slices.Contains(algs, j.Alg) {
				return key{}, fmt.Errorf("alg %s does not fit an oct key", j.Alg)
			}
			algs = []string{j.Alg}
		}
		return key{kid: j.Kid, algs: algs, pub: k}, nil
	default:
		return key{}, fmt.Errorf("unsupported key type %q", j.Kty)
	}
}

// algorithms lists every algorithm some key verifies: the parser refuses any other (no "none", no HS256
// signed with an RSA public key as the secret).
func (k *Keys) algorithms() []string {
	var out []string
	for _, key := range k.keys {
		for _, a := range key.algs {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}
