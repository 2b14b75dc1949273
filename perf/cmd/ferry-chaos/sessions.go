package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/perf/internal/wire"
)

// sessions is the history checker of issue 15 (docs/sessions.md, "Consistency"): MQTT 5 clients
// with persistent sessions hop between instances at random — often within a millisecond of a SUBSCRIBE or an
// UNSUBSCRIBE — and every CONNACK, SUBACK and UNSUBACK is recorded with its call and return times. Each
// client's session is a register (does it exist, which filters does it hold), checked for linearizability by
// Porcupine: Session Present must be 1 exactly when the session existed, an UNSUBACK says 0x00 exactly when
// the filter was subscribed, 0x11 exactly when it was not (MQTT 5.0 §3.11.3). So a subscription acknowledged
// and then lost, or one resurrected after its UNSUBACK, is a violation wherever the client moved.
//
// Instance kills (scripts/sessions-check.sh, KILLS): an operation whose connection breaks has an unknown
// outcome (see hopper.run) and the client connects again elsewhere, so its history goes on.
//
// Also: deliveries of acknowledged QoS 1/2 messages to carriers (sessions_deliver.go), wills
// (sessions_wills.go, counted in Kafka: --kafka) and MQTT 3.1.1 hoppers (sessions_v3.go).
//
//	ferry-chaos sessions --targets 127.0.0.1:1883,127.0.0.1:1884 --kafka 127.0.0.1:9092 --clients 50 --duration 30s [--viz FILE]
func sessions(args []string) error {
	fs := flag.NewFlagSet("sessions", flag.ExitOnError)
	targets := fs.String("targets", "", "comma-separated MQTT addresses of the instances (host:port)")
	clients := fs.Int("clients", 50, "clients, each with its own persistent session")
	filters := fs.Int("filters", 4, "topic filters each client subscribes and unsubscribes (at most 64)")
	duration := fs.Duration("duration", 30*time.Second, "how long the clients hop")
	hopEvery := fs.Int("hop-every", 3, "a client moves to another instance after about one operation in this many")
	closeEvery := fs.Int("close-every", 0, "if > 0, about one move in this many first closes the client's connection (no DISCONNECT), as a client whose move's dial failed does")
	think := fs.Duration("think", 0, "a pause, uniform in [0, think), before each SUBSCRIBE or UNSUBSCRIBE (a move still follows its operation at once): less load, a smaller sessions topic for restarts to read")
	viz := fs.String("viz", "sessions-violation.html", "where to write Porcupine's rendering of a violating history")
	carrierEvery := fs.Int("carrier-every", 2, "one client in this many is a carrier of deliveries (0: none): it keeps two topics of its own subscribed at QoS 1 and 2 and never starts clean again")
	publishers := fs.Int("publishers", 2, "publishers of numbered messages to the carriers, alternately at QoS 1 and QoS 2")
	pubRate := fs.Float64("pub-rate", 40, "messages a second per publisher (at most: each waits for its PUBACK/PUBCOMP)")
	drain := fs.Duration("drain", 60*time.Second, "after the run, how long the carriers may take to receive every acknowledged message")
	v3Every := fs.Int("v3-every", 4, "one client in this many (of those not carriers) speaks MQTT 3.1.1 (0: none)")
	wills := fs.Int("wills", 8, "will clients (0: none): each connects again and again with a will of its own, half with a Will Delay")
	willDelay := fs.Duration("will-delay", 2*time.Second, "the Will Delay of the odd will clients (whole seconds)")
	willCleanEvery := fs.Int("will-clean-every", 2, "one life in this many of the will clients without a Will Delay has a Session Expiry of 0 (0: none), so its end tombstones the client's owner record")
	kafka := fs.String("kafka", "", "Kafka bootstrap address: the wills are counted in the messages topic (--wills needs it)")
	kafkaTopic := fs.String("kafka-topic", "mqtt-messages", "Ferry's messages topic")
	run := fs.String("run", fmt.Sprintf("h%d", time.Now().UnixNano()%1e9), "run id: client ids are hist-<run>-<n>")
	_ = fs.Parse(args)
	addrs := strings.Split(*targets, ",")
	if *targets == "" || *filters < 1 || *filters > 64 || *clients < 1 || *hopEvery < 1 {
		return errors.New("want --targets, --clients ≥ 1, 1 ≤ --filters ≤ 64, --hop-every ≥ 1")
	}
	start := time.Now()
	deadline := start.Add(*duration)
	var (
		history []porcupine.Operation
		st      sessionStats
		failed  atomic.Int64
		wg      sync.WaitGroup
		pubs    sync.WaitGroup
	)
	ks := startKills(start, *run, addrs)
	ids := func(n int) string { return fmt.Sprintf("hist-%s-%d", *run, n) }
	led := newLedger(*clients, *carrierEvery)
	hoppers := make([]*hopper, *clients)
	for i := range hoppers {
		hoppers[i] = &hopper{id: ids(i), n: i, addrs: addrs, filters: *filters, t0: start, think: *think,
			closeEvery: *closeEvery, led: led, carrier: led.carrier(i)}
		hoppers[i].v3 = *v3Every > 0 && i%*v3Every == *v3Every-1 && !hoppers[i].carrier
	}
	for k := 0; k < *publishers && len(led.ready) > 0; k++ {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			led.publisher(fmt.Sprintf("pub-%s-%d", *run, k), byte(1+k%2), *pubRate, addrs, deadline, ids)
		}()
	}
	var (
		wc      willCounts
		willErr error
		willsWG sync.WaitGroup
	)
	if *wills > 0 && *kafka == "" {
		return errors.New("--wills wants --kafka (the wills are counted in Kafka)")
	}
	if *wills > 0 {
		willsWG.Add(1)
		go func() {
			defer willsWG.Done()
			wc, willErr = runWills(*wills, *run, addrs, *willDelay, *willCleanEvery, deadline, start, *kafka, *kafkaTopic, ks)
		}()
	}
	for _, h := range hoppers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := h.run(deadline, *hopEvery, &st); err != nil {
				failed.Add(1)
				fmt.Fprintf(os.Stderr, "client %s stopped: %v\n", h.id, err)
			}
		}()
	}
	wg.Wait()
	pubs.Wait()
	if failed.Load() == int64(*clients) {
		return errors.New("every client stopped early: nothing to check")
	}
	// The drain: every carrier connects once more and waits for its acknowledged messages.
	drainStart := time.Now()
	var drainFailed atomic.Int64
	for _, h := range hoppers {
		if !h.carrier {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.drain(drainStart.Add(*drain), &st); err != nil {
				drainFailed.Add(1)
				fmt.Fprintln(os.Stderr, err)
			}
		}()
	}
	wg.Wait()
	drained := time.Since(drainStart).Round(time.Millisecond)
	willsWG.Wait()
	for _, h := range hoppers {
		history = append(history, h.ops...)
	}
	if *wills > 0 {
		fmt.Printf("sessions: wills of %d clients: %v\n", *wills, wc)
	}
	ks.close()
	dc := led.check(ids, ks)
	fmt.Printf("sessions: deliveries to %d carriers (drained in %v, %d drains failed): %v\n", len(led.ready),
		drained, drainFailed.Load(), dc)
	for _, v := range dc.firstViolations {
		fmt.Printf("sessions: delivery violation: %s\n", v)
	}
	unknowns := unknownOutcomes(history)
	res, info := porcupine.CheckOperationsVerbose(sessionModel, history, 5*time.Minute)
	v3 := 0
	for _, h := range hoppers {
		if h.v3 {
			v3++
		}
	}
	fmt.Printf("sessions: %d operations (%d of unknown outcome) of %d clients (%d MQTT 3.1.1), %d session moves, %d reconnects after a failure "+
		"(%d failed attempts), %d clients stopped early, linearizable=%v\n",
		len(history), unknowns, *clients, v3, st.moves.Load(), st.reconnects.Load(), st.retries.Load(), failed.Load(), res)
	switch res {
	case porcupine.Ok:
		if dc.violations > 0 || drainFailed.Load() > 0 || wc.violations > 0 || willErr != nil {
			return fmt.Errorf("%d delivery violations, %d drains failed, %d will violations (%v)", dc.violations,
				drainFailed.Load(), wc.violations, willErr)
		}
		return nil
	case porcupine.Illegal:
		printFirstViolation(history)
		if err := porcupine.VisualizePath(sessionModel, info, *viz); err == nil {
			fmt.Printf("sessions: the violating history is rendered in %s\n", *viz)
		}
		return errors.New("a session history is not linearizable")
	default:
		return errors.New("the checker timed out")
	}
}

