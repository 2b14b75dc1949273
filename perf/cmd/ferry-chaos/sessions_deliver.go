package main

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Deliveries (issue 15: "every acknowledged QoS 1/2 message to a persistent subscriber is delivered after it
// comes back, QoS 2 at most once"). A share of the hoppers are carriers: right after their first CONNECT they
// subscribe to two topics of their own, hist/<id>/d1 at QoS 1 and hist/<id>/d2 at QoS 2, and keep both for
// the whole run — they never unsubscribe them and never connect with Clean Start 1 again, so their session
// holds both subscriptions from the SUBACK on, wherever they move. Publishers on connections of their own
// publish numbered messages (QoS 1 to d1, QoS 2 to d2) to carriers whose SUBACK has arrived. After the run
// every carrier connects once more (Clean Start 0) and drains. Then, per carrier and topic:
//
//   - every message whose PUBACK/PUBCOMP (reason < 0x80) the publisher got must have been delivered — on any
//     connection, during the run or the drain; one that never came is lost (a violation);
//   - a QoS 2 message may be delivered once. A second delivery is allowed only as the retransmission MQTT
//     requires of a PUBLISH whose PUBREC the server may not have had: DUP set, the same packet id, on a later
//     connection than the delivery before it (the client here opens a new paho client per connection and so
//     does not keep the received packet ids a real QoS 2 receiver keeps; this is the lenient side of the
//     judgement: a server that resent a PUBLISH it had the PUBREC of, with DUP and the same id, after a
//     reconnect, is not caught). Any other second delivery is a violation, also after the instance of the
//     first was killed (counted in deliveryCounts.afterKill as well);
//   - QoS 1 duplicates are allowed and counted;
//   - a message whose publish had an unknown outcome (its connection broke, no answer in time) may or may not
//     arrive; a delivered message never published at all is a violation.
type ledger struct {
	carriers []*carrierLog // by client number; nil if the client is not a carrier
	ready    []int         // client numbers of the carriers
}

// carrierLog is what was published to one carrier and what it received; index 0 of the arrays is unused.
type carrierLog struct {
	ready atomic.Bool // its SUBACK for d1 and d2 arrived
	mu    sync.Mutex
	pub   [3][]pubOutcome
	got   [3]map[int][]receipt
	acked [3]int
	recvd [3]int // acked messages received at least once
}

type pubOutcome byte

const (
	pubUnknown pubOutcome = iota // in flight, or its connection broke, or no answer in time
	pubAcked                     // PUBACK / PUBCOMP with a reason < 0x80
	pubRefused                   // a reason ≥ 0x80: the server did not take it
)

type receipt struct {
	conn int // the carrier's connection number
	pid  uint16
	dup  bool
	at   int64  // ms since the run began
	addr string // the instance
}

func newLedger(clients, carrierEvery int) *ledger {
	l := &ledger{carriers: make([]*carrierLog, clients)}
	if carrierEvery <= 0 {
		return l
	}
	for n := 0; n < clients; n += carrierEvery {
		l.carriers[n] = &carrierLog{got: [3]map[int][]receipt{nil, {}, {}}}
		l.ready = append(l.ready, n)
	}
	return l
}

func (l *ledger) carrier(n int) bool { return l.carriers[n] != nil }

// next reserves the number of the next message to carrier n at qos.
func (l *ledger) next(n int, qos byte) int {
	c := l.carriers[n]
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pub[qos] = append(c.pub[qos], pubUnknown)
	return len(c.pub[qos]) - 1
}

func (l *ledger) outcome(n int, qos byte, seq int, o pubOutcome) {
	c := l.carriers[n]
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pub[qos][seq] = o
	if o == pubAcked {
		c.acked[qos]++
		if len(c.got[qos][seq]) > 0 {
			c.recvd[qos]++
		}
	}
}

// receive records a delivery to carrier n. It runs on a paho goroutine of the carrier's connection.
func (l *ledger) receive(n, conn int, addr string, at time.Duration, p *paho.Publish) {
	c := l.carriers[n]
	i := strings.LastIndex(p.Topic, "/d")
	if c == nil || i < 0 {
		return
	}
	qos, _ := strconv.Atoi(p.Topic[i+2:])
	seq, err := strconv.Atoi(string(p.Payload))
	if (qos != 1 && qos != 2) || err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.got[qos][seq]) == 0 && seq < len(c.pub[qos]) && c.pub[qos][seq] == pubAcked {
		c.recvd[qos]++
	}
	c.got[qos][seq] = append(c.got[qos][seq], receipt{conn: conn, pid: p.PacketID, dup: p.Duplicate(),
		at: at.Milliseconds(), addr: addr})
}

