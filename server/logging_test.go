package server

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/internal/throttle"
)

// A flood of one kind of connection event logs at most eventBurst lines a second; the first line of the next
// second says how many were left out, and other kinds are not affected.
func TestEventLimiter(t *testing.T) {
	e := throttle.Limiter{Window: time.Second, Burst: eventBurst} // as New sets Server.events
	t0 := time.Unix(1000, 0)
	let := 0
	for i := 0; i < 500; i++ {
		if ok, _ := e.AllowAt("client connected", t0.Add(time.Duration(i)*time.Millisecond)); ok {
			let++
		}
	}
	if let != eventBurst {
		t.Fatalf("%d lines let through in one second, want %d", let, eventBurst)
	}
	if ok, _ := e.AllowAt("client disconnected", t0.Add(600*time.Millisecond)); !ok {
		t.Fatal("another kind of event was held back")
	}
	ok, n := e.AllowAt("client connected", t0.Add(1100*time.Millisecond))
	if !ok || n != 500-eventBurst {
		t.Fatalf("next second: allowed %v, suppressed_before %d, want true, %d", ok, n, 500-eventBurst)
	}
}

// LogUnthrottled lets every line of a kind through, debug and warning alike (a fault run's debug log is read
// whole); without it, New limits both.
func TestLogUnthrottled(t *testing.T) {
	mux, off := embeddedOne(t)
	for _, on := range []bool{false, true} {
		var lines countingHandler
		s, err := New(off, mux, Listen("tcp://127.0.0.1:0"), EventLoops(1), Logger(slog.New(&lines)), LogUnthrottled(on))
		if err != nil {
			t.Fatal(err)
		}
		for range 3 * eventBurst {
			s.debug("a connection event")
			s.warn("a warning")
		}
		debugs, warns := lines.n[slog.LevelDebug], lines.n[slog.LevelWarn]
		if on && (debugs != 3*eventBurst || warns != 3*eventBurst) {
			t.Fatalf("unthrottled: %d debug and %d warning lines of %d each logged, want all", debugs, warns, 3*eventBurst)
		}
		if !on && (debugs != eventBurst || warns != 1) {
			t.Fatalf("throttled: %d debug and %d warning lines logged, want %d and 1", debugs, warns, eventBurst)
		}
	}
}

// countingHandler counts the records logged per level, every level enabled.
type countingHandler struct {
	mu sync.Mutex
	n  map[slog.Level]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == nil {
		h.n = map[slog.Level]int{}
	}
	h.n[r.Level]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