// sessionStats counts what the clients did.
type sessionStats struct {
	moves      atomic.Int64 // deliberate moves to a (random) instance after an operation
	reconnects atomic.Int64 // connections made again after an operation of unknown outcome
	retries    atomic.Int64 // connection attempts that failed (instance down, CONNECT refused)
	logged     atomic.Int64
}

// printFirstViolation prints, for the first clients whose histories break the model (each client's history is
// checked alone with Porcupine, which is exact: the model is partitioned by client), the operations up to the
// first one that breaks a replay in call order. A client's operations overlap only with those of unknown
// outcome, which the replay applies both ways (took effect there, or never); that is narrower than
// Porcupine's "any time after the call", so the replay may point at an operation later than the real
// culprit, or at none — the rendered history is the reference.
func printFirstViolation(history []porcupine.Operation) {
	bad, printed := 0, 0
	defer func() { fmt.Printf("sessions: %d clients' histories break the model\n", bad) }()
	by := map[int][]porcupine.Operation{}
	for _, op := range history {
		by[op.ClientId] = append(by[op.ClientId], op)
	}
	for id, ops := range by {
		if porcupine.CheckOperations(sessionModel, ops) {
			continue
		}
		bad++
		if printed == 3 { // the first three
			continue
		}
		printed++
		slices.SortFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		states := []sessionState{sessionModel.Init().(sessionState)}
		found := false
		for i, op := range ops {
			var next []sessionState
			_, unk := op.Output.(unknown)
			for _, s := range states {
				if unk {
					next = append(next, s)
				}
				if ok, n := sessionModel.Step(s, op.Input, op.Output); ok && !slices.Contains(next, n.(sessionState)) {
					next = append(next, n.(sessionState))
				}
			}
			if len(next) > 0 {
				states = next
				continue
			}
			fmt.Printf("sessions: client %d breaks the model at operation %d of %d:\n", id, i, len(ops))
			from := max(0, i-8)
			if in := op.Input.(sessionOp); in.kind != 'c' { // back to the last operation on the same filter
				for j := i - 1; j >= 0 && j > i-200; j-- {
					if pin := ops[j].Input.(sessionOp); pin.kind != 'c' && pin.f == in.f {
						from = min(from, max(0, j-2))
						break
					}
				}
			}
			for _, p := range ops[from : i+1] {
				fmt.Printf("  %9.3fms–%9.3fms  %s\n", float64(p.Call)/1e6, float64(p.Return)/1e6,
					sessionModel.DescribeOperation(p.Input, p.Output))
			}
			for _, s := range states {
				fmt.Printf("  model before the last one: %s\n", sessionModel.DescribeState(s))
			}
			found = true
			break
		}
		if !found {
			fmt.Printf("sessions: client %d's history is not linearizable, but no replay in call order breaks "+
				"(an operation of unknown outcome took effect late): see the rendering\n", id)
		}
	}
}

