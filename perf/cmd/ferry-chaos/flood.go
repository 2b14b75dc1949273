package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/ferrymq/ferry/perf/internal/stats"
	"github.com/ferrymq/ferry/perf/internal/wire"
)

// floodConns opens --conns MQTT connections as fast as --par dialers allow, holds them (PINGREQ every
// keep-alive/2), and reconnects every dropped one at once (a reconnect storm when the broker restarts), until
// SIGTERM or --max. It rewrites --status every 250 ms ("connected N reconnected M failures F") and prints
// its figures on exit: time to open all, CONNACK latency of the first connections and of the reconnects,
// the storm's recovery time (first drop → all back).
func floodConns(args []string) error {
	fs := flag.NewFlagSet("flood-conns", flag.ExitOnError)
	target := fs.String("target", "127.0.0.1:1883", "MQTT address")
	n := fs.Int("conns", 6000, "connections (each costs one fd here and one in the broker)")
	srcs := fs.String("src", "", "source addresses, comma-separated (127.0.0.0/8), used round-robin")
	par := fs.Int("par", 256, "connections being opened at once")
	id := fs.String("id", "f0", "client id prefix")
	keepAlive := fs.Int("keepalive", 120, "keep-alive, seconds")
	status := fs.String("status", "", "status file")
	maxDur := fs.Duration("max", 20*time.Minute, "give up after this long")
	_ = fs.Parse(args)
	var src []string
	if *srcs != "" {
		src = strings.Split(*srcs, ",")
	}
	var connected, reconnected, failures atomic.Int64
	var hmu sync.Mutex
	first, again := stats.NewHist(), stats.NewHist()
	var firstDrop atomic.Int64
	var allBackAt atomic.Int64
	var errMu sync.Mutex
	errs := map[string]int{}
	stop := make(chan struct{})
	start := time.Now()
	var allOpen atomic.Int64
	sem := make(chan struct{}, *par)
	var wg sync.WaitGroup
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := ""
			if len(src) > 0 {
				s = src[i%len(src)]
			}
			c := wire.Connect{ClientID: fmt.Sprintf("%s-%d", *id, i), KeepAlive: uint16(*keepAlive), CleanSession: true}
			initial := true
			for !isClosed(stop) {
				sem <- struct{}{}
				t0 := time.Now()
				m, _, err := connect(*target, s, c, 10*time.Second)
				<-sem
				if err != nil {
					failures.Add(1)
					errMu.Lock()
					errs[errClass(err)]++
					errMu.Unlock()
					select {
					case <-stop:
						return
					case <-time.After(100*time.Millisecond + time.Duration(rand.Int64N(int64(100*time.Millisecond)))):
					}
					continue
				}
				hmu.Lock()
				if initial {
					stats.RecordNs(first, time.Since(t0).Nanoseconds())
				} else {
					stats.RecordNs(again, time.Since(t0).Nanoseconds())
				}
				hmu.Unlock()
				if !initial {
					reconnected.Add(1)
				}
				initial = false
				if connected.Add(1) == int64(*n) {
					if allOpen.Load() == 0 {
						allOpen.Store(int64(time.Since(start)))
					} else if firstDrop.Load() != 0 {
						allBackAt.Store(time.Now().UnixNano())
					}
				}
				hold(m, *keepAlive, stop)
				connected.Add(-1)
				firstDrop.CompareAndSwap(0, time.Now().UnixNano())
			}
		}(i)
	}
	writeStatus := func() {
		if *status == "" {
			return
		}
		tmp := *status + ".tmp"
		_ = os.WriteFile(tmp, []byte(fmt.Sprintf("connected %d reconnected %d failures %d\n", connected.Load(), reconnected.Load(), failures.Load())), 0o644)
		_ = os.Rename(tmp, *status)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	t := time.NewTicker(250 * time.Millisecond)
	end := time.After(*maxDur)
loop:
	for {
		writeStatus()
		select {
		case <-t.C:
		case <-sig:
			break loop
		case <-end:
			break loop
		}
	}
	close(stop)
	storm := "n/a"
	if fd, ab := firstDrop.Load(), allBackAt.Load(); fd != 0 && ab != 0 {
		storm = time.Duration(ab - fd).Round(time.Millisecond).String()
	}
	open := "not_all"
	if a := allOpen.Load(); a != 0 {
		open = time.Duration(a).Round(time.Millisecond).String()
	}
	hmu.Lock()
	f, a := summarize(first), summarize(again)
	hmu.Unlock()
	errMu.Lock()
	var es []string
	for k, v := range errs {
		es = append(es, fmt.Sprintf("%s:%d", k, v))
	}
	errMu.Unlock()
	fmt.Printf("flood-conns: conns=%d connected_at_end=%d all_open_in=%s connack_p50=%s connack_p99=%s reconnected=%d storm_recovery=%s reconnect_connack_p50=%s reconnect_connack_p99=%s failed_attempts=%d failures=%s\n",
		*n, connected.Load(), open, f.p50, f.p99, reconnected.Load(), storm, a.p50, a.p99, failures.Load(), strings.Join(es, ","))
	return nil
}

