package server

import "fmt"

// initTLS checks that a tls:// or wss:// listener has what TLS needs.
func (s *Server) initTLS(ls *listenerSpec) error {
	return fmt.Errorf("invalid MQTT listener %q: TLS listeners are not supported yet", ls.url)
}

// newTLSLayer builds the TLS layer of one connection.
func (s *Server) newTLSLayer(t *transport, ls *listenerSpec) (layer, error) {
	return nil, fmt.Errorf("listener %q: TLS is not supported yet", ls.url)
}
