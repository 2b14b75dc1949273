package kafkamux

import (
	"context"
	"fmt"
	"log/slog"

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
