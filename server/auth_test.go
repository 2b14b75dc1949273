package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/golang-jwt/jwt/v5"

	"github.com/ferrymq/ferry/server"
	"github.com/ferrymq/ferry/server/auth"
)

// A test-only HMAC secret.
var authSecret = []byte("ferry-auth-test-secret-0123456789abcdef")

var authRules = auth.Rules{
	DefaultRole:   "device",
	AnonymousRole: "guest",
	Roles: map[string]auth.RoleRules{
		"device": {Publish: []string{"place/{identity}/#"}, Subscribe: []string{"place/{identity}/#", "broadcast/#"}},
		"admin":  {Publish: []string{"#"}, Subscribe: []string{"#"}},
		"guest":  {Subscribe: []string{"public/#"}},
	},
}

func authFerry(t *testing.T, s auth.Settings, keys *auth.Keys, rules *auth.Rules) (*ferry, *auth.Authority) {
	t.Helper()
	pol, err := auth.NewPolicy(s, keys, rules)
	if err != nil {
		t.Fatal(err)
	}
	a := auth.NewAuthority(pol)
	return startFerry(t, server.Auth(a)), a
}

func hmacKeys(t *testing.T) *auth.Keys {
	t.Helper()
	k, err := auth.ParseKeyFile(authSecret)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// token signs claims (sub dev1, exp in an hour, iss/aud of the test server, then extra; a nil value removes
// a claim).
func token(t *testing.T, m jwt.SigningMethod, key any, extra map[string]any) string {
	t.Helper()
	c := jwt.MapClaims{"sub": "dev1", "exp": time.Now().Add(time.Hour).Unix(), "iss": "ferry-test", "aud": "mqtt"}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	tok := jwt.NewWithClaims(m, c)
	if kid, ok := extra["kid"].(string); ok {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hs(t *testing.T, extra map[string]any) string {
	return token(t, jwt.SigningMethodHS256, authSecret, extra)
}

// connectAuth connects a v5 client and returns the CONNACK reason code, and the client if it was accepted.
func connectAuth(t *testing.T, addr string, cp *paho.Connect) (byte, *v5) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &v5{msgs: make(chan *paho.Publish, 1000), discons: make(chan *paho.Disconnect, 4)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { c.discons <- d },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp.KeepAlive = 30
	ca, err := c.Connect(ctx, cp)
	if ca == nil {
		conn.Close()
		t.Fatalf("connect %s: no CONNACK: %v", cp.ClientID, err)
	}
	if ca.ReasonCode != 0 {
		conn.Close()
		return ca.ReasonCode, nil
	}
	c.connack = ca
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return 0, c
}

func withPassword(id, tok string) *paho.Connect {
	return &paho.Connect{ClientID: id, CleanStart: true, Password: []byte(tok), PasswordFlag: tok != ""}
}

func mustConnect(t *testing.T, addr string, cp *paho.Connect) *v5 {
	t.Helper()
	code, c := connectAuth(t, addr, cp)
	if code != 0 {
		t.Fatalf("connect %s: CONNACK 0x%02x", cp.ClientID, code)
	}
	return c
}

// connectV3Code connects a v3.1.1 client and returns the CONNACK return code.
func connectV3Code(t *testing.T, addr, id, user, pass string) (byte, mqtt.Client) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetUsername(user).SetPassword(pass)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("v3 connect %s: no answer", id)
	}
	rc := tok.(*mqtt.ConnectToken).ReturnCode()
	if rc == 0 {
		t.Cleanup(func() { c.Disconnect(100) })
	}
	return rc, c
}

// waitCounter waits until get() reaches want.
func waitCounter(t *testing.T, what string, want uint64, get func() uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for get() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", what, get(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dropIndex(reason string) int {
	for i, n := range server.DropReasonNames {
		if n == reason {
			return i
		}
	}
	panic("no drop reason " + reason)
}

func deniedIndex(what string) int {
	for i, n := range server.AuthDeniedNames {
		if n == what {
			return i
		}
	}
	panic("no denial kind " + what)
}

// Tokens are checked at CONNECT: v5 0x86 for a token that does not verify, 0x87 for a missing token or
// identity or a will topic outside the privileges; v3 return codes 4 and 5.
func TestAuthConnect(t *testing.T) {
	f, _ := authFerry(t, auth.Settings{Issuer: "ferry-test", Audience: "mqtt"}, hmacKeys(t), &authRules)
	hour := time.Hour
	cases := []struct {
		name string
		cp   *paho.Connect
		want byte
	}{
		{"valid", withPassword("c-valid", hs(t, nil)), 0},
		{"expired", withPassword("c-exp", hs(t, map[string]any{"exp": time.Now().Add(-hour).Unix()})), 0x86},
		{"not yet valid", withPassword("c-nbf", hs(t, map[string]any{"nbf": time.Now().Add(hour).Unix()})), 0x86},
		{"wrong signature", withPassword("c-sig", token(t, jwt.SigningMethodHS256, []byte("some-other-secret-of-32-bytes-or-more"), nil)), 0x86},
		{"wrong audience", withPassword("c-aud", hs(t, map[string]any{"aud": "other"})), 0x86},
		{"wrong issuer", withPassword("c-iss", hs(t, map[string]any{"iss": "evil"})), 0x86},
		{"not a token", withPassword("c-junk", "hunter2"), 0x86},
		{"missing identity", withPassword("c-sub", hs(t, map[string]any{"sub": nil})), 0x87},
		{"identity with wildcard", withPassword("c-plus", hs(t, map[string]any{"sub": "+"})), 0x87},
		{"no token, anonymous off", withPassword("c-anon", ""), 0x87},
		{"will topic not allowed", func() *paho.Connect {
			cp := withPassword("c-will", hs(t, nil))
			cp.WillMessage = &paho.WillMessage{Topic: "place/dev2/status", Payload: []byte("gone")}
			return cp
		}(), 0x87},
		{"will topic allowed", func() *paho.Connect {
			cp := withPassword("c-will-ok", hs(t, nil))
			cp.WillMessage = &paho.WillMessage{Topic: "place/dev1/status", Payload: []byte("gone")}
			return cp
		}(), 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got, _ := connectAuth(t, f.addr, c.cp); got != c.want {
				t.Fatalf("CONNACK 0x%02x, want 0x%02x", got, c.want)
			}
		})
	}
	t.Run("v3", func(t *testing.T) {
		if rc, _ := connectV3Code(t, f.addr, "v3-ok", "u", hs(t, nil)); rc != 0 {
			t.Fatalf("valid token: return code %d", rc)
		}
		if rc, _ := connectV3Code(t, f.addr, "v3-bad", "u", hs(t, map[string]any{"aud": "other"})); rc != 4 {
			t.Fatalf("wrong audience: return code %d, want 4", rc)
		}
		if rc, _ := connectV3Code(t, f.addr, "v3-anon", "", ""); rc != 5 {
			t.Fatalf("no token: return code %d, want 5", rc)
		}
	})
	snap := f.srv.Metrics().Snapshot()
	if snap.Refused[0x86] < 6 || snap.Refused[0x87] < 4 || snap.AuthDenied[deniedIndex("will")] != 1 {
		t.Fatalf("refusals not counted: %v, denied %v", snap.Refused, snap.AuthDenied)
	}
}

