package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrymq/ferry/server"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue makes a leaf certificate (server: for 127.0.0.1; else a client certificate) and returns its PEM
// certificate and key.
func (ca *testCA) issue(t testing.TB, cn string, serial int64, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Ferry tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func (ca *testCA) clientCert(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	c, k := ca.issue(t, cn, 100, false)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// tlsFiles are the PEM files a TLS listener is started with.
type tlsFiles struct{ dir, cert, key, clientCA string }

func writeTLSFiles(t testing.TB, ca *testCA, cn string, serial int64, clientCA *testCA) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	f := tlsFiles{dir: dir, cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem")}
	f.rewrite(t, ca, cn, serial)
	if clientCA != nil {
		f.clientCA = filepath.Join(dir, "client-ca.pem")
		if err := os.WriteFile(f.clientCA, clientCA.pem, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// rewrite replaces the certificate and key files, as a renewal would.
func (f tlsFiles) rewrite(t testing.TB, ca *testCA, cn string, serial int64) {
	t.Helper()
	c, k := ca.issue(t, cn, serial, true)
	if err := os.WriteFile(f.cert, c, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.key, k, 0o600); err != nil {
		t.Fatal(err)
	}
}

// startTLSFerry starts a Ferry with a tls:// listener on the files and returns it with the TLS address.
func startTLSFerry(t testing.TB, f tlsFiles, opts ...server.Opt) (*ferry, string) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	all := append([]server.Opt{server.Listen("tls://" + addr), server.TLSFiles(f.cert, f.key, f.clientCA)}, opts...)
	return startFerry(t, all...), addr
}

// dialTLSV5 connects paho.golang over TLS. paho.golang writes a packet in several Writes (fixed header,
// variable header, payload) and its pinger writes from a goroutine of its own; on a tls.Conn (or any conn
// without writev) a PINGREQ sent right after CONNACK can land inside a SUBSCRIBE, which Ferry rightly refuses
// as malformed (0x81). packets.NewThreadSafeConn makes paho hold a lock over each packet's writes, as its
// ClientConfig.Conn documentation asks for such conns.
func dialTLSV5(addr string, conf *tls.Config, cp *paho.Connect) (*v5, *tls.Conn, error) {
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		return nil, nil, err
	}
	c := &v5{msgs: make(chan *paho.Publish, 1000), discons: make(chan *paho.Disconnect, 4)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(nc), // see above
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
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	c.connack = ca
	return c, nc, nil
}

func mustTLSV5(t testing.TB, addr string, conf *tls.Config, id string) (*v5, *tls.Conn) {
	t.Helper()
	c, nc, err := dialTLSV5(addr, conf, &paho.Connect{ClientID: id, CleanStart: true})
	if err != nil {
		t.Fatalf("connect %s over TLS: %v", id, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
	return c, nc
}

// paho.golang v5 and paho.mqtt.golang v3.1.1 publish and receive over tls://, with TLS 1.2 and 1.3 forced
// by the client.
func TestTLSClients(t *testing.T) {
	ca := newTestCA(t, "test CA")
	f, addr := startTLSFerry(t, writeTLSFiles(t, ca, "ferry", 2, nil))
	for _, v := range []struct {
		name string
		ver  uint16
	}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}} {
		t.Run(v.name, func(t *testing.T) {
			conf := &tls.Config{RootCAs: ca.pool(), MinVersion: v.ver, MaxVersion: v.ver}
			sub, nc := mustTLSV5(t, addr, conf, "v5-sub-"+v.name)
			if got := nc.ConnectionState().Version; got != v.ver {
				t.Fatalf("negotiated %s, want %s", tls.VersionName(got), tls.VersionName(v.ver))
			}
			topic := "tls/" + v.name
			sub.sub(t, paho.SubscribeOptions{Topic: topic + "/#", QoS: 1})

			o := mqtt.NewClientOptions().AddBroker("tls://" + addr).SetClientID("v3-pub-" + v.name).
				SetTLSConfig(conf).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
			v3 := mqtt.NewClient(o)
			if tok := v3.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("paho.mqtt.golang connect over %s: %v", v.name, tok.Error())
			}
			defer v3.Disconnect(100)
			if tok := v3.Publish(topic+"/v3", 1, false, "from v3"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("v3 publish: %v", tok.Error())
			}
			if m := sub.next(t); m.Topic != topic+"/v3" || string(m.Payload) != "from v3" {
				t.Fatalf("got %s %q", m.Topic, m.Payload)
			}
			got := make(chan string, 1)
			v3.Subscribe(topic+"/v5", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }).WaitTimeout(10 * time.Second)
			sub.pub(t, &paho.Publish{Topic: topic + "/v5", QoS: 1, Payload: []byte("from v5")})
			select {
			case p := <-got:
				if p != "from v5" {
					t.Fatalf("v3 got %q", p)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("v3 subscriber got nothing")
			}
		})
	}
	// The plain listener of the same server still speaks plain MQTT.
	dialV5(t, f.addr, &paho.Connect{ClientID: "plain", CleanStart: true})
}

// --tls-key-exchanges orders the server's key exchange groups: a client that offers the hybrid post-quantum
// group and X25519 (Go's client sends a key share for both) gets the server's first choice, and by default
// that is the hybrid one. A client without a group of the list cannot connect; bad lists are refused.
func TestTLSKeyExchanges(t *testing.T) {
	ca := newTestCA(t, "test CA")
	files := writeTLSFiles(t, ca, "ferry", 2, nil)
	classic, err := server.ParseTLSKeyExchanges("X25519, P-256")
	if err != nil {
		t.Fatal(err)
	}
	_, defAddr := startTLSFerry(t, files)
	_, clAddr := startTLSFerry(t, files, server.TLSKeyExchanges(classic))
	conf := &tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS13}
	for _, c := range []struct {
		name, addr string
		want       tls.CurveID
	}{{"default", defAddr, tls.X25519MLKEM768}, {"X25519 first", clAddr, tls.X25519}} {
		_, nc := mustTLSV5(t, c.addr, conf, "kx-"+c.name)
		if got := nc.ConnectionState().CurveID; got != c.want {
			t.Errorf("%s: negotiated %v, want %v", c.name, got, c.want)
		}
	}
	pqOnly := &tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS13, CurvePreferences: []tls.CurveID{tls.X25519MLKEM768}}
	if _, _, err := dialTLSV5(clAddr, pqOnly, &paho.Connect{ClientID: "kx-none", CleanStart: true}); err == nil {
		t.Error("a client with no group of the server's list connected")
	}
	for _, bad := range []string{"X25519,X448", "X25519,x25519"} {
		if _, err := server.ParseTLSKeyExchanges(bad); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseTLSKeyExchanges(%q) = %v, want a one-line error", bad, err)
		}
	}
}

