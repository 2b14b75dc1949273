package server

import (
	"net"
	"strings"
)

// Each event loop accepts on its own listening socket (SO_REUSEPORT; the kernel spreads new connections over
// them by their addresses) instead of one extra loop accepting for all and handing every new connection over
// through an eventfd write and a wake-up of the loop that gets it. A connect then costs the loop that serves
// it an accept4, and no thread of the process a hand-over (issue 18: in a connect storm the hand-over was
// about a fifth of the server's CPU beside the accept, read and write the connection needs anyway).
//
// SO_REUSEPORT lets a second process of the same user bind the same port and take half of its connections.
// So that a second Ferry started by mistake on a busy port still fails with "address already in use", each
// address is first bound once without SO_REUSEPORT (which fails while any socket holds it) and released
// before the loops bind it. A listener on port 0 would give each loop another port: with one, every
// listener is served by the one accepting loop as before.

// exclusiveReusePort reports whether the loops may listen with SO_REUSEPORT on addrs (tcp://host:port), or
// the error that says an address is taken. Runs once, before the loops start.
func exclusiveReusePort(addrs []string) (bool, error) {
	for _, a := range addrs {
		if strings.HasSuffix(a, ":0") {
			return false, nil
		}
	}
	for _, a := range addrs {
		network, hostport, _ := strings.Cut(a, "://")
		ln, err := net.Listen(network, hostport)
		if err != nil {
			return false, err
		}
		_ = ln.Close()
	}
	return true, nil
}
