package load

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// tlsConfOnce is a worker's client TLS configuration, built on first use.
type tlsConfOnce struct {
	once sync.Once
	conf *tls.Config
	err  error
}

// tlsGroups are the key exchange groups --tls-groups knows, by crypto/tls's names.
var tlsGroups = []tls.CurveID{tls.X25519MLKEM768, tls.SecP256r1MLKEM768, tls.SecP384r1MLKEM1024,
	tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}

// ParseTLSGroups reads a comma-separated list of key exchange groups a client offers, in its order of
// preference (e.g. "X25519,CurveP256", what an OpenSSL 3.0 or mbedTLS device offers); "" = Go's default
// (X25519MLKEM768 first, with a key share for it and one for X25519: a ClientHello of about 1.5 KB).
func ParseTLSGroups(s string) ([]tls.CurveID, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var ids []tls.CurveID
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(tlsGroups, func(id tls.CurveID) bool { return strings.EqualFold(id.String(), name) })
		if i < 0 {
			return nil, fmt.Errorf("invalid --tls-groups: %q is not one of %v", name, tlsGroups)
		}
		ids = append(ids, tlsGroups[i])
	}
	return ids, nil
}

// tlsClient performs a TLS handshake on a dialed connection (tls:// and wss:// targets). Without a CA file
// the server's certificate is not verified: the harness measures, it does not authenticate.
func (w *worker) tlsClient(nc net.Conn) (net.Conn, error) {
	t := &w.tlsConf
	t.once.Do(func() {
		host, _, _ := net.SplitHostPort(w.cfg.Target)
		t.conf = &tls.Config{ServerName: host, InsecureSkipVerify: w.cfg.TLSCA == ""}
		if w.cfg.TLSResume {
			// One cache per worker: every connection after the first offers the newest ticket (crypto/tls
			// keeps a ticket until it fails), so the server's cost is a resumption's, as for a fleet of
			// devices reconnecting with their own tickets.
			t.conf.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		}
		if t.conf.CurvePreferences, t.err = ParseTLSGroups(w.cfg.TLSGroups); t.err != nil {
			return
		}
		if w.cfg.TLSCA != "" {
			pem, err := os.ReadFile(w.cfg.TLSCA)
			if err != nil {
				t.err = fmt.Errorf("cannot read --tls-ca: %w", err)
				return
			}
			t.conf.RootCAs = x509.NewCertPool()
			if !t.conf.RootCAs.AppendCertsFromPEM(pem) {
				t.err = fmt.Errorf("no PEM certificate in %s", w.cfg.TLSCA)
			}
		}
	})
	if t.err != nil {
		return nil, t.err
	}
	tc := tls.Client(nc, t.conf)
	_ = nc.SetDeadline(time.Now().Add(time.Duration(w.cfg.ConnTimeout) * time.Second))
	defer nc.SetDeadline(time.Time{})
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	if tc.ConnectionState().DidResume {
		w.cnt.tlsResumed.Add(1)
	}
	return tc, nil
}
