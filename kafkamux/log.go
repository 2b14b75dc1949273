package kafkamux

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoLogger forwards franz-go's warnings and errors to slog. franz-go's info
// and debug output is per request and too chatty for an operator.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel {
	if k.l.Enabled(context.Background(), slog.LevelDebug-4) {
		return kgo.LogLevelDebug
	}
	return kgo.LogLevelWarn
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelDebug
	switch level {
	case kgo.LogLevelError:
		lvl = slog.LevelError
	case kgo.LogLevelWarn:
		lvl = slog.LevelWarn
	case kgo.LogLevelInfo:
		lvl = slog.LevelInfo
	}
	k.l.Log(context.Background(), lvl, "kafka: "+msg, keyvals...)
}

// RateLimiter lets a warning of one kind through at most once per interval
// and counts what it held back, so failures that repeat per record or per
// client are logged without flooding. The zero value is not usable; use
// [NewRateLimiter].
type RateLimiter struct{ rateLimiter }

// NewRateLimiter returns a limiter allowing one event per kind per interval.
func NewRateLimiter(interval time.Duration) *RateLimiter {
	r := &RateLimiter{}
	r.init(interval)
	return r
}

// Allow reports whether an event of kind may be logged now and how many
// events of that kind were suppressed since the last one allowed. Safe for
// concurrent use; never blocks for long.
func (r *RateLimiter) Allow(kind string) (ok bool, suppressed int64) { return r.allow(kind) }

type rateLimiter struct {
	mu       sync.Mutex
	interval time.Duration
	kinds    map[string]*rlKind
}

type rlKind struct {
	last       time.Time
	suppressed int64
}

func (r *rateLimiter) init(interval time.Duration) {
	r.interval = interval
	r.kinds = make(map[string]*rlKind)
}

func (r *rateLimiter) allow(kind string) (bool, int64) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.kinds[kind]
	if k == nil {
		if len(r.kinds) > 1024 { // kinds come from error texts: bound the map
			clear(r.kinds)
		}
		k = &rlKind{}
		r.kinds[kind] = k
	} else if now.Sub(k.last) < r.interval {
		k.suppressed++
		return false, 0
	}
	k.last = now
	s := k.suppressed
	k.suppressed = 0
	return true, s
}

// kfakeLogger forwards the embedded cluster's errors and warnings to slog; a failed write for want of space
// goes to storage instead, which logs it once.
type kfakeLogger struct {
	l       *slog.Logger
	storage *storage // nil: none
}

func (k kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	if level <= kfake.LogLevelWarn && k.storage != nil && k.storage.noSpace(args) {
		return
	}
	var lvl slog.Level
	switch level {
	case kfake.LogLevelError:
		lvl = slog.LevelError
	case kfake.LogLevelWarn:
		lvl = slog.LevelWarn
	default:
		return // per request: too chatty
	}
	if k.l.Enabled(context.Background(), lvl) {
		k.l.Log(context.Background(), lvl, "embedded kafka: "+fmt.Sprintf(format, args...))
	}
}
