package transport

import (
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Listening sockets: which listener accepted a connection, and whether the loops may share a port.

// Listeners tells which of the configured listeners accepted a connection, from the connection's local
// address. Read-only once built: safe for concurrent use.
type Listeners struct {
	addrs []listenAddr // by the index of the listener in the configuration
}

type listenAddr struct {
	ips  []net.IP // the addresses it listens on; none: any address (0.0.0.0, ::)
	port int
}

// NewListeners resolves the addresses of listeners (as configured, e.g. tcp://0.0.0.0:1883): a host name
// stands for the addresses it resolves to now, which are the ones its listener is bound to.
func NewListeners(listeners []string) *Listeners {
	ls := &Listeners{addrs: make([]listenAddr, len(listeners))}
	for i, l := range listeners {
		la := &ls.addrs[i]
		if u, err := url.Parse(l); err == nil {
			host, port, _ := net.SplitHostPort(u.Host)
			la.port, _ = strconv.Atoi(port)
			if ip := net.ParseIP(host); ip != nil {
				if !ip.IsUnspecified() {
					la.ips = []net.IP{ip}
				}
			} else if host != "" {
				la.ips, _ = net.LookupIP(host) // a host name: the addresses the listener is bound to
			}
		}
	}
	return ls
}

// Of returns the index of the listener that accepted a connection, from gnet's local address (the
// listener's own address): a listener bound to that very address first, then one bound to any address on the
// port. The server builds the connection's transport from it, so it must be exact: the server's options
// refuse what could not be told apart (port 0 or more than 256 listeners, when there are several). With one
// listener it is 0.
func (ls *Listeners) Of(local net.Addr) int {
	if len(ls.addrs) < 2 {
		return 0
	}
	a, ok := local.(*net.TCPAddr)
	if !ok {
		return 0
	}
	any := -1
	for i := range ls.addrs {
		l := &ls.addrs[i]
		if l.port != a.Port {
			continue
		}
		if len(l.ips) == 0 {
			if any < 0 {
				any = i
			}
			continue
		}
		for _, ip := range l.ips {
			if ip.Equal(a.IP) {
				return i
			}
		}
	}
	return max(any, 0)
}

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

// ExclusiveReusePort reports whether the loops may listen with SO_REUSEPORT on addrs (tcp://host:port), or
// the error that says an address is taken. Runs once, before the loops start.
func ExclusiveReusePort(addrs []string) (bool, error) {
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