// sessionOp is an operation's input: a CONNECT (clean start or not), a SUBSCRIBE or an UNSUBSCRIBE of filter f.
type sessionOp struct {
	kind  byte // 'c' connect, 's' subscribe, 'u' unsubscribe
	clean bool
	f     int
	addr  string
	after string // connect: how the previous connection ended, for the printouts ("closed", "failed"); not in the model
	v3    bool   // sent by an MQTT 3.1.1 client, for the printouts
}

// sessionState is a client's session as the checker models it; subs is a bit per filter.
type sessionState struct {
	exists bool
	subs   uint64
}

// The output of a connect is Session Present; of an unsubscribe, whether the subscription existed; of a
// subscribe, true.
var sessionModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[int][]porcupine.Operation{}
		for _, op := range h {
			by[op.ClientId] = append(by[op.ClientId], op)
		}
		out := make([][]porcupine.Operation, 0, len(by))
		for _, ops := range by {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return sessionState{} },
	Step: func(state, input, output any) (bool, any) {
		s, in := state.(sessionState), input.(sessionOp)
		_, unk := output.(unknown)
		_, dn := output.(done)
		out, _ := output.(bool)
		switch in.kind {
		case 'c':
			ok := unk || out == (s.exists && !in.clean) // [MQTT-3.2.2-2] / [MQTT-3.2.2-3]
			if in.clean {
				s.subs = 0
			}
			s.exists = true
			return ok, s
		case 's':
			s.subs |= 1 << in.f
			return true, s
		default:
			ok := unk || dn || out == (s.subs&(1<<in.f) != 0)
			s.subs &^= 1 << in.f
			return ok, s
		}
	},
	Equal: func(a, b any) bool { return a.(sessionState) == b.(sessionState) },
	DescribeOperation: func(input, output any) string {
		in := input.(sessionOp)
		switch in.kind {
		case 'c':
			after := ""
			if in.after != "" {
				after = " (previous connection " + in.after + ")"
			}
			v := ""
			if in.v3 {
				v = " (v3.1.1)"
			}
			return fmt.Sprintf("connect%s %s clean=%v → present=%s%s", v, in.addr, in.clean, outString(output), after)
		case 's':
			if _, unk := output.(unknown); unk {
				return fmt.Sprintf("subscribe f%d → unknown (on %s)", in.f, in.addr)
			}
			return fmt.Sprintf("subscribe f%d (on %s)", in.f, in.addr)
		default:
			return fmt.Sprintf("unsubscribe f%d → existed=%s (on %s)", in.f, outString(output), in.addr)
		}
	},
	DescribeState: func(state any) string {
		s := state.(sessionState)
		return fmt.Sprintf("exists=%v subs=%d filters (%b)", s.exists, bits.OnesCount64(s.subs), s.subs)
	},
}

