package main

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/perf/internal/load"
	"github.com/ferrymq/ferry/perf/internal/report"
)

// monitor samples the workers' counters every second into a time series and
// prints a progress line on stderr every o.progress.
type monitor struct {
	o     *options
	coord *load.Coordinator
	kafka *atomic.Int64 // set by kafka-ingest before the load phase

	mu    sync.Mutex
	phase string
	pts   []report.Point

	quit chan struct{}
	once sync.Once
	done chan struct{}
}

func startMonitor(o *options, c *load.Coordinator) *monitor {
	m := &monitor{o: o, coord: c, quit: make(chan struct{}), done: make(chan struct{}), phase: "start"}
	go m.loop()
	return m
}

func (m *monitor) setKafka(c *atomic.Int64) {
	m.mu.Lock()
	m.kafka = c
	m.mu.Unlock()
}

func (m *monitor) setPhase(p string) {
	m.mu.Lock()
	m.phase = p
	m.mu.Unlock()
}

func (m *monitor) stop() {
	m.once.Do(func() { close(m.quit); <-m.done })
}

func (m *monitor) series() []report.Point {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]report.Point(nil), m.pts...)
}

func (m *monitor) loop() {
	defer close(m.done)
	t0 := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var prev load.Counters
	var prevK int64
	lastPrint := t0
	var printBase load.Counters
	var printBaseK int64
	for {
		select {
		case <-m.quit:
			return
		case <-tick.C:
		}
		cur := m.coord.Totals()
		var k int64
		m.mu.Lock()
		kc := m.kafka
		m.mu.Unlock()
		if kc != nil {
			k = kc.Load()
		}
		d := cur.Sub(prev)
		m.mu.Lock()
		m.pts = append(m.pts, report.Point{
			T: time.Since(t0).Seconds(), Conns: float64(cur.ConnOK),
			Published: float64(d.Published), Acked: float64(d.Acked), Delivered: float64(d.Delivered),
			Kafka: float64(k - prevK),
		})
		phase := m.phase
		m.mu.Unlock()
		prev, prevK = cur, k
		if m.o.progress > 0 && time.Since(lastPrint) >= m.o.progress {
			sec := time.Since(lastPrint).Seconds()
			p := cur.Sub(printBase)
			line := fmt.Sprintf("[%5.0fs %-9s] conns %d (+%.0f/s, %d failed, %d dropped)", time.Since(t0).Seconds(), phase,
				cur.ConnOK, float64(p.ConnOK)/sec, cur.ConnFail, cur.Disconnected)
			if cur.SubOK > 0 {
				line += fmt.Sprintf(" subs %d", cur.SubOK)
			}
			if cur.Published > 0 {
				line += fmt.Sprintf(" | pub %.0f/s ack %.0f/s deliv %.0f/s", float64(p.Published)/sec,
					float64(p.Acked)/sec, float64(p.Delivered)/sec)
			}
			if kc != nil {
				line += fmt.Sprintf(" kafka %.0f/s", float64(k-printBaseK)/sec)
			}
			if cur.Pings > 0 {
				line += fmt.Sprintf(" | pings %d pongs %d", cur.Pings, cur.Pongs)
			}
			fmt.Fprintln(os.Stderr, line)
			lastPrint, printBase, printBaseK = time.Now(), cur, k
		}
	}
}
