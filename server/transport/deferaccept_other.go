//go:build !linux

package transport

import "github.com/panjf2000/gnet/v2"

// DeferAccept is Linux's TCP_DEFER_ACCEPT (deferaccept_linux.go); elsewhere every connect wakes its loop
// for the handshake as well as for the CONNECT.
func DeferAccept(gnet.Engine, []string) (int, error) { return 0, nil }