// A TLS record carries at most 16 KiB: a 200 KiB publish crosses many, both ways.
func TestTLSBigMessage(t *testing.T) {
	ca := newTestCA(t, "test CA")
	_, addr := startTLSFerry(t, writeTLSFiles(t, ca, "ferry", 2, nil))
	conf := &tls.Config{RootCAs: ca.pool()}
	sub, _ := mustTLSV5(t, addr, conf, "big-sub")
	sub.sub(t, paho.SubscribeOptions{Topic: "big/#", QoS: 1})
	pub, _ := mustTLSV5(t, addr, conf, "big-pub")
	payload := make([]byte, 200<<10)
	_, _ = rand.Read(payload)
	for i := range 3 {
		pub.pub(t, &paho.Publish{Topic: "big/" + strconv.Itoa(i), QoS: byte(i % 2), Payload: payload})
	}
	for range 3 {
		if m := sub.next(t); !bytes.Equal(m.Payload, payload) {
			t.Fatalf("%s: got %d bytes, not the %d published", m.Topic, len(m.Payload), len(payload))
		}
	}
}

// With client CAs, a valid client certificate connects and its Common Name is the connection's identity; no
// certificate, or one from another CA, gets no MQTT session.
func TestTLSMutual(t *testing.T) {
	ca, clients, other := newTestCA(t, "server CA"), newTestCA(t, "device CA"), newTestCA(t, "rogue CA")
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f, addr := startTLSFerry(t, writeTLSFiles(t, ca, "ferry", 2, clients), server.Logger(log))
	for _, ver := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		name := strings.ReplaceAll(tls.VersionName(ver), " ", "")
		t.Run(name, func(t *testing.T) {
			base := &tls.Config{RootCAs: ca.pool(), MinVersion: ver, MaxVersion: ver}

			good := base.Clone()
			good.Certificates = []tls.Certificate{clients.clientCert(t, "device-"+name)}
			c, _ := mustTLSV5(t, addr, good, "mtls-"+name)
			c.sub(t, paho.SubscribeOptions{Topic: "mtls/" + name, QoS: 1})
			c.pub(t, &paho.Publish{Topic: "mtls/" + name, QoS: 1, Payload: []byte("hi")})
			c.next(t)
			waitLog(t, logs, "client connected", "client=mtls-"+name, "identity=device-"+name)

			before := f.srv.Metrics().Snapshot().TransportErrors
			if _, _, err := dialTLSV5(addr, base, &paho.Connect{ClientID: "no-cert", CleanStart: true}); err == nil {
				t.Fatal("a client without a certificate connected")
			}
			if _, _, err := dialTLSV5(addr, withCert(base, other.clientCert(t, "rogue")), &paho.Connect{ClientID: "rogue", CleanStart: true}); err == nil {
				t.Fatal("a client with a certificate of another CA connected")
			}
			defer func() {
				if t.Failed() {
					t.Log(logs.String())
				}
			}()
			waitFor(t, "2 more transport errors", func() bool { return f.srv.Metrics().Snapshot().TransportErrors >= before+2 })
		})
	}
	if strings.Contains(logs.String(), "client=no-cert") || strings.Contains(logs.String(), "client=rogue") {
		t.Fatal("a refused client reached CONNECT")
	}
}