func outString(output any) string {
	if _, unk := output.(unknown); unk {
		return "unknown"
	}
	if _, dn := output.(done); dn {
		return "done (v3.1.1: UNSUBACK says nothing)"
	}
	return fmt.Sprint(output)
}

// hopper is one client moving between instances.
type hopper struct {
	id         string
	n          int
	addrs      []string
	filters    int
	think      time.Duration
	after      string // how the current connection was ended before the next connect, if it was
	closeEvery int
	t0         time.Time
	c          *paho.Client
	nc         net.Conn
	addr       string // of the current connection
	ops        []porcupine.Operation
	led        *ledger // deliveries; h is a carrier if led.carrier(n)
	carrier    bool
	conns      int    // connections opened, for the ledger's receipts
	v3         bool   // an MQTT 3.1.1 client (sessions_v3.go)
	m          *mconn // its connection
	pid        uint16 // its last packet id
}

func (h *hopper) now() int64 { return int64(time.Since(h.t0)) }

func (h *hopper) record(in sessionOp, call int64, out bool) {
	h.ops = append(h.ops, porcupine.Operation{ClientId: h.n, Input: in, Call: call, Output: out, Return: h.now()})
}

// recordUnknown records an operation whose outcome is unknown; its return is moved to the end of the history
// by unknownOutcomes once every client is done.
func (h *hopper) recordUnknown(in sessionOp, call int64) {
	h.ops = append(h.ops, porcupine.Operation{ClientId: h.n, Input: in, Call: call, Output: unknown{}, Return: -1})
}

// unknown is the output of an operation whose outcome is unknown: the model accepts it from any state and
// applies the operation's effect, and its return is after every other event of the history, so the checker
// may place it anywhere after its call — including after everything else, where it changes nothing any
// other operation observed. This is how Porcupine (and Jepsen) model a crashed or timed-out call.
type unknown struct{}

// unknownOutcomes gives every operation of unknown outcome a return after every other event of the history,
// and reports how many there are.
func unknownOutcomes(history []porcupine.Operation) int {
	var end int64
	for _, op := range history {
		end = max(end, op.Call, op.Return)
	}
	n := 0
	for i := range history {
		if _, ok := history[i].Output.(unknown); ok {
			n++
			history[i].Return = end + int64(n)
		}
	}
	return n
}

// run hops until deadline and returns the client's history. An operation that fails because its connection
// broke — its instance was killed, or it did not answer in time — has an unknown outcome: it is recorded with
// the output unknown, which the model accepts, and a return at the end of the history (see unknownOutcomes),
// so Porcupine may linearize it at any point after its call, which includes "never took effect". The client
// then closes that connection and connects again, to an instance picked at random, retrying with back-off
// while instances are down or refuse the CONNECT (0x88 while they cannot read the sessions topic).
func (h *hopper) run(deadline time.Time, hopEvery int, st *sessionStats) ([]porcupine.Operation, error) {
	defer func() {
		if h.c != nil {
			_ = h.c.Disconnect(&paho.Disconnect{})
			h.c, h.nc = nil, nil
		}
		if h.m != nil {
			_ = h.m.write(wire.AppendDisconnect(nil))
			h.m.close()
			h.m, h.nc = nil, nil
		}
	}()
	if !h.reconnect(deadline, true, st) {
		return h.ops, errors.New("no instance accepted the first CONNECT before the deadline")
	}
	if h.carrier && !h.setupCarrier(deadline, st) {
		return h.ops, errors.New("the delivery topics' SUBSCRIBE did not succeed before the deadline")
	}
	for time.Now().Before(deadline) {
		if h.think > 0 {
			time.Sleep(rand.N(h.think))
		}
		f := rand.IntN(h.filters)
		var err error
		switch r := rand.IntN(10); {
		case r < 5:
			err = h.subscribe(f)
		default:
			err = h.unsubscribe(f)
		}
		if err == nil && rand.IntN(hopEvery) == 0 {
			st.moves.Add(1)
			if h.closeEvery > 0 && rand.IntN(h.closeEvery) == 0 {
				h.nc.Close() // the server sees the socket end, then at once a CONNECT elsewhere
				h.after = "closed"
			}
			// No pause: within a millisecond. A carrier never starts clean again (its delivery subscriptions).
			err = h.connect(h.addrs[rand.IntN(len(h.addrs))], !h.carrier && rand.IntN(20) == 0)
		}
		if err != nil {
			if st.logged.Add(1) <= 20 { // a failed dial sent nothing; anything else is recorded as unknown
				fmt.Fprintf(os.Stderr, "client %s: %v (connecting again)\n", h.id, err)
			}
			if !h.reconnect(deadline, false, st) {
				break
			}
			st.reconnects.Add(1)
		}
	}
	return h.ops, nil
}