// The token can travel in the user name; anonymous clients get the anonymous role.
func TestAuthUsernameAndAnonymous(t *testing.T) {
	f, _ := authFerry(t, auth.Settings{TokenField: "username", Anonymous: true}, hmacKeys(t), &authRules)
	cp := &paho.Connect{ClientID: "u-tok", CleanStart: true, Username: hs(t, nil), UsernameFlag: true}
	dev := mustConnect(t, f.addr, cp)
	if r := dev.pub(t, &paho.Publish{Topic: "place/dev1/x", QoS: 1, Payload: []byte("x")}); r.ReasonCode != 0 {
		t.Fatalf("device publish: 0x%02x", r.ReasonCode)
	}
	// A token in the password is not looked at in this mode: the client is anonymous.
	anon := mustConnect(t, f.addr, withPassword("u-anon", hs(t, nil)))
	sa, _ := anon.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "public/#", QoS: 1}, {Topic: "place/dev1/#", QoS: 1}}})
	if sa == nil || len(sa.Reasons) != 2 || sa.Reasons[0] != 1 || sa.Reasons[1] != 0x87 {
		t.Fatalf("anonymous SUBACK %+v", sa)
	}
	if r, _ := anon.Publish(context.Background(), &paho.Publish{Topic: "public/x", QoS: 1}); r == nil || r.ReasonCode != 0x87 {
		t.Fatalf("anonymous publish: %+v", r)
	}
}

