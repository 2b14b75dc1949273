package server

import "fmt"

// initWS checks that a ws:// or wss:// listener has what WebSocket needs.
func (s *Server) initWS(ls *listenerSpec) error {
	return fmt.Errorf("invalid MQTT listener %q: WebSocket listeners are not supported yet", ls.url)
}

// newWSLayer builds the WebSocket layer of one connection.
func (s *Server) newWSLayer(t *transport, ls *listenerSpec) (layer, error) {
	return nil, fmt.Errorf("listener %q: WebSocket is not supported yet", ls.url)
}