// reconnect closes the current connection, if any, and connects to instances picked at random until one
// answers CONNACK 0x00 or the deadline passes; a CONNECT that was sent but not accepted is recorded with an
// unknown outcome by connect. It reports whether the client is connected.
func (h *hopper) reconnect(deadline time.Time, clean bool, st *sessionStats) bool {
	if h.nc != nil {
		h.nc.Close()
		h.c, h.nc, h.m = nil, nil, nil
		h.after = "failed"
	}
	backoff := 50 * time.Millisecond
	for time.Now().Before(deadline) {
		err := h.connect(h.addrs[rand.IntN(len(h.addrs))], clean)
		if err == nil {
			return true
		}
		st.retries.Add(1)
		time.Sleep(backoff/2 + rand.N(backoff))
		backoff = min(2*backoff, 2*time.Second)
	}
	return false
}

// connect opens a new connection for the client; the one it replaces is left to be taken over (0x8E). A
// failed dial sends nothing and records nothing; a CONNECT sent and then refused, or left without a CONNACK,
// is recorded with an unknown outcome: Ferry may have written its record before refusing (docs/sessions.md,
// "Consistency", 3).
func (h *hopper) connect(addr string, clean bool) error {
	if h.v3 {
		return h.connectV3(addr)
	}
	in := sessionOp{kind: 'c', clean: clean, addr: addr, after: h.after}
	call := h.now()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	h.conns++
	conn := h.conns
	c := paho.NewClient(paho.ClientConfig{Conn: nc, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			h.led.receive(h.n, conn, addr, time.Since(h.t0), pr.Packet)
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: h.id, CleanStart: clean, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: ptr(uint32(3600))}})
	if err != nil || ca.ReasonCode != 0 {
		nc.Close()
		h.recordUnknown(in, call)
		h.after = ""
		if err == nil {
			err = fmt.Errorf("reason %#x", ca.ReasonCode)
		}
		return fmt.Errorf("connect to %s: %w", addr, err)
	}
	h.record(in, call, ca.SessionPresent)
	h.after = ""
	h.c, h.nc, h.addr = c, nc, addr // the previous client is closed by the server (taken over); paho ends it then
	return nil
}

func (h *hopper) subscribe(f int) error {
	if h.v3 {
		return h.subscribeV3(f)
	}
	in := sessionOp{kind: 's', f: f, addr: h.addr}
	call := h.now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sa, err := h.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: h.filter(f), QoS: 1}}})
	if err != nil {
		h.recordUnknown(in, call)
		return fmt.Errorf("subscribe on %s: %w", h.addr, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] > 2 {
		h.recordUnknown(in, call)
		return fmt.Errorf("subscribe refused on %s: %v", h.addr, sa.Reasons)
	}
	h.record(in, call, true)
	return nil
}

func (h *hopper) unsubscribe(f int) error {
	if h.v3 {
		return h.unsubscribeV3(f)
	}
	in := sessionOp{kind: 'u', f: f, addr: h.addr}
	call := h.now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ua, err := h.c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{h.filter(f)}})
	if err != nil && (ua == nil || len(ua.Reasons) != 1) {
		h.recordUnknown(in, call)
		return fmt.Errorf("unsubscribe on %s: %w", h.addr, err)
	}
	switch ua.Reasons[0] {
	case 0x00:
		h.record(in, call, true)
	case 0x11: // No subscription existed
		h.record(in, call, false)
	default:
		h.recordUnknown(in, call)
		return fmt.Errorf("unsubscribe refused on %s: %#x", h.addr, ua.Reasons[0])
	}
	return nil
}

func (h *hopper) filter(f int) string { return fmt.Sprintf("hist/%s/%d", h.id, f) }

func ptr[T any](v T) *T { return &v }