// Publishes and subscriptions outside the patterns are refused: v5 PUBACK/SUBACK 0x87, QoS 0 dropped and
// counted, v3 QoS 1 acknowledged and dropped, v3 SUBACK 0x80; widening wildcards are refused while an allowed
// filter of the same SUBSCRIBE is granted; a retained message outside the privileges is not delivered.
func TestAuthPublishSubscribe(t *testing.T) {
	f, _ := authFerry(t, auth.Settings{Issuer: "ferry-test", Audience: "mqtt"}, hmacKeys(t), &authRules)
	admin := mustConnect(t, f.addr, withPassword("admin", hs(t, map[string]any{"sub": "ops", "roles": []string{"admin"}})))
	admin.sub(t, paho.SubscribeOptions{Topic: "place/#", QoS: 1})
	// Retained messages: one the device may see, one it may not.
	admin.pub(t, &paho.Publish{Topic: "place/dev1/config", QoS: 1, Retain: true, Payload: []byte("mine")})
	admin.pub(t, &paho.Publish{Topic: "place/dev2/config", QoS: 1, Retain: true, Payload: []byte("theirs")})
	admin.next(t)
	admin.next(t)

	dev := mustConnect(t, f.addr, withPassword("dev1", hs(t, nil)))
	sa, err := dev.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "place/dev1/#", QoS: 1}, {Topic: "#", QoS: 1}, {Topic: "place/+/config", QoS: 1},
		{Topic: "place/#", QoS: 1}, {Topic: "place/dev2/#", QoS: 1}, {Topic: "broadcast/+", QoS: 0}}})
	if sa == nil {
		t.Fatalf("subscribe: %v", err)
	}
	want := []byte{1, 0x87, 0x87, 0x87, 0x87, 0}
	if string(sa.Reasons) != string(want) {
		t.Fatalf("SUBACK % x, want % x", sa.Reasons, want)
	}
	if m := dev.next(t); m.Topic != "place/dev1/config" || !m.Retain {
		t.Fatalf("retained: got %s", m.Topic)
	}
	dev.none(t, 300*time.Millisecond) // place/dev2/config is not delivered

	t.Run("v5 QoS 1 outside", func(t *testing.T) {
		r, _ := dev.Publish(context.Background(), &paho.Publish{Topic: "place/dev2/x", QoS: 1, Payload: []byte("no")})
		if r == nil || r.ReasonCode != 0x87 {
			t.Fatalf("PUBACK %+v, want 0x87", r)
		}
	})
	t.Run("v5 QoS 2 outside", func(t *testing.T) {
		r, _ := dev.Publish(context.Background(), &paho.Publish{Topic: "other", QoS: 2, Payload: []byte("no")})
		if r == nil || r.ReasonCode != 0x87 {
			t.Fatalf("PUBREC %+v, want 0x87", r)
		}
	})
	t.Run("v5 QoS 0 outside", func(t *testing.T) {
		before := f.srv.Metrics().Snapshot().Drops[dropIndex("not_authorized")]
		dev.pub(t, &paho.Publish{Topic: "place/dev2/y", QoS: 0, Payload: []byte("no")})
		waitCounter(t, "not_authorized drops", before+1, func() uint64 {
			return f.srv.Metrics().Snapshot().Drops[dropIndex("not_authorized")]
		})
	})
	t.Run("v5 inside", func(t *testing.T) {
		if r := dev.pub(t, &paho.Publish{Topic: "place/dev1/x", QoS: 1, Payload: []byte("yes")}); r.ReasonCode != 0 {
			t.Fatalf("PUBACK 0x%02x", r.ReasonCode)
		}
		if m := admin.next(t); m.Topic != "place/dev1/x" {
			t.Fatalf("admin got %s: a refused publish reached Kafka", m.Topic)
		}
		dev.next(t) // its own subscription
	})
	t.Run("v5 pipelined", func(t *testing.T) {
		// Refusals queued behind publishes still on their way to Kafka keep their own reason code.
		const n = 60
		codes := make(chan [2]int, n)
		for i := range n {
			go func() {
				topic := "place/dev1/p"
				if i%2 == 1 {
					topic = "place/dev2/p"
				}
				r, _ := dev.Publish(context.Background(), &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("p")})
				code := -1
				if r != nil {
					code = int(r.ReasonCode)
				}
				codes <- [2]int{i, code}
			}()
		}
		for range n {
			c := <-codes
			if want := []int{0, 0x87}[c[0]%2]; c[1] != want {
				t.Errorf("publish %d: reason %d, want %d", c[0], c[1], want)
			}
		}
		for range n / 2 {
			if m := admin.next(t); m.Topic != "place/dev1/p" {
				t.Fatalf("admin got %s", m.Topic)
			}
			dev.next(t)
		}
	})
	t.Run("v3", func(t *testing.T) {
		rc, v3 := connectV3Code(t, f.addr, "dev1-v3", "u", hs(t, nil))
		if rc != 0 {
			t.Fatalf("connect: %d", rc)
		}
		before := f.srv.Metrics().Snapshot().Drops[dropIndex("not_authorized")]
		// [MQTT-3.3.5-2] Ferry acknowledges a refused v3 QoS 1/2 publish positively and drops it.
		for q := byte(1); q <= 2; q++ {
			if tok := v3.Publish("place/dev2/v3", q, false, "no"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("QoS %d publish: %v", q, tok.Error())
			}
		}
		if got := f.srv.Metrics().Snapshot().Drops[dropIndex("not_authorized")]; got != before+2 {
			t.Fatalf("not_authorized drops %d, want %d", got, before+2)
		}
		tok := v3.Subscribe("place/+/v3", 1, nil)
		if !tok.WaitTimeout(5 * time.Second) {
			t.Fatal("no SUBACK")
		}
		if r := tok.(*mqtt.SubscribeToken).Result()["place/+/v3"]; r != 0x80 {
			t.Fatalf("v3 SUBACK 0x%02x, want 0x80", r)
		}
		if tok := v3.Publish("place/dev1/v3", 1, false, "yes"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		if m := admin.next(t); m.Topic != "place/dev1/v3" {
			t.Fatalf("admin got %s: a refused v3 publish reached Kafka", m.Topic)
		}
	})
	admin.none(t, 200*time.Millisecond)
	if d := f.srv.Metrics().Snapshot().AuthDenied; d[deniedIndex("publish")] < 5 || d[deniedIndex("subscribe")] < 5 {
		t.Fatalf("denials not counted: %v", d)
	}
}

