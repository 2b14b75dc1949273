package load

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// tlsConfOnce is a worker's client TLS configuration, built on first use.
type tlsConfOnce struct {
	once sync.Once
	conf *tls.Config
	err  error
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
