package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/auth"
)

// User name / password clients without JWT: bcrypt hashes in a password file, roles from the rules file (deny
// rules included), in MQTT 5 and 3.1.1; a wrong password is refused (0x86 / return code 4); packets pipelined
// behind a CONNECT wait for its password check.
func TestAuthPasswords(t *testing.T) {
	h, err := auth.HashPassword([]byte("op-pass"), 4) // the lowest cost: tests, not security
	if err != nil {
		t.Fatal(err)
	}
	users, err := auth.ParsePasswordFile([]byte("op:" + string(h) + ":operator\ndev1:" + string(h) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	rules := auth.Rules{DefaultRole: "device", Roles: map[string]auth.RoleRules{
		"device":   {Publish: []string{"place/{identity}/#"}, Subscribe: []string{"place/{identity}/#"}},
		"operator": {Publish: []string{"#"}, Subscribe: []string{"#"}, DenySubscribe: []string{"ops/internal/#"}},
	}}
	f, _ := authFerry(t, auth.Settings{Users: users}, nil, &rules)
	login := func(id, user, pass string) *paho.Connect {
		return &paho.Connect{ClientID: id, CleanStart: true, Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true}
	}
	t.Run("v5-good-password-roles-and-deny", func(t *testing.T) {
		op := mustConnect(t, f.addr, login("pw-op", "op", "op-pass"))
		sa, _ := op.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
			{Topic: "place/#", QoS: 1}, {Topic: "ops/internal/#", QoS: 1}}})
		if sa == nil {
			t.Fatal("no SUBACK")
		}
		if want := []byte{1, 0x87}; string(sa.Reasons) != string(want) {
			t.Fatalf("SUBACK % x, want % x", sa.Reasons, want)
		}
		dev := mustConnect(t, f.addr, login("pw-dev", "dev1", "op-pass")) // default role, identity dev1
		if r, _ := dev.Publish(context.Background(), &paho.Publish{Topic: "place/dev2/x", QoS: 1, Payload: []byte("no")}); r == nil || r.ReasonCode != 0x87 {
			t.Fatalf("PUBACK %+v, want 0x87", r)
		}
		dev.pub(t, &paho.Publish{Topic: "place/dev1/x", QoS: 1, Payload: []byte("yes")})
		if m := op.next(t); m.Topic != "place/dev1/x" {
			t.Fatalf("got %s", m.Topic)
		}
	})
	t.Run("MQTT-3.1.4-2/v5-wrong-password-0x86", func(t *testing.T) {
		if code, _ := connectAuth(t, f.addr, login("pw-bad", "op", "wrong")); code != 0x86 {
			t.Fatalf("CONNACK 0x%02x, want 0x86", code)
		}
		if code, _ := connectAuth(t, f.addr, login("pw-nouser", "nobody", "op-pass")); code != 0x86 && code != 0x87 {
			t.Fatalf("unknown user, no token: CONNACK 0x%02x, want a refusal", code)
		}
	})
	t.Run("v311-good-and-wrong-password-rc4", func(t *testing.T) {
		if rc, _ := connectV3Code(t, f.addr, "pw-v3", "op", "op-pass"); rc != 0 {
			t.Fatalf("v3 good password: return code %d", rc)
		}
		if rc, _ := connectV3Code(t, f.addr, "pw-v3-bad", "op", "nope"); rc != 4 {
			t.Fatalf("v3 wrong password: return code %d, want 4", rc)
		}
	})
	t.Run("pipelined-behind-connect", func(t *testing.T) {
		r := dialRaw(t, f.addr)
		cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: mqttcodec.Version5, CleanStart: true, KeepAlive: 30,
			ClientID: []byte("pw-pipe"), UsernameFlag: true, Username: []byte("dev1"), PasswordFlag: true, Password: []byte("op-pass")}
		r.send(append(mqttcodec.AppendConnect(nil, &cp), publishBytes(mqttcodec.Version5, "place/dev1/pipe", 1, 7)...))
		if fh, _ := r.packet(); fh.Type != mqttcodec.CONNACK {
			t.Fatalf("got %s first, want CONNACK", mqttcodec.TypeName(fh.Type))
		}
		if fh, _ := r.packet(); fh.Type != mqttcodec.PUBACK {
			t.Fatalf("got %s, want the PUBACK of the PUBLISH sent behind the CONNECT", mqttcodec.TypeName(fh.Type))
		}
	})
	t.Run("many-at-once", func(t *testing.T) {
		// The checks run off the event loops on a bounded pool; every client gets its answer.
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pass := "op-pass"
				if i%4 == 0 {
					pass = "bad"
				}
				code, c := connectAuth(t, f.addr, login(fmt.Sprintf("pw-many-%d", i), "op", pass))
				if (pass == "bad") != (code == 0x86) || (code == 0) != (c != nil) {
					errs <- fmt.Errorf("client %d (password %s): CONNACK 0x%02x", i, pass, code)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}
