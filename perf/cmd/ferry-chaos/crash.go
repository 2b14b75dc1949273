package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/ferrymq/ferry/perf/internal/stats"
)

// crashLoad runs publishers at QoS 1 and QoS 2 on persistent sessions plus one persistent subscriber against
// a broker that the caller kills and restarts at will. Every client reconnects (CleanSession=0) until the run
// ends; every PUBACK/PUBREC received is appended to the ack log for `verify`. On SIGTERM (or after
// --max-duration) publishing stops, in-flight messages are given --drain to be acknowledged, and the
// subscriber is given the same time to receive every acknowledged message.
//
// It fails (exit 1) when a reconnecting client's session was not present, when the subscriber's session
// stopped delivering after a reconnect (its subscription was not kept: it never subscribes again), or when
// an acknowledged message never reached the persistent subscriber.
func crashLoad(args []string) error {
	fs := flag.NewFlagSet("crash-load", flag.ExitOnError)
	target := fs.String("target", "127.0.0.1:1883", "MQTT address")
	run := fs.String("run", "r", "run id: topics are chaos/<run>/q<qos>/<publisher>, client ids chaos-<run>-…")
	pubs := fs.Int("pubs", 200, "publishing clients (half QoS 1, half QoS 2)")
	rate := fs.Float64("rate", 25, "messages per second per publisher")
	window := fs.Int("window", 8, "unacknowledged messages per publisher")
	payload := fs.Int("payload", 64, "payload bytes")
	ackPath := fs.String("acklog", "acks.log", "ack log file (appended)")
	maxDur := fs.Duration("max-duration", 30*time.Minute, "the load stops by itself after this long")
	maxMsgs := fs.Uint64("max-msgs", 1_000_000, "messages per publisher at most")
	drain := fs.Duration("drain", 60*time.Second, "time given to acknowledgements and deliveries after the stop")
	noSub := fs.Bool("no-sub", false, "no persistent subscriber")
	_ = fs.Parse(args)

	al, err := openAckLog(*ackPath)
	if err != nil {
		return err
	}
	var hmu sync.Mutex
	hist := stats.NewHist()

	// What the subscriber must eventually receive: every acknowledged message.
	var amu sync.Mutex
	acked := map[ackKey]struct{}{}
	got := map[[2]uint64]bool{} // (pub, seq) received by the subscriber
	pubQoS := make([]byte, *pubs)
	onAck := func(k ackKey, lat int64) {
		al.add(k)
		hmu.Lock()
		stats.RecordNs(hist, lat)
		hmu.Unlock()
		amu.Lock()
		acked[k] = struct{}{}
		amu.Unlock()
	}

	stop, hardStop, subStop := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var sub *subClient
	// Resume checks: after each reconnect of the subscriber, a message published after the reconnect must
	// arrive (it does not subscribe again, so that proves the session kept its subscription).
	var rmu sync.Mutex
	resumed, reconnects := 0, 0
	var lastSeenReconnect int64
	if !*noSub {
		sub = newSub(subCfg{target: *target, cid: fmt.Sprintf("chaos-%s-sub", *run), filters: []string{fmt.Sprintf("chaos/%s/#", *run)},
			qos: 1, keepAlive: 30, reconnect: true}, func(m message) {
			s, ok := stampOf(m.payload)
			if !ok {
				return
			}
			amu.Lock()
			got[[2]uint64{uint64(s.Pub), s.Seq}] = true
			amu.Unlock()
			rc := sub.lastConnect.Load()
			if s.SentNs > rc {
				rmu.Lock()
				if rc != lastSeenReconnect {
					lastSeenReconnect = rc
					resumed++
				}
				rmu.Unlock()
			}
		})
		go sub.run(subStop)
		select {
		case <-sub.ready:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("the subscriber could not subscribe: %v", sub.lastErr.Load())
		}
	}

	clients := make([]*pubClient, *pubs)
	var wg sync.WaitGroup
	for i := range clients {
		qos := byte(1 + i%2)
		pubQoS[i] = qos
		clients[i] = newPub(pubCfg{target: *target, cid: fmt.Sprintf("chaos-%s-p%d", *run, i), topic: fmt.Sprintf("chaos/%s/q%d/%d", *run, qos, i),
			pub: uint32(i), qos: qos, keepAlive: 30, rate: *rate, window: *window, payload: *payload, maxMsgs: *maxMsgs,
			reconnect: true, retryEvery: 200 * time.Millisecond}, onAck)
		wg.Add(1)
		go func(c *pubClient) { defer wg.Done(); c.run(stop, hardStop) }(clients[i])
		if i%20 == 19 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	start := time.Now()
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	deadline := time.After(*maxDur)
wait:
	for {
		select {
		case <-sig:
			break wait
		case <-deadline:
			break wait
		case <-progress.C:
			var a, c int64
			for _, p := range clients {
				a += p.acked.Load()
				c += p.connects.Load()
			}
			fmt.Fprintf(os.Stderr, "crash-load: %s acked=%d connects=%d\n", time.Since(start).Truncate(time.Second), a, c)
		}
	}
	close(stop)
	drainEnd := time.Now().Add(*drain)
	timer := time.AfterFunc(*drain, func() { close(hardStop) })
	wg.Wait()
	timer.Stop()
	if !isClosed(hardStop) {
		close(hardStop)
	}
	// The subscriber gets the rest of the drain time to receive every acknowledged message.
	missing := 0
	if sub != nil {
		for {
			amu.Lock()
			missing = 0
			for k := range acked {
				if !got[[2]uint64{uint64(k.pub), k.seq}] {
					missing++
				}
			}
			amu.Unlock()
			if missing == 0 || time.Now().After(drainEnd) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		close(subStop)
	}
	if err := al.close(); err != nil {
		return err
	}

	var r struct{ sent, acked [3]int64 }
	var connects, fails, sessLost, unacked int64
	for i, p := range clients {
		q := pubQoS[i]
		r.sent[q] += p.sent.Load()
		r.acked[q] += p.acked.Load()
		connects += p.connects.Load()
		fails += p.connectFails.Load()
		sessLost += p.sessionLost.Load()
		unacked += int64(p.inflight())
	}
	subRe, subLost := 0, int64(0)
	if sub != nil {
		reconnects = int(sub.connects.Load()) - 1
		subRe = reconnects
		subLost = sub.sessionLost.Load()
	}
	pc := summarize(hist)
	fmt.Printf("crash-load: pubs=%d q1_sent=%d q1_acked=%d q2_sent=%d q2_acked=%d unacked_at_end=%d connects=%d connect_failures=%d session_lost=%d sub_reconnects=%d sub_resumed=%d sub_session_lost=%d sub_missing=%d ack_p50=%s ack_p99=%s ack_max=%s\n",
		*pubs, r.sent[1], r.acked[1], r.sent[2], r.acked[2], unacked, connects, fails, sessLost+subLost, subRe, max(resumed-1, 0), subLost, missing,
		pc.p50, pc.p99, pc.max)
	var bad []string
	if sessLost+subLost > 0 {
		bad = append(bad, fmt.Sprintf("%d reconnects found no session", sessLost+subLost))
	}
	if sub != nil && resumed < subRe+1 { // resumed counts the first connection too
		bad = append(bad, fmt.Sprintf("the subscriber's session delivered nothing new after %d of %d reconnects", subRe+1-resumed, subRe))
	}
	if missing > 0 {
		bad = append(bad, fmt.Sprintf("%d acknowledged messages never reached the persistent subscriber", missing))
	}
	if r.acked[1]+r.acked[2] == 0 {
		bad = append(bad, "nothing was acknowledged")
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return nil
}

type pcts struct{ p50, p99, max string }

func summarize(h *hdrhistogram.Histogram) pcts {
	if h.TotalCount() == 0 {
		return pcts{"n/a", "n/a", "n/a"}
	}
	s := stats.Summarize(h)
	return pcts{fmtMs(s.P50), fmtMs(s.P99), fmtMs(s.Max)}
}

// fmtMs prints milliseconds without spaces, for key=value verdicts.
func fmtMs(ms float64) string {
	if ms >= 100 {
		return fmt.Sprintf("%.0fms", ms)
	}
	return fmt.Sprintf("%.2fms", ms)
}
