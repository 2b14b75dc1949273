package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferrymq/ferry/perf/internal/procstat"
)

// outage runs QoS 1 publishers (short keep-alive), a QoS 0 publisher and one subscriber against Ferry, stops
// Kafka (SIGSTOP of --kafka-pid: unreachable, nothing lost) for --outage, lets it continue, and checks Ferry's
// promises for an outage: every connection and keep-alive lives on, no PUBACK goes out while Kafka is away,
// /readyz says not-ready during the outage and ready after, RSS stays under the bound derived from the
// configured budgets, and afterwards every acknowledged message is delivered and in Kafka, in order per
// topic, nothing lost. QoS 0 publishes Ferry had to drop are counted (its /metrics) and printed.
func outage(args []string) error {
	fs := flag.NewFlagSet("outage", flag.ExitOnError)
	target := fs.String("target", "127.0.0.1:1883", "MQTT address")
	admin := fs.String("admin", "127.0.0.1:9090", "Ferry's admin address (/readyz, /metrics)")
	broker := fs.String("kafka", "127.0.0.1:9092", "Kafka bootstrap address (for the final check)")
	topic := fs.String("topic", "mqtt-messages", "the messages topic")
	kafkaPid := fs.Int("kafka-pid", 0, "pid of the Kafka process to stop (SIGSTOP/SIGCONT)")
	ferryPid := fs.Int("ferry-pid", 0, "pid of Ferry (RSS)")
	dur := fs.Duration("outage", 30*time.Second, "how long Kafka is stopped")
	warmup := fs.Duration("warmup", 5*time.Second, "load before the outage")
	after := fs.Duration("after", 10*time.Second, "load after Kafka is back and Ferry ready")
	pubs := fs.Int("pubs", 50, "QoS 1 publishers")
	window := fs.Int("window", 64, "unacknowledged messages per QoS 1 publisher")
	rate := fs.Float64("rate", 100, "messages per second per QoS 1 publisher")
	q0rate := fs.Float64("qos0-rate", 2000, "messages per second of the QoS 0 publisher")
	keepAlive := fs.Int("keepalive", 5, "keep-alive of every client, seconds")
	payload := fs.Int("payload", 256, "payload bytes")
	budget := fs.Int64("budget-bytes", 0, "bytes Ferry may hold beyond its baseline, from its configured budgets")
	budgetDesc := fs.String("budget-desc", "", "how --budget-bytes was derived (printed)")
	drain := fs.Duration("drain", 90*time.Second, "time for acks and deliveries after the load stops")
	run := fs.String("run", "o", "run id: topics outage/<run>/q<qos>/<i>")
	_ = fs.Parse(args)
	if *kafkaPid == 0 || *ferryPid == 0 {
		return fmt.Errorf("--kafka-pid and --ferry-pid are required")
	}
	prefix := fmt.Sprintf("outage/%s/", *run)

	// Timeline, in unix ns.
	var stopAt, contAt atomic.Int64
	var acksDuring atomic.Int64
	var amu sync.Mutex
	acked := map[ackKey]struct{}{}
	// An acknowledgement of a message sent after Kafka was stopped (100 ms margin), received before Kafka was
	// continued, cannot have come from Kafka: Ferry acknowledged without it.
	onAck := func(k ackKey, lat int64) {
		now := time.Now().UnixNano()
		if s := stopAt.Load(); s != 0 && now-lat > s+int64(100*time.Millisecond) && contAt.Load() == 0 {
			acksDuring.Add(1)
		}
		amu.Lock()
		acked[k] = struct{}{}
		amu.Unlock()
	}

	// The subscriber checks order per topic: a sequence number below one already received, never received
	// before, is a reordering; one received before is a duplicate.
	var smu sync.Mutex
	last := map[string]uint64{}
	got := map[ackKey]bool{}
	var subReorders, subDups, q0got int64
	sub := newSub(subCfg{target: *target, cid: "outage-" + *run + "-sub", filters: []string{prefix + "#"}, qos: 1, clean: true,
		keepAlive: uint16(*keepAlive)}, func(m message) {
		s, ok := stampOf(m.payload)
		if !ok || !strings.HasPrefix(m.topic, prefix) {
			return
		}
		smu.Lock()
		defer smu.Unlock()
		if strings.HasPrefix(m.topic[len(prefix):], "q0/") {
			q0got++
			return
		}
		k := ackKey{qos: 1, pub: s.Pub, seq: s.Seq}
		switch {
		case got[k]:
			subDups++
		case s.Seq+1 < last[m.topic]:
			subReorders++
		}
		got[k] = true
		if s.Seq+1 > last[m.topic] {
			last[m.topic] = s.Seq + 1
		}
	})
	subStop := make(chan struct{})
	go sub.run(subStop)
	select {
	case <-sub.ready:
	case <-time.After(20 * time.Second):
		return fmt.Errorf("the subscriber could not subscribe: %v", sub.lastErr.Load())
	}

	stop, hardStop := make(chan struct{}), make(chan struct{})
	clients := make([]*pubClient, *pubs)
	var wg sync.WaitGroup
	for i := range clients {
		clients[i] = newPub(pubCfg{target: *target, cid: fmt.Sprintf("outage-%s-p%d", *run, i), topic: fmt.Sprintf("%sq1/%d", prefix, i),
			pub: uint32(i), qos: 1, clean: true, keepAlive: uint16(*keepAlive), rate: *rate, window: *window, payload: *payload}, onAck)
	}
	q0 := newPub(pubCfg{target: *target, cid: "outage-" + *run + "-q0", topic: prefix + "q0/0", pub: 1 << 20, qos: 0, clean: true,
		keepAlive: uint16(*keepAlive), rate: *q0rate, payload: *payload}, nil)
	for _, c := range append(clients, q0) {
		wg.Add(1)
		go func(c *pubClient) { defer wg.Done(); c.run(stop, hardStop) }(c)
	}

	// Sampler: RSS and readiness every 200 ms.
	type point struct {
		at    int64
		rss   int64
		ready bool
	}
	var pmu sync.Mutex
	var points []point
	sampDone := make(chan struct{})
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			s, _ := procstat.Read(*ferryPid)
			ok, _ := readyz(*admin)
			pmu.Lock()
			points = append(points, point{at: time.Now().UnixNano(), rss: s.RSSBytes, ready: ok})
			pmu.Unlock()
			select {
			case <-t.C:
			case <-sampDone:
				return
			}
		}
	}()
	defer close(sampDone)

	time.Sleep(*warmup)
	drops0, _ := metricLabels(*admin, "ferry_dropped_total")
	q0sent0 := q0.sent.Load()
	pmu.Lock()
	var base []int64
	for _, p := range points {
		if p.at > time.Now().Add(-2*time.Second).UnixNano() {
			base = append(base, p.rss)
		}
	}
	pmu.Unlock()
	baseline := medianInt(base)

	fmt.Fprintf(os.Stderr, "outage: SIGSTOP Kafka (pid %d) for %v\n", *kafkaPid, *dur)
	stopAt.Store(time.Now().UnixNano())
	if err := syscall.Kill(*kafkaPid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("cannot stop Kafka: %w", err)
	}
	contDone := false
	defer func() {
		if !contDone {
			_ = syscall.Kill(*kafkaPid, syscall.SIGCONT)
		}
	}()
	var sent0 int64
	for _, c := range clients {
		sent0 += c.sent.Load()
	}
	smu.Lock()
	q0got0 := q0got
	smu.Unlock()
	time.Sleep(*dur)
	var sentDuring int64
	for _, c := range clients {
		sentDuring += c.sent.Load()
	}
	sentDuring -= sent0
	if err := syscall.Kill(*kafkaPid, syscall.SIGCONT); err != nil {
		return fmt.Errorf("cannot continue Kafka: %w", err)
	}
	contDone = true
	contAt.Store(time.Now().UnixNano())
	fmt.Fprintf(os.Stderr, "outage: SIGCONT Kafka\n")
	readyAgain := time.Duration(-1)
	for t0 := time.Now(); time.Since(t0) < 2*time.Minute; time.Sleep(100 * time.Millisecond) {
		if ok, _ := readyz(*admin); ok {
			readyAgain = time.Since(t0)
			break
		}
	}
	time.Sleep(*after)
	drops1, _ := metricLabels(*admin, "ferry_dropped_total")
	q0sentOutage := q0.sent.Load() - q0sent0
	smu.Lock()
	q0gotOutage := q0got - q0got0
	smu.Unlock()
	close(stop)
	timer := time.AfterFunc(*drain, func() { close(hardStop) })
	wg.Wait()
	timer.Stop()
	if !isClosed(hardStop) {
		close(hardStop)
	}
	drainEnd := time.Now().Add(*drain)
	missing := 0
	for {
		amu.Lock()
		smu.Lock()
		missing = 0
		for k := range acked {
			if !got[k] {
				missing++
			}
		}
		smu.Unlock()
		amu.Unlock()
		if missing == 0 || time.Now().After(drainEnd) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	close(subStop)

	// Figures.
	var notReady, readyAfter bool
	var peak int64
	s0, c0 := stopAt.Load(), contAt.Load()
	pmu.Lock()
	for _, p := range points {
		if p.at >= s0 && p.at <= c0 {
			peak = max(peak, p.rss)
			if !p.ready {
				notReady = true
			}
		}
		if p.at > c0 && p.ready {
			readyAfter = true
		}
	}
	pmu.Unlock()
	var disc, pingTO, unacked, q1acked int64
	for _, c := range append(clients, q0) {
		disc += c.disconnects.Load()
		pingTO += c.pingTimeouts.Load()
		unacked += int64(c.inflight())
		q1acked += c.acked.Load()
	}
	disc += sub.disconnects.Load()
	pingTO += sub.pingTimeouts.Load()
	dropped := map[string]int64{}
	var dropTotal int64
	for k, v := range drops1 {
		d := int64(v - drops0[k])
		if d > 0 {
			dropped[strings.TrimSuffix(strings.TrimPrefix(k, `reason="`), `"`)] = d
			dropTotal += d
		}
	}

	t, err := readKafka(*broker, *topic, prefix, 3*time.Minute)
	if err != nil {
		return err
	}
	amu.Lock()
	v := compare(acked, t)
	amu.Unlock()
	bound := baseline + *budget
	fmt.Printf("outage: outage=%v q1_acked=%d q1_found=%d q1_lost=%d q1_dup=%d kafka_reorders=%d sub_missing=%d sub_reorders=%d sub_dups=%d unacked_at_end=%d acks_during_outage=%d disconnects=%d ping_timeouts=%d readyz_not_ready_during=%v readyz_ready_again_after=%v peak_rss=%s baseline_rss=%s rss_bound=%s qos1_sent_during_outage=%d qos0_sent_from_outage_start=%d qos0_received_from_outage_start=%d qos0_dropped=%d qos0_dropped_by_reason=%v%s\n",
		*dur, v.acked[1], v.found[1], v.lost[1], v.dup[1], v.reorders, missing, subReorders, subDups, unacked, acksDuring.Load(), disc, pingTO,
		notReady, readyAgain.Round(time.Millisecond), mib(peak), mib(baseline), mib(bound), sentDuring, q0sentOutage, q0gotOutage, dropTotal, fmtDrops(dropped),
		func() string {
			if *budgetDesc == "" {
				return ""
			}
			return " rss_bound_is=" + strings.ReplaceAll(*budgetDesc, " ", "")
		}())
	var bad []string
	check := func(ok bool, f string, a ...any) {
		if !ok {
			bad = append(bad, fmt.Sprintf(f, a...))
		}
	}
	check(v.lost[1] == 0, "%d acknowledged messages are not in Kafka", v.lost[1])
	check(missing == 0, "%d acknowledged messages never reached the subscriber", missing)
	check(subReorders == 0 && v.reorders == 0, "out of order: %d at the subscriber, %d in Kafka", subReorders, v.reorders)
	check(acksDuring.Load() == 0, "%d PUBACKs of messages sent after Kafka was stopped arrived before it was continued", acksDuring.Load())
	check(disc == 0, "%d connections dropped", disc)
	check(pingTO == 0, "%d PINGREQs unanswered within the keep-alive", pingTO)
	check(notReady, "/readyz never said not-ready during the outage")
	check(readyAfter && readyAgain >= 0, "/readyz did not say ready after the outage")
	check(*budget == 0 || peak <= bound, "peak RSS %s above the bound %s", mib(peak), mib(bound))
	check(q1acked > 0, "nothing acknowledged")
	check(len(t.errs) == 0, "kafka fetch errors: %v", t.errs)
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return nil
}

func medianInt(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]int64(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func fmtDrops(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	for i, k := range ks {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%d", k, m[k])
	}
	return b.String()
}
