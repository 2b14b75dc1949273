// Package throttle is Ferry's one log throttle: a line that can repeat per client, per packet or per Kafka
// record goes through at most Burst times per Window for its kind, and the first line let through after some
// were held back says how many. The server's connection events (1 s, 50 lines), its warnings (10 s, 1),
// kafkamux's reader and consumer-group warnings and offload's produce failures (1 min, 1) all use it.
package throttle

import (
	"sync"
	"time"
)

// maxKinds bounds the kinds remembered: some kinds come from error texts. Past it the table starts afresh.
const maxKinds = 1024

// Limiter counts lines per kind in fixed windows: a window opens with the first line let through after the
// previous one closed. The zero Limiter lets every line through; set Window (and Burst) before first use.
// Safe for concurrent use; holds its mutex only for a map lookup.
type Limiter struct {
	Window time.Duration // length of a window; 0 = no limit
	Burst  int           // lines of one kind let through per window; 0 counts as 1

	mu    sync.Mutex
	kinds map[string]*window
}

type window struct {
	start      time.Time
	n          int   // lines let through in the window
	suppressed int64 // lines held back since the last one let through
}

// Allow reports whether a line of kind may be logged now, and how many lines of that kind were held back
// since the last one let through.
func (l *Limiter) Allow(kind string) (ok bool, suppressed int64) { return l.AllowAt(kind, time.Now()) }

// AllowAt is Allow at time now.
func (l *Limiter) AllowAt(kind string, now time.Time) (ok bool, suppressed int64) {
	burst := max(l.Burst, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.kinds[kind]
	if w == nil {
		if l.kinds == nil || len(l.kinds) >= maxKinds {
			l.kinds = make(map[string]*window)
		}
		w = &window{start: now}
		l.kinds[kind] = w
	} else if now.Sub(w.start) >= l.Window {
		w.start, w.n = now, 0
	}
	if w.n >= burst {
		w.suppressed++
		return false, 0
	}
	w.n++
	suppressed, w.suppressed = w.suppressed, 0
	return true, suppressed
}