// errClass shortens a connect error for counting.
func errClass(err error) string {
	s := err.Error()
	switch {
	case strings.Contains(s, "refused with return code"):
		return strings.ReplaceAll(s[strings.Index(s, "return code"):], " ", "_")
	case strings.Contains(s, "connection refused"):
		return "econnrefused"
	case strings.Contains(s, "connection reset"):
		return "econnreset"
	case strings.Contains(s, "timeout"):
		return "timeout"
	case strings.Contains(s, "too many open files"):
		return "emfile"
	case strings.Contains(s, "EOF"):
		return "eof"
	case strings.Contains(s, "address not available"):
		return "eaddrnotavail"
	}
	return "other"
}

// hold keeps an idle connection alive until it drops or stop closes.
func hold(m *mconn, keepAlive int, stop <-chan struct{}) {
	dead := make(chan struct{})
	go func() {
		defer close(dead)
		for {
			if _, err := m.next(); err != nil {
				return
			}
		}
	}()
	// Spread the PINGREQs over the interval so that thousands of connections do not ping in step.
	iv := time.Duration(keepAlive) * time.Second / 2
	t := time.NewTimer(time.Duration(rand.Int64N(int64(iv))))
	defer t.Stop()
	for {
		select {
		case <-stop:
			m.close()
			<-dead
			return
		case <-dead:
			m.close()
			return
		case <-t.C:
			_ = m.write(wire.AppendPingreq(nil))
			t.Reset(iv)
		}
	}
}

// floodPub is one MQTT 5 client publishing QoS 0 as fast as it can for --duration (bounded by --max-msgs).
// It reports what it sent and how it ended: a DISCONNECT reason code from the broker (0x96 Message Rate Too
// High is what a publish rate limit should send), a closed socket, or the end of the run.
func floodPub(args []string) error {
	fs := flag.NewFlagSet("flood-pub", flag.ExitOnError)
	target := fs.String("target", "127.0.0.1:1883", "MQTT address")
	dur := fs.Duration("duration", 10*time.Second, "how long to flood")
	payload := fs.Int("payload", 128, "payload bytes")
	batch := fs.Int("batch", 64, "PUBLISHes per write")
	maxMsgs := fs.Int64("max-msgs", 50_000_000, "messages at most")
	expect := fs.Int("expect-reason", -1, "fail unless the broker disconnects with this v5 reason code")
	src := fs.String("src", "127.0.8.1", "source address")
	_ = fs.Parse(args)
	nc, err := dial(*target, *src, 5*time.Second)
	if err != nil {
		return err
	}
	m := &mconn{nc: nc, fr: newFramer(nc)}
	// CONNECT, protocol level 5, clean start, keep-alive 60, no properties.
	cid := fmt.Sprintf("flood-pub-%d", os.Getpid())
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0}
	body = binary.BigEndian.AppendUint16(body, uint16(len(cid)))
	body = append(body, cid...)
	pkt := wire.AppendVarint([]byte{wire.CONNECT << 4}, len(body))
	if err := m.write(append(pkt, body...)); err != nil {
		return err
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := m.next()
	_ = nc.SetReadDeadline(time.Time{})
	if err != nil || f.Type != wire.CONNACK || len(f.Body) < 2 || f.Body[1] != 0 {
		return fmt.Errorf("v5 CONNECT not accepted: %v %v", err, f.Body)
	}
	// PUBLISH QoS 0 v5: topic, property length 0, payload.
	topic := "flood/pub"
	var one []byte
	one = append(one, wire.PUBLISH<<4)
	one = wire.AppendVarint(one, 2+len(topic)+1+*payload)
	one = binary.BigEndian.AppendUint16(one, uint16(len(topic)))
	one = append(one, topic...)
	one = append(one, 0)
	one = append(one, make([]byte, *payload)...)
	var buf []byte
	for i := 0; i < *batch; i++ {
		buf = append(buf, one...)
	}
	ended := make(chan string, 1)
	go func() {
		for {
			f, err := m.next()
			if err != nil {
				ended <- "socket_closed"
				return
			}
			if f.Type == wire.DISCONNECT {
				r := byte(0)
				if len(f.Body) > 0 {
					r = f.Body[0]
				}
				ended <- fmt.Sprintf("DISCONNECT_0x%02X", r)
				return
			}
		}
	}()
	start := time.Now()
	var sent int64
	how := "run_ended"
	endAt := start.Add(*dur)
	var writeErr error
	for time.Now().Before(endAt) && sent < *maxMsgs {
		select {
		case how = <-ended:
			endAt = time.Now()
		default:
		}
		if !time.Now().Before(endAt) {
			break
		}
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := nc.Write(buf); err != nil {
			if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
				continue // the broker stopped reading us: keep pushing until the run ends or it disconnects
			}
			writeErr = err
			select {
			case how = <-ended:
			case <-time.After(2 * time.Second):
				how = "write_error"
			}
			break
		}
		sent += int64(*batch)
	}
	el := time.Since(start)
	if how == "run_ended" {
		select {
		case how = <-ended:
		default:
		}
	}
	nc.Close()
	fmt.Printf("flood-pub: sent=%d in=%v rate=%.0f/s ended_by=%s%s\n", sent, el.Round(time.Millisecond), float64(sent)/el.Seconds(), how,
		func() string {
			if writeErr != nil {
				return " write_error=" + strings.ReplaceAll(writeErr.Error(), " ", "_")
			}
			return ""
		}())
	if *expect >= 0 && how != fmt.Sprintf("DISCONNECT_0x%02X", *expect) {
		return fmt.Errorf("ended by %s, want DISCONNECT 0x%02X", how, *expect)
	}
	return nil
}

var _ = hdrhistogram.New
