package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// kills learns when instances were killed without being told: a sentinel connection per instance (Clean
// Start 1, nothing sent) breaks when its instance dies, and is made again once it is back.
type kills struct {
	mu     sync.Mutex
	t0     time.Time
	breaks map[string][]int64 // instance address → when its sentinel connection broke (ns since t0)
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startKills(t0 time.Time, run string, addrs []string) *kills {
	w := &kills{t0: t0, breaks: map[string][]int64{}, stop: make(chan struct{})}
	for i, a := range addrs {
		w.wg.Add(1)
		go func() { defer w.wg.Done(); w.sentinel(fmt.Sprintf("sentinel-%s-%d", run, i), a, w.stop) }()
	}
	return w
}

func (w *kills) close() {
	close(w.stop)
	w.wg.Wait()
}

func (w *kills) now() int64 { return int64(time.Since(w.t0)) }

// near reports whether the sentinel of addr broke between from and to (ns since t0).
func (w *kills) near(addr string, from, to int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range w.breaks[addr] {
		if t >= from && t <= to {
			return true
		}
	}
	return false
}

// sentinel holds a plain connection to addr until stop is closed and records when it breaks.
func (w *kills) sentinel(id, addr string, stop <-chan struct{}) {
	for {
		c, _, err := dialPaho(addr, paho.ClientConfig{}, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
		if err != nil {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		select {
		case <-stop:
			_ = c.Disconnect(&paho.Disconnect{})
			return
		case <-c.Done():
			w.mu.Lock()
			w.breaks[addr] = append(w.breaks[addr], w.now())
			w.mu.Unlock()
		}
	}
}
