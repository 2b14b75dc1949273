package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/perf/internal/wire"
)

// soak runs a mixed workload for --duration — QoS 0/1/2 publishers, wildcard and exact subscribers,
// persistent sessions that disconnect and come back, retained messages read by a stream of short-lived
// clients — while sampling Ferry's RSS, goroutines (go_goroutines from /metrics) and open fds every --every.
// After the warm-up (--warmup, a fraction of the run), the post-warm-up samples are cut in quarters and the
// median of the last quarter is compared with the median of the second: growth beyond the tolerance (relative
// and absolute, per resource) fails the run. A least-squares slope per minute over the same samples is
// printed beside it.
// baseSoakRate is the msg/s of the default mix's QoS 0, 1 and 2 publishers: 4×50 + 4×50 + 2×25.
const baseSoakRate = 450

func soak(args []string) error {
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	target := fs.String("target", "127.0.0.1:1883", "MQTT address")
	admin := fs.String("admin", "127.0.0.1:9090", "Ferry's admin address (/metrics)")
	pid := fs.Int("ferry-pid", 0, "Ferry's pid")
	dur := fs.Duration("duration", 10*time.Minute, "how long")
	every := fs.Duration("every", 5*time.Second, "sampling interval")
	warm := fs.Float64("warmup", 0.2, "fraction of the run ignored by the growth check")
	rssTol := fs.Float64("rss-tol", 0.10, "allowed RSS growth, relative")
	rssAbs := fs.Int64("rss-abs", 8<<20, "allowed RSS growth, bytes, added to the relative one")
	grTol := fs.Float64("goroutines-tol", 0.10, "allowed goroutine growth, relative")
	grAbs := fs.Int64("goroutines-abs", 20, "allowed goroutine growth, absolute")
	fdTol := fs.Float64("fds-tol", 0.05, "allowed fd growth, relative")
	fdAbs := fs.Int64("fds-abs", 10, "allowed fd growth, absolute")
	out := fs.String("samples", "soak-samples.txt", "samples file: unix_ms rss goroutines fds")
	run := fs.String("run", "s", "run id")
	rate := fs.Float64("rate", baseSoakRate, "msg/s of the QoS 0, 1 and 2 publishers together, shared in the default mix's proportions (retained publishers stay at 1 msg/s each)")
	_ = fs.Parse(args)
	if *rate <= 0 {
		return fmt.Errorf("--rate %v: want more than 0", *rate)
	}
	scale := *rate / baseSoakRate
	if *pid == 0 {
		return fmt.Errorf("--ferry-pid is required")
	}
	p := fmt.Sprintf("soak/%s/", *run)
	stop, hard := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	var pubs []*pubClient
	addPub := func(c pubCfg) {
		c.target, c.keepAlive, c.reconnect, c.payload = *target, 30, true, 64
		pc := newPub(c, nil)
		pubs = append(pubs, pc)
		wg.Add(1)
		go func() { defer wg.Done(); pc.run(stop, hard) }()
	}
	for i := 0; i < 4; i++ {
		addPub(pubCfg{cid: fmt.Sprintf("soak-%s-q0-%d", *run, i), topic: fmt.Sprintf("%sq0/%d", p, i), pub: uint32(i), qos: 0, clean: true, rate: 50 * scale})
		addPub(pubCfg{cid: fmt.Sprintf("soak-%s-q1-%d", *run, i), topic: fmt.Sprintf("%sq1/%d", p, i), pub: uint32(10 + i), qos: 1, rate: 50 * scale, window: 16})
	}
	for i := 0; i < 2; i++ {
		addPub(pubCfg{cid: fmt.Sprintf("soak-%s-q2-%d", *run, i), topic: fmt.Sprintf("%sq2/%d", p, i), pub: uint32(20 + i), qos: 2, rate: 25 * scale, window: 8})
	}
	const retainedTopics = 10
	for i := 0; i < retainedTopics; i++ {
		addPub(pubCfg{cid: fmt.Sprintf("soak-%s-ret-%d", *run, i), topic: fmt.Sprintf("%sretained/%d", p, i), pub: uint32(100 + i), qos: 1, retain: true, clean: true, rate: 1, window: 1})
	}
	var subs []*subClient
	subStop := make(chan struct{})
	addSub := func(c subCfg) {
		c.target, c.keepAlive, c.reconnect = *target, 30, true
		s := newSub(c, nil)
		subs = append(subs, s)
		wg.Add(1)
		go func() { defer wg.Done(); s.run(subStop) }()
	}
	for i := 0; i < 2; i++ {
		addSub(subCfg{cid: fmt.Sprintf("soak-%s-wild-%d", *run, i), filters: []string{p + "#"}, qos: 1, clean: true})
		addSub(subCfg{cid: fmt.Sprintf("soak-%s-plus-%d", *run, i), filters: []string{p + "+/0"}, qos: 2, clean: true})
	}
	for i := 0; i < 10; i++ { // persistent sessions, away and back every 15–30 s
		addSub(subCfg{cid: fmt.Sprintf("soak-%s-pers-%d", *run, i), filters: []string{p + "q1/+", p + "q2/+"}, qos: 2, cycle: 15 * time.Second})
	}
	// A stream of short-lived clients: connect, subscribe to the retained topics, count them, leave.
	var churn, retainedShort, churnErrs atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		i := 0
		for {
			select {
			case <-subStop:
				return
			case <-t.C:
			}
			i++
			m, _, err := connect(*target, "", wire.Connect{ClientID: fmt.Sprintf("soak-%s-churn-%d", *run, i), KeepAlive: 30, CleanSession: true}, 5*time.Second)
			if err != nil {
				churnErrs.Add(1)
				continue
			}
			n := 0
			if err := m.subscribe(1, 0, 5*time.Second, func(f wire.Frame) {
				if f.Type == wire.PUBLISH {
					n++
				}
			}, p+"retained/+"); err != nil {
				churnErrs.Add(1)
				m.close()
				continue
			}
			_ = m.nc.SetReadDeadline(time.Now().Add(time.Second))
			for n < retainedTopics {
				f, err := m.next()
				if err != nil {
					break
				}
				if f.Type == wire.PUBLISH {
					if pp, err := wire.ParsePublish(f); err == nil && pp.Retain {
						n++
					}
				}
			}
			churn.Add(1)
			if n < retainedTopics && i > 20 {
				retainedShort.Add(1)
			}
			_ = m.write(wire.AppendDisconnect(nil))
			m.close()
		}
	}()

	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	var rs []reading
	start := time.Now()
	t := time.NewTicker(*every)
	for time.Since(start) < *dur {
		r := read(*pid, *admin)
		if r.rss == 0 {
			close(stop)
			close(subStop)
			return fmt.Errorf("cannot read Ferry's memory (pid %d): has it died?", *pid)
		}
		rs = append(rs, r)
		fmt.Fprintf(f, "%d %d %d %d\n", r.at.UnixMilli(), r.rss, r.goroutines, r.fds)
		<-t.C
	}
	t.Stop()
	f.Close()
	close(stop)
	time.AfterFunc(20*time.Second, func() { close(hard) })
	close(subStop)
	wg.Wait()

	var sent, acked, disc, sessLost, received, subDisc int64
	for _, pc := range pubs {
		sent += pc.sent.Load()
		acked += pc.acked.Load()
		disc += pc.disconnects.Load()
	}
	for _, s := range subs {
		received += s.received.Load()
		subDisc += s.disconnects.Load()
		sessLost += s.sessionLost.Load()
	}
	post := rs[int(float64(len(rs))**warm):]
	var bad []string
	var figs []string
	judge := func(name string, get func(reading) int64, tol float64, abs int64, fmtv func(int64) string) {
		var xs []int64
		for _, r := range post {
			if v := get(r); v >= 0 {
				xs = append(xs, v)
			}
		}
		if len(xs) < 8 {
			figs = append(figs, name+"=too_few_samples")
			return
		}
		q := len(xs) / 4
		q2, q4 := medianInt(xs[q:2*q]), medianInt(xs[3*q:])
		limit := q2 + int64(float64(q2)*tol) + abs
		slope := slopePerMin(post, get)
		figs = append(figs, fmt.Sprintf("%s_q2=%s %s_q4=%s %s_limit=%s %s_slope=%s/min %s_max=%s", name, fmtv(q2), name, fmtv(q4), name, fmtv(limit), name, fmtv(int64(slope)), name, fmtv(maxInt(xs))))
		if q4 > limit {
			bad = append(bad, fmt.Sprintf("%s grew from %s to %s (limit %s)", name, fmtv(q2), fmtv(q4), fmtv(limit)))
		}
	}
	num := func(v int64) string { return fmt.Sprint(v) }
	judge("rss", func(r reading) int64 { return r.rss }, *rssTol, *rssAbs, mib)
	judge("goroutines", func(r reading) int64 { return r.goroutines }, *grTol, *grAbs, num)
	judge("fds", func(r reading) int64 { return r.fds }, *fdTol, *fdAbs, num)
	fmt.Printf("soak: duration=%v samples=%d warmup=%.0f%% %s sent=%d acked=%d delivered=%d churn_clients=%d retained_short=%d churn_errors=%d pub_disconnects=%d sub_unexpected_disconnects=%d session_lost=%d tolerance=rss:+%.0f%%+%s,goroutines:+%.0f%%+%d,fds:+%.0f%%+%d\n",
		*dur, len(rs), *warm*100, strings.Join(figs, " "), sent, acked, received, churn.Load(), retainedShort.Load(), churnErrs.Load(), disc, subDisc, sessLost,
		*rssTol*100, mib(*rssAbs), *grTol*100, *grAbs, *fdTol*100, *fdAbs)
	if sessLost > 0 {
		bad = append(bad, fmt.Sprintf("%d persistent reconnects found no session", sessLost))
	}
	if disc+subDisc > 0 {
		bad = append(bad, fmt.Sprintf("%d connections dropped by the broker", disc+subDisc))
	}
	if retainedShort.Load() > 0 {
		bad = append(bad, fmt.Sprintf("%d short-lived clients got fewer than %d retained messages", retainedShort.Load(), retainedTopics))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return nil
}

func maxInt(xs []int64) int64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// slopePerMin is the least-squares slope of get over the readings, per minute.
func slopePerMin(rs []reading, get func(reading) int64) float64 {
	var xs, ys []float64
	for _, r := range rs {
		if v := get(r); v >= 0 {
			xs = append(xs, r.at.Sub(rs[0].at).Minutes())
			ys = append(ys, float64(v))
		}
	}
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

var _ = sort.Ints