// verify-if-given: a certificate is optional, but one that cannot be verified is refused.
func TestTLSClientAuthIfGiven(t *testing.T) {
	ca, clients, other := newTestCA(t, "server CA"), newTestCA(t, "device CA"), newTestCA(t, "rogue CA")
	_, addr := startTLSFerry(t, writeTLSFiles(t, ca, "ferry", 2, clients), server.TLSClientAuth(server.TLSClientCertVerifyGiven))
	base := &tls.Config{RootCAs: ca.pool()}
	mustTLSV5(t, addr, base, "anonymous")
	good := base.Clone()
	good.Certificates = []tls.Certificate{clients.clientCert(t, "dev")}
	mustTLSV5(t, addr, good, "with-cert")
	if _, _, err := dialTLSV5(addr, withCert(base, other.clientCert(t, "rogue")), &paho.Connect{ClientID: "rogue", CleanStart: true}); err == nil {
		t.Fatal("a client with a certificate of another CA connected")
	}
}

// withCert makes the client send cert whatever CAs the server names (crypto/tls would otherwise keep back a
// certificate the server's CAs did not sign, and send none).
func withCert(base *tls.Config, cert tls.Certificate) *tls.Config {
	c := base.Clone()
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return c
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ReloadTLS swaps the certificate without touching established connections; a reload that fails keeps the
// certificate in use and names the file.
func TestTLSReload(t *testing.T) {
	ca := newTestCA(t, "test CA")
	files := writeTLSFiles(t, ca, "ferry-1", 11, nil)
	f, addr := startTLSFerry(t, files)
	conf := &tls.Config{RootCAs: ca.pool()}
	old, oldConn := mustTLSV5(t, addr, conf, "before-reload")
	old.sub(t, paho.SubscribeOptions{Topic: "reload/#", QoS: 1})
	if s := oldConn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 11 {
		t.Fatalf("serial %d, want 11", s)
	}

	files.rewrite(t, ca, "ferry-2", 22)
	if err := f.srv.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	old.pub(t, &paho.Publish{Topic: "reload/old", QoS: 1, Payload: []byte("still here")})
	if m := old.next(t); string(m.Payload) != "still here" {
		t.Fatalf("got %q", m.Payload)
	}
	fresh, freshConn := mustTLSV5(t, addr, conf, "after-reload")
	if c := freshConn.ConnectionState().PeerCertificates[0]; c.SerialNumber.Int64() != 22 || c.Subject.CommonName != "ferry-2" {
		t.Fatalf("new connection got %s serial %d, want ferry-2 serial 22", c.Subject.CommonName, c.SerialNumber)
	}
	fresh.pub(t, &paho.Publish{Topic: "reload/new", QoS: 1, Payload: []byte("new cert")})
	if m := old.next(t); string(m.Payload) != "new cert" {
		t.Fatalf("got %q", m.Payload)
	}

	if err := os.WriteFile(files.key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := f.srv.ReloadTLS()
	if err == nil || !strings.Contains(err.Error(), files.key) {
		t.Fatalf("reload with a broken key: err %v, want one naming %s", err, files.key)
	}
	_, again := mustTLSV5(t, addr, conf, "after-failed-reload")
	if s := again.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 22 {
		t.Fatalf("after a failed reload: serial %d, want 22", s)
	}
}

// Bad settings and files are refused by New with one line naming the problem.
func TestTLSConfigErrors(t *testing.T) {
	ca := newTestCA(t, "test CA")
	files := writeTLSFiles(t, ca, "ferry", 2, nil)
	other := writeTLSFiles(t, ca, "other", 3, nil)
	for _, c := range []struct {
		name string
		opts []server.Opt
		want string
	}{
		{"no certificate", nil, "--tls-cert"},
		{"missing file", []server.Opt{server.TLSFiles(files.cert+".missing", files.key, "")}, files.cert + ".missing"},
		{"key of another certificate", []server.Opt{server.TLSFiles(files.cert, other.key, "")}, other.key},
		{"client CA without a certificate", []server.Opt{server.TLSFiles(files.cert, files.key, files.key)}, files.key},
		{"bad client auth", []server.Opt{server.TLSFiles(files.cert, files.key, ""), server.TLSClientAuth("maybe")}, "maybe"},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := append([]server.Opt{server.Listen("tls://127.0.0.1:8883")}, c.opts...)
			err := server.CheckOptions(opts...)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line naming %q", err, c.want)
			}
		})
	}
}

