//go:build !linux

package sink

import (
	"errors"
	"sync/atomic"
)

// Server is the sink; it runs on Linux only (sink.go).
type Server struct{ Dropped atomic.Int64 }

// Listen fails: the sink's event loops use epoll.
func Listen(string) (*Server, error) { return nil, errors.New("the sink runs on Linux only") }

// Addr is the listening address.
func (s *Server) Addr() string { return "" }

// Close stops accepting.
func (s *Server) Close() error { return nil }
