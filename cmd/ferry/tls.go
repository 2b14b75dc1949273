package main

import (
	"flag"
	"fmt"

	"github.com/ferrymq/ferry/server"
)

// tlsConfig holds the settings of tls:// and wss:// listeners (docs/operations.md, "TLS").
type tlsConfig struct {
	cert, key, clientCA string
	clientAuth          string
	maxHandshakes       int
	keyExchanges        string
}

func addTLSFlags(fs *flag.FlagSet, c *tlsConfig) {
	fs.StringVar(&c.cert, "tls-cert", "", "PEM certificate chain of tls:// and wss:// listeners (reloaded on SIGHUP)")
	fs.StringVar(&c.key, "tls-key", "", "PEM private key of --tls-cert (reloaded on SIGHUP)")
	fs.StringVar(&c.clientCA, "tls-client-ca", "", "PEM CA certificates of client certificates: mutual TLS, the certificate's Common Name is the client's identity (empty = no client certificates; reloaded on SIGHUP)")
	fs.StringVar(&c.clientAuth, "tls-client-auth", server.TLSClientCertRequire, "with --tls-client-ca: require (no connection without a valid client certificate) or verify-if-given (optional, verified when sent)")
	fs.IntVar(&c.maxHandshakes, "tls-max-handshakes", 4096, "TLS handshakes in progress at once; more wait their turn within --connect-timeout (0 = no bound)")
	fs.StringVar(&c.keyExchanges, "tls-key-exchanges", "", "TLS key exchange groups in order of preference, comma separated, e.g. X25519,CurveP256 (empty = Go's default: X25519MLKEM768 first, the hybrid post-quantum group)")
}

func (c *tlsConfig) validate() error {
	switch {
	case (c.cert == "") != (c.key == ""):
		return fmt.Errorf("invalid --tls-cert %q with --tls-key %q: want both or neither", c.cert, c.key)
	case c.clientAuth != server.TLSClientCertRequire && c.clientAuth != server.TLSClientCertVerifyGiven:
		return fmt.Errorf("invalid --tls-client-auth %s: want %s or %s", c.clientAuth, server.TLSClientCertRequire, server.TLSClientCertVerifyGiven)
	case c.maxHandshakes < 0:
		return fmt.Errorf("invalid --tls-max-handshakes %d: want 0 (no bound) or more", c.maxHandshakes)
	}
	if _, err := server.ParseTLSKeyExchanges(c.keyExchanges); err != nil {
		return fmt.Errorf("invalid --tls-key-exchanges %q: %w", c.keyExchanges, err)
	}
	return nil
}

func (c *tlsConfig) serverOpts() []server.Opt {
	groups, _ := server.ParseTLSKeyExchanges(c.keyExchanges) // checked by validate
	return []server.Opt{server.TLSFiles(c.cert, c.key, c.clientCA), server.TLSClientAuth(c.clientAuth),
		server.TLSMaxHandshakes(c.maxHandshakes), server.TLSKeyExchanges(groups)}
}