// drained reports whether carrier n has received every acknowledged message.
func (l *ledger) drained(n int) bool {
	c := l.carriers[n]
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recvd[1] == c.acked[1] && c.recvd[2] == c.acked[2]
}

// deliveryCounts are the ledger's figures once the run is over.
type deliveryCounts struct {
	published, acked, unknown, refused [3]int
	delivered, lost, unknownDelivered  [3]int
	duplicates, retransmitted, phantom [3]int // duplicates: QoS 1 extra deliveries, or QoS 2 ones
	// afterKill counts the QoS 2 duplicates whose earlier delivery was made by an instance killed within 2.5 s
	// after it (its sentinel broke): each is a violation too. Ferry once resumed such a session from a delivery
	// record that did not know the PUBLISH and sent the message again as new, against [MQTT-4.4.0-1] (16–18 per
	// long run); the count says whether a violation has that shape.
	afterKill       int
	firstViolations []string
	violations      int
}

func (l *ledger) check(ids func(int) string, k *kills) deliveryCounts {
	var d deliveryCounts
	bad := func(format string, args ...any) {
		d.violations++
		if len(d.firstViolations) < 10 {
			d.firstViolations = append(d.firstViolations, fmt.Sprintf(format, args...))
		}
	}
	for n, c := range l.carriers {
		if c == nil {
			continue
		}
		c.mu.Lock()
		for q := 1; q <= 2; q++ {
			for seq, o := range c.pub[q] {
				// By connection: a connection being replaced may still hand a message to its handler after
				// the next one has handed over the retransmission.
				got := c.got[q][seq]
				slices.SortStableFunc(got, func(a, b receipt) int { return cmp.Compare(a.conn, b.conn) })
				d.published[q]++
				switch o {
				case pubAcked:
					d.acked[q]++
					if len(got) == 0 {
						d.lost[q]++
						bad("client %s: QoS %d message %d acknowledged to the publisher, never delivered", ids(n), q, seq)
					} else {
						d.delivered[q]++
					}
				case pubRefused:
					d.refused[q]++
				default:
					d.unknown[q]++
					if len(got) > 0 {
						d.unknownDelivered[q]++
					}
				}
				for i := 1; i < len(got); i++ {
					if q == 1 {
						d.duplicates[q]++
						continue
					}
					if p, r := got[i-1], got[i]; r.dup && r.pid == p.pid && r.conn > p.conn {
						d.retransmitted[q]++
						continue
					}
					d.duplicates[q]++
					if p := got[i-1]; k.near(p.addr, (p.at-50)*1e6, (p.at+2500)*1e6) {
						d.afterKill++ // see afterKill
					}
					bad("client %s: QoS 2 message %d delivered %d times: %+v", ids(n), seq, len(got), got)
				}
			}
			for seq, got := range c.got[q] {
				if seq >= len(c.pub[q]) {
					d.phantom[q]++
					bad("client %s: QoS %d message %d delivered (%+v), never published", ids(n), q, seq, got)
				}
			}
		}
		c.mu.Unlock()
	}
	return d
}

func (d deliveryCounts) String() string {
	var b strings.Builder
	for q := 1; q <= 2; q++ {
		fmt.Fprintf(&b, "QoS %d: %d published, %d acknowledged, %d delivered, %d lost, %d duplicated", q,
			d.published[q], d.acked[q], d.delivered[q], d.lost[q], d.duplicates[q])
		if q == 2 {
			fmt.Fprintf(&b, " (%d of them after a kill of the delivering instance; %d retransmissions after a reconnect)",
				d.afterKill, d.retransmitted[q])
		}
		fmt.Fprintf(&b, ", %d of unknown outcome (%d of them delivered), %d refused; ", d.unknown[q], d.unknownDelivered[q], d.refused[q])
	}
	fmt.Fprintf(&b, "%d delivery violations", d.violations)
	return b.String()
}

