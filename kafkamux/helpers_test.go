package kafkamux

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"
)

// testLogger logs to stderr with -v, nowhere otherwise.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// newMux starts a Mux on an in-memory embedded cluster on a random port.
func newMux(t testing.TB, opts ...Opt) *Mux {
	t.Helper()
	base := []Opt{EmbeddedAddr("127.0.0.1:0"), DataDir(""), Logger(testLogger()), Partitions(3)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := New(ctx, append(base, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(m.Close)
	return m
}

// waitFor polls cond every 5ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
