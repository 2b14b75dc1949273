package kafkamux

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoLogger forwards franz-go's warnings and errors to slog. franz-go's info
// and debug output is per request and too chatty for an operator.
//
// The transactional client's logger also counts, in silentAborts, the info line franz-go writes when it
// turns a commit into an abort without telling the caller (txn.go): for that it asks franz-go for info
// lines, and drops them as before.
type kgoLogger struct {
	l            *slog.Logger
	silentAborts *atomic.Uint64 // nil but on the transactional client
}

// kgoSilentAbort starts the info line franz-go v1.22 logs when EndTransaction(TryCommit) finds no partition
// marked as added to the transaction although records were produced in it: it then sends EndTxn(abort) and
// returns nil (txn.go).
const kgoSilentAbort = "no produce succeeded in this transaction but produces were attempted"

func (k kgoLogger) Level() kgo.LogLevel {
	switch {
	case k.l.Enabled(context.Background(), slog.LevelDebug-4):
		return kgo.LogLevelDebug
	case k.silentAborts != nil:
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelWarn
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if level == kgo.LogLevelInfo && k.silentAborts != nil {
		if strings.HasPrefix(msg, kgoSilentAbort) {
			k.silentAborts.Add(1)
		}
		if !k.l.Enabled(context.Background(), slog.LevelDebug-4) {
			return // asked for the line above only
		}
	}
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