// publisher publishes numbered messages at qos to carriers picked at random, about rate a second, until
// deadline; a message whose connection broke before its PUBACK/PUBCOMP keeps an unknown outcome, and the
// publisher connects again elsewhere (Clean Start 1: it keeps no session).
func (l *ledger) publisher(id string, qos byte, rate float64, addrs []string, deadline time.Time, ids func(int) string) {
	var c *paho.Client
	var nc net.Conn
	defer func() {
		if c != nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
	}()
	connect := func() bool {
		backoff := 50 * time.Millisecond
		for time.Now().Before(deadline) {
			var err error
			nc, err = net.DialTimeout("tcp", addrs[rand.IntN(len(addrs))], 5*time.Second)
			if err == nil {
				c = paho.NewClient(paho.ClientConfig{Conn: nc})
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				var ca *paho.Connack
				ca, err = c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
				cancel()
				if err == nil && ca.ReasonCode == 0 {
					return true
				}
				nc.Close()
				c = nil
			}
			time.Sleep(backoff/2 + rand.N(backoff))
			backoff = min(2*backoff, 2*time.Second)
		}
		return false
	}
	if !connect() {
		return
	}
	every := time.Duration(float64(time.Second) / rate)
	for next := time.Now(); time.Now().Before(deadline); {
		time.Sleep(time.Until(next))
		next = next.Add(every)
		n := l.ready[rand.IntN(len(l.ready))]
		if !l.carriers[n].ready.Load() {
			continue
		}
		seq := l.next(n, qos)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		pr, err := c.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("hist/%s/d%d", ids(n), qos), QoS: qos,
			Payload: []byte(strconv.Itoa(seq))})
		cancel()
		if err != nil {
			if pr != nil && pr.ReasonCode >= 0x80 {
				l.outcome(n, qos, seq, pubRefused)
				continue
			}
			fmt.Fprintf(os.Stderr, "publisher %s: %v (connecting again)\n", id, err)
			nc.Close()
			c = nil
			if !connect() {
				return
			}
			continue
		}
		l.outcome(n, qos, seq, pubAcked)
	}
}

// setupCarrier subscribes a carrier to its two delivery topics, connecting again while the SUBSCRIBE fails.
func (h *hopper) setupCarrier(deadline time.Time, st *sessionStats) bool {
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		sa, err := h.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
			{Topic: fmt.Sprintf("hist/%s/d1", h.id), QoS: 1}, {Topic: fmt.Sprintf("hist/%s/d2", h.id), QoS: 2}}})
		cancel()
		if err == nil && len(sa.Reasons) == 2 && sa.Reasons[0] == 1 && sa.Reasons[1] == 2 {
			h.led.carriers[h.n].ready.Store(true)
			return true
		}
		fmt.Fprintf(os.Stderr, "client %s: delivery SUBSCRIBE failed: %v %v\n", h.id, err, sa)
		if !h.reconnect(deadline, false, st) {
			return false
		}
	}
	return false
}

// drain connects a carrier once more (Clean Start 0, recorded in its history like any CONNECT) and waits until
// it has every acknowledged message, or until deadline.
func (h *hopper) drain(deadline time.Time, st *sessionStats) error {
	if !h.reconnect(deadline, false, st) {
		return fmt.Errorf("client %s: no instance accepted the drain's CONNECT", h.id)
	}
	for !h.led.drained(h.n) && time.Now().Before(deadline) {
		select {
		case <-h.c.Done():
			if !h.reconnect(deadline, false, st) {
				return fmt.Errorf("client %s: no instance accepted the drain's CONNECT", h.id)
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	time.Sleep(500 * time.Millisecond) // room for a duplicate
	_ = h.c.Disconnect(&paho.Disconnect{})
	h.c, h.nc = nil, nil
	return nil
}
