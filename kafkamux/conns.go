package kafkamux

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// connTracker counts the client's open TCP connections to brokers through
// franz-go's connect/disconnect hooks, and keeps the count within the budget
// of three per broker (produce, fetch, everything else).
//
// franz-go opens up to five connections per broker object (produce, fetch,
// group join/sync, requests with a timeout, everything else) and treats each
// seed address as a broker object of its own. Ferry's long-lived client never
// joins groups and sends no requests with timeouts (New creates topics with a
// short-lived client), which leaves one source of a fourth connection:
// franz-go sends every Nth "any broker" request (metadata, InitProducerID) to
// a seed so it can rebootstrap should all discovered brokers vanish. The seed
// is usually the same broker, reached over a new connection. So while a
// discovered broker has answered within seedParkWindow, the tracker closes a
// new seed connection as soon as it is opened, before any request is written
// on it; franz-go sees a closed connection, which is retryable, and sends the
// request to a discovered broker after firstRetryBackoff. When discovered
// brokers stop answering, seeds are used again.
//
// franz-go may report a connection's disconnect before its connect (a
// connection that fails its initialization is closed, then the deferred
// connect hook runs), so each connection is tracked by identity and a
// disconnect seen first leaves a marker that the connect consumes.
type connTracker struct {
	mu      sync.Mutex
	open    map[net.Conn]string // conn -> broker host:port
	gone    map[net.Conn]struct{}
	parking map[net.Conn]struct{} // seed conns we closed, awaiting their disconnect

	lastGoodRead atomic.Int64 // unix nanoseconds of the last response from a discovered broker
	parked       atomic.Int64 // seed connections closed so far
}

const (
	seedParkWindow    = 10 * time.Second
	firstRetryBackoff = 10 * time.Millisecond
)

var (
	_ kgo.HookBrokerConnect    = (*connTracker)(nil)
	_ kgo.HookBrokerDisconnect = (*connTracker)(nil)
	_ kgo.HookBrokerRead       = (*connTracker)(nil)
)

func newConnTracker() *connTracker {
	return &connTracker{
		open:    make(map[net.Conn]string),
		gone:    make(map[net.Conn]struct{}),
		parking: make(map[net.Conn]struct{}),
	}
}

// OnBrokerConnect runs on a franz-go goroutine.
func (t *connTracker) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, conn net.Conn, err error) {
	if conn == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.gone[conn]; ok {
		delete(t.gone, conn)
		return
	}
	if err != nil {
		return
	}
	if meta.NodeID < 0 && time.Since(time.Unix(0, t.lastGoodRead.Load())) < seedParkWindow {
		t.parking[conn] = struct{}{}
		t.parked.Add(1)
		conn.Close() // not re-entering the client: franz-go sees the error on its next write
		return
	}
	t.open[conn] = net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port)))
}

// OnBrokerDisconnect runs on a franz-go goroutine.
func (t *connTracker) OnBrokerDisconnect(_ kgo.BrokerMetadata, conn net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.open[conn]; ok {
		delete(t.open, conn)
		return
	}
	if _, ok := t.parking[conn]; ok {
		delete(t.parking, conn)
		return
	}
	t.gone[conn] = struct{}{}
}

// OnBrokerRead runs on a franz-go goroutine for every response read.
func (t *connTracker) OnBrokerRead(meta kgo.BrokerMetadata, _ int16, _ int, _, _ time.Duration, err error) {
	if err == nil && meta.NodeID >= 0 {
		t.lastGoodRead.Store(time.Now().UnixNano())
	}
}

func (t *connTracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}

func (t *connTracker) byBroker() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[string]int)
	for _, a := range t.open {
		m[a]++
	}
	return m
}

// retryBackoff is the Java client's default (retry.backoff.ms=100 doubling
// to retry.backoff.max.ms=1000, with jitter) except that the first retry
// waits only firstRetryBackoff, so a request bounced off a parked seed
// connection goes to a discovered broker at once. franz-go's own default
// (250ms doubling to 5s) would let a record outlive RecordDeliveryTimeout
// by up to 5s.
func retryBackoff(fails int) time.Duration {
	const lo, hi = 100 * time.Millisecond, time.Second
	if fails <= 1 {
		return firstRetryBackoff
	}
	d := min(lo<<min(fails-2, 4), hi)
	return d - time.Duration(rand.Int64N(int64(d)/5)) // up to 20% jitter down
}
