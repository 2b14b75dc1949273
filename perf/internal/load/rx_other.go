//go:build !linux

package load

import "errors"

// The epoll receiver exists on Linux only (rx_linux.go).

type rawConn struct{ fd int }

func (r *rawConn) write([]byte) error { return errors.New("epoll receiver: Linux only") }
func (r *rawConn) shutdown()          {}

type rxLoop struct{}

func newRxLoop(*worker) (*rxLoop, error) { return nil, errors.New("--sub-rx epoll: Linux only") }
func (l *rxLoop) take(*client) error     { return errors.New("epoll receiver: Linux only") }