// wss://: the WebSocket layer above TLS, with a v3 client (paho.mqtt.golang's own wss:// support) and a big
// message through both layers.
func TestTLSWebSocket(t *testing.T) {
	ca := newTestCA(t, "test CA")
	files := writeTLSFiles(t, ca, "ferry", 2, nil)
	hp := "127.0.0.1:" + strconv.Itoa(freePort(t))
	f := startFerry(t, server.Listen("wss://"+hp+"/mqtt"), server.TLSFiles(files.cert, files.key, ""))
	conf := &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1"}

	nc, err := mqtt.NewWebsocket("wss://"+hp+"/mqtt", conf, 5*time.Second, nil, nil)
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	c := &v5{msgs: make(chan *paho.Publish, 100), discons: make(chan *paho.Disconnect, 4)}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: packets.NewThreadSafeConn(nc), // see dialTLSV5
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ack, err := c.Connect(ctx, &paho.Connect{ClientID: "wss-v5", CleanStart: true, KeepAlive: 30}); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("connect over wss: %v %v", ack, err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	c.sub(t, paho.SubscribeOptions{Topic: "wss/#", QoS: 1})

	got := make(chan []byte, 4)
	o := mqtt.NewClientOptions().AddBroker("wss://" + hp + "/mqtt").SetClientID("wss-v3").SetTLSConfig(conf).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	v3 := mqtt.NewClient(o)
	if tok := v3.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho.mqtt.golang over wss://: %v", tok.Error())
	}
	defer v3.Disconnect(100)
	v3.Subscribe("wss/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m.Payload() }).WaitTimeout(10 * time.Second)

	big := make([]byte, 200<<10)
	_, _ = rand.Read(big)
	c.pub(t, &paho.Publish{Topic: "wss/big", QoS: 1, Payload: big})
	if m := c.next(t); !bytes.Equal(m.Payload, big) {
		t.Fatalf("v5 got %d bytes", len(m.Payload))
	}
	select {
	case p := <-got:
		if !bytes.Equal(p, big) {
			t.Fatalf("v3 got %d bytes", len(p))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the v3 wss client got nothing")
	}
	if n := f.srv.Metrics().Snapshot().TransportErrors; n != 0 {
		t.Errorf("transport errors: %d, want 0", n)
	}
}
