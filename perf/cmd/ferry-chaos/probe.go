package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferrymq/ferry/perf/internal/stats"
	"github.com/ferrymq/ferry/perf/internal/wire"
)

// probe publishes a QoS 1 message to its own topic every --every and records the round trip publish →
// receive (through Kafka), one line "sent_unix_ms rtt_us" per probe (rtt -1: not answered within --timeout,
// or not sent because the connection was down), until SIGTERM or --max.
func probe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	target := fs.String("target", "127.0.0.1:1883", "MQTT address")
	out := fs.String("out", "probe.txt", "samples file")
	every := fs.Duration("every", 10*time.Millisecond, "probe interval")
	timeout := fs.Duration("timeout", 10*time.Second, "a probe not back within this is lost")
	maxDur := fs.Duration("max", time.Hour, "stop after this long")
	src := fs.String("src", "127.0.9.1", "source address")
	_ = fs.Parse(args)
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	var mu sync.Mutex // w, pending
	pending := map[uint64]int64{}
	topic := fmt.Sprintf("probe/%d", os.Getpid())
	emit := func(sent, rtt int64) {
		if rtt >= 0 {
			rtt /= 1000
		}
		fmt.Fprintf(w, "%d %d\n", sent/1e6, rtt)
	}
	sub := newSub(subCfg{target: *target, src: *src, cid: fmt.Sprintf("probe-%d", os.Getpid()), filters: []string{topic}, qos: 1, clean: true,
		keepAlive: 30, reconnect: true}, func(m message) {
		s, ok := stampOf(m.payload)
		if !ok {
			return
		}
		mu.Lock()
		if sent, ok := pending[s.Seq]; ok {
			delete(pending, s.Seq)
			emit(sent, m.at-sent)
		}
		mu.Unlock()
	})
	// The probe publishes on the subscriber's own connection, so one socket does both.
	subStop := make(chan struct{})
	var cur struct {
		sync.Mutex
		m *mconn
	}
	sub.onConn = func(m *mconn) { cur.Lock(); cur.m = m; cur.Unlock() }
	go sub.run(subStop)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	t := time.NewTicker(*every)
	flush := time.NewTicker(time.Second)
	end := time.After(*maxDur)
	var seq uint64
	payload := make([]byte, 64)
	for {
		select {
		case <-t.C:
			now := stats.NowNs()
			seq++
			cur.Lock()
			m := cur.m
			cur.Unlock()
			mu.Lock()
			if m == nil || m.closed.Load() || !isReady(sub) {
				emit(now, -1)
				mu.Unlock()
				continue
			}
			pending[seq] = now
			mu.Unlock()
			stats.PutStamp(payload, stats.Stamp{SentNs: now, Seq: seq})
			_ = m.write(wire.AppendPublish(nil, topic, 1, false, false, uint16(seq%65535)+1, payload))
		case <-flush.C:
			now := stats.NowNs()
			mu.Lock()
			for s, sent := range pending {
				if now-sent > int64(*timeout) {
					delete(pending, s)
					emit(sent, -1)
				}
			}
			_ = w.Flush()
			mu.Unlock()
		case <-sig:
			return probeClose(&mu, w, f, pending, emit, subStop)
		case <-end:
			return probeClose(&mu, w, f, pending, emit, subStop)
		}
	}
}

func isReady(s *subClient) bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

func probeClose(mu *sync.Mutex, w *bufio.Writer, f *os.File, pending map[uint64]int64, emit func(int64, int64), subStop chan struct{}) error {
	close(subStop)
	mu.Lock()
	defer mu.Unlock()
	for _, sent := range pending {
		emit(sent, -1)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// probeReport prints probe round trips per phase. The phases file has lines "name start_unix_ms end_unix_ms".
func probeReport(args []string) error {
	fs := flag.NewFlagSet("probe-report", flag.ExitOnError)
	samples := fs.String("samples", "probe.txt", "probe samples")
	phases := fs.String("phases", "phases.txt", "phases")
	_ = fs.Parse(args)
	type ph struct {
		name       string
		start, end int64
		rtts       []int64
		lost       int
	}
	var ps []*ph
	pf, err := os.Open(*phases)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(pf)
	for sc.Scan() {
		var p ph
		if _, err := fmt.Sscanf(sc.Text(), "%s %d %d", &p.name, &p.start, &p.end); err == nil {
			ps = append(ps, &p)
		}
	}
	pf.Close()
	sf, err := os.Open(*samples)
	if err != nil {
		return err
	}
	sc = bufio.NewScanner(sf)
	for sc.Scan() {
		var at, rtt int64
		if _, err := fmt.Sscanf(sc.Text(), "%d %d", &at, &rtt); err != nil {
			continue
		}
		for _, p := range ps {
			if at >= p.start && at < p.end {
				if rtt < 0 {
					p.lost++
				} else {
					p.rtts = append(p.rtts, rtt)
				}
			}
		}
	}
	sf.Close()
	var parts []string
	for _, p := range ps {
		sort.Slice(p.rtts, func(i, j int) bool { return p.rtts[i] < p.rtts[j] })
		pct := func(q float64) string {
			if len(p.rtts) == 0 {
				return "n/a"
			}
			return fmtMs(float64(p.rtts[min(len(p.rtts)-1, int(q*float64(len(p.rtts))))]) / 1000)
		}
		parts = append(parts, fmt.Sprintf("%s: p50=%s p99=%s max=%s n=%d unanswered=%d", p.name, pct(0.5), pct(0.99), pct(1), len(p.rtts), p.lost))
	}
	fmt.Printf("probe: %s\n", strings.Join(parts, " | "))
	return nil
}