// Deliveries are checked against the subscribe privileges of the connection that receives them: a persistent
// session resumed by another identity does not receive what was queued for the first one, and a reload that
// narrows the rules applies to subscriptions granted before it.
func TestAuthDeliveryChecks(t *testing.T) {
	f, a := authFerry(t, auth.Settings{Issuer: "ferry-test", Audience: "mqtt"}, hmacKeys(t), &authRules)
	admin := mustConnect(t, f.addr, withPassword("admin", hs(t, map[string]any{"sub": "ops", "roles": "admin"})))

	t.Run("resumed by another identity", func(t *testing.T) {
		exp := uint32(600)
		cp := withPassword("shared-id", hs(t, nil))
		cp.CleanStart, cp.Properties = true, &paho.ConnectProperties{SessionExpiryInterval: &exp}
		dev := mustConnect(t, f.addr, cp)
		dev.sub(t, paho.SubscribeOptions{Topic: "place/dev1/#", QoS: 1})
		_ = dev.Disconnect(&paho.Disconnect{})
		time.Sleep(200 * time.Millisecond)
		admin.pub(t, &paho.Publish{Topic: "place/dev1/queued", QoS: 1, Payload: []byte("for dev1")})
		time.Sleep(200 * time.Millisecond)
		cp2 := withPassword("shared-id", hs(t, map[string]any{"sub": "dev2"}))
		cp2.CleanStart, cp2.Properties = false, &paho.ConnectProperties{SessionExpiryInterval: &exp}
		dev2 := mustConnect(t, f.addr, cp2)
		if !dev2.connack.SessionPresent {
			t.Fatal("session not resumed")
		}
		dev2.none(t, 500*time.Millisecond)
		if d := f.srv.Metrics().Snapshot().AuthDenied[deniedIndex("delivery")]; d == 0 {
			t.Fatal("delivery denial not counted")
		}
	})

	t.Run("reload narrows", func(t *testing.T) {
		dev := mustConnect(t, f.addr, withPassword("dev1-live", hs(t, nil)))
		dev.sub(t, paho.SubscribeOptions{Topic: "place/dev1/#", QoS: 1})
		narrow := authRules
		narrow.Roles = map[string]auth.RoleRules{
			"device": {Publish: []string{"place/{identity}/#"}, Subscribe: []string{"place/{identity}/cmd/#"}},
			"admin":  authRules.Roles["admin"], "guest": authRules.Roles["guest"],
		}
		pol, err := auth.NewPolicy(auth.Settings{Issuer: "ferry-test", Audience: "mqtt"}, hmacKeys(t), &narrow)
		if err != nil {
			t.Fatal(err)
		}
		a.Replace(pol)
		admin.pub(t, &paho.Publish{Topic: "place/dev1/state", QoS: 1, Payload: []byte("no longer")})
		admin.pub(t, &paho.Publish{Topic: "place/dev1/cmd/reboot", QoS: 1, Payload: []byte("yes")})
		if m := dev.next(t); m.Topic != "place/dev1/cmd/reboot" {
			t.Fatalf("got %s after the reload", m.Topic)
		}
		dev.none(t, 200*time.Millisecond)
	})
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// RS256 and ES256 tokens verify against a JWKS file.
func TestAuthJWKSFile(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ekb, _ := ek.PublicKey.Bytes()
	set, _ := json.Marshal(map[string]any{"keys": []map[string]any{
		{"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "n": b64u(rk.N.Bytes()), "e": b64u(big.NewInt(int64(rk.E)).Bytes())},
		{"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64u(ekb[1:33]), "y": b64u(ekb[33:])},
	}})
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, set, 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.ParseJWKS(data)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := authFerry(t, auth.Settings{Issuer: "ferry-test", Audience: "mqtt"}, keys, &authRules)
	for name, tok := range map[string]string{
		"RS256": token(t, jwt.SigningMethodRS256, rk, map[string]any{"kid": "rsa-1"}),
		"ES256": token(t, jwt.SigningMethodES256, ek, map[string]any{"kid": "ec-1"}),
	} {
		if code, _ := connectAuth(t, f.addr, withPassword("jwks-"+name, tok)); code != 0 {
			t.Errorf("%s: CONNACK 0x%02x", name, code)
		}
	}
	if code, _ := connectAuth(t, f.addr, withPassword("jwks-hs", hs(t, nil))); code != 0x86 {
		t.Errorf("HS256 token against a JWKS without secrets: CONNACK 0x%02x, want 0x86", code)
	}
}
