package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Wills (issue 15: "each will is published at most once, and exactly once unless the client came back in
// time"). Will clients (MQTT 5, Session Expiry 3600 s; for the clients without a Will Delay, 0 in one life of
// --will-clean-every, so that a life's end tombstones the owner record — late, at times, after the next life's
// CONNECT elsewhere: docs/sessions.md, "Late records") connect again and again, each connection — a life —
// with a will of its own: topic hist/<run>/will/<w>, payload the life's number, QoS 2, and a Will Delay of 0
// (even w) or --will-delay (odd w). A life ends after a short while in one of three ways: a normal DISCONNECT,
// the client closing the socket, or the connection breaking by itself (its instance was killed). The client
// then comes back at once (within 100 ms, unless instances are down) or, one time in three, only after its will
// is due: the delay plus the death bound (willBound) — for a will of delay 0 after a closed socket, 1.5 s. A
// sentinel connection per instance (kills) tells when an instance was killed. After the run the checker waits
// until the last will is due and counts the wills where they are published: the records of the will topics in
// Kafka's messages topic (read_committed; counting deliveries to a subscriber would mix in the subscriber's
// own duplicates). Per life:
//
//   - at most once, always;
//   - never, after a normal DISCONNECT the client sent — unless a sentinel saw that instance break from 1 s
//     before the DISCONNECT to 3 s after the client closed the socket (then the DISCONNECT may not have been
//     read, or its effect not written: at most once);
//   - exactly once after an abnormal end with a Will Delay of 0 [MQTT-3.1.2-8], even if the client came back at
//     once (see quick: these lives are counted too);
//   - with a Will Delay D: never if the client's next CONNECT was answered within D − 1 s of the end it saw
//     (the server saw the end no earlier, a killed instance no earlier than 1 s before); exactly once if no
//     CONNECT was even sent before D + willBound + 2 s after the end, or never again; in between, at most once;
//   - a CONNECT sent but not accepted (refused, no CONNACK) may have set its will: at most once.
//
// Not judged: when a will is published (only whether), and the will's content or QoS beyond its payload.
type willWatch struct {
	mu    sync.Mutex
	t0    time.Time
	got   map[[2]int]int // (client, life) → records of its will in Kafka
	k     *kills
	lives [][]willLife // by client
}

// willBound is how long a killed instance's clients may wait for their wills (docs/sessions.md: the
// documented default bound on noticing an instance's death).
const willBound = 10 * time.Second

type willLife struct {
	delay     time.Duration
	addr      string
	end       byte  // 'n' normal DISCONNECT, 'c' closed by the client, 'b' broke by itself, 'f' CONNECT not accepted, 'd' DISCONNECT failed
	endAt     int64 // ns since t0: when the client saw the end (for 'n', when it sent the DISCONNECT)
	closedAt  int64 // 'n': when the client's side of the connection was closed after the DISCONNECT
	nextCall  int64 // the next CONNECT sent (0: none)
	nextReady int64 // the next CONNECT accepted (0: none)
}

func (w *willWatch) now() int64 { return int64(time.Since(w.t0)) }

// dialPaho opens a connection to addr and sends c; an error means no CONNACK 0x00, and sent says whether the
// CONNECT was written (the dial succeeded).
func dialPaho(addr string, cfg paho.ClientConfig, c *paho.Connect) (*paho.Client, bool, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, false, err
	}
	cfg.Conn = nc
	pc := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ca, err := pc.Connect(ctx, c)
	if err == nil && ca.ReasonCode != 0 {
		err = fmt.Errorf("CONNACK reason %#x", ca.ReasonCode)
	}
	if err != nil {
		nc.Close()
		return nil, true, err
	}
	return pc, true, nil
}

// willClient is will client n's lives until deadline.
func (w *willWatch) willClient(n int, run string, addrs []string, delay time.Duration, cleanEvery int, deadline time.Time) {
	if n%2 == 0 {
		delay = 0
	}
	id := fmt.Sprintf("will-%s-%d", run, n)
	var lives []willLife
	defer func() {
		w.mu.Lock()
		w.lives[n] = lives
		w.mu.Unlock()
	}()
	var nc net.Conn
	clean := true
	for time.Now().Before(deadline) {
		// A life: connect with a will of its own.
		life := len(lives)
		addr := addrs[rand.IntN(len(addrs))]
		call := w.now()
		var err error
		nc, err = net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			time.Sleep(50*time.Millisecond + rand.N(100*time.Millisecond))
			continue
		}
		if life > 0 && lives[life-1].nextCall == 0 {
			lives[life-1].nextCall = call
		}
		c := paho.NewClient(paho.ClientConfig{Conn: nc})
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		expiry := uint32(3600)
		if n%2 == 0 && cleanEvery > 0 && life%cleanEvery == cleanEvery-1 {
			expiry = 0 // the session ends with the life: its end tombstones the owner record (late, at times)
		}
		ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30,
			WillMessage:    &paho.WillMessage{Topic: fmt.Sprintf("hist/%s/will/%d", run, n), QoS: 2, Payload: []byte(strconv.Itoa(life))},
			WillProperties: &paho.WillProperties{WillDelayInterval: ptr(uint32(delay / time.Second))},
			Properties:     &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		cancel()
		lives = append(lives, willLife{delay: delay, addr: addr})
		l := &lives[life]
		if err != nil || ca.ReasonCode != 0 {
			nc.Close()
			l.end, l.endAt = 'f', w.now()
			time.Sleep(50*time.Millisecond + rand.N(100*time.Millisecond))
			continue
		}
		clean = false
		if life > 0 {
			lives[life-1].nextReady = w.now()
		}
		// Live a while, then end.
		select {
		case <-c.Done():
			l.end, l.endAt = 'b', w.now()
		case <-time.After(200*time.Millisecond + rand.N(1300*time.Millisecond)):
			if r := rand.IntN(3); r == 0 || !time.Now().Before(deadline) {
				l.endAt = w.now()
				if err := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
					l.end = 'd'
				} else {
					l.end = 'n'
				}
				select {
				case <-c.Done():
				case <-time.After(2 * time.Second):
					l.end = 'd'
				}
				nc.Close()
				l.closedAt = w.now()
			} else {
				nc.Close()
				l.end, l.endAt = 'c', w.now()
			}
		}
		// Come back at once, or (one time in three) only after the will is due.
		if rand.IntN(3) == 0 {
			away := delay + willBound + 3*time.Second
			if delay == 0 && l.end != 'b' {
				away = quick(l.end) + 500*time.Millisecond
			}
			time.Sleep(max(0, min(away, time.Until(deadline)))) // never coming back is as late
		} else {
			time.Sleep(rand.N(100 * time.Millisecond))
		}
	}
}

// willCounts are the wills' figures.
type willCounts struct {
	lives, published               int
	quickReturns, quickUnpublished int
	ends                           map[byte]int
	mustOnce, mustNot, atMostOnce  int
	violations                     int
	firstViolations                []string
}

// quick is how soon after an abnormal end a client that comes back with a Will Delay of 0 has come back "at
// once": before the instance that held it has written the connection's end record (it notices a closed socket
// at once, a killed instance's connections only when the death is noticed). MQTT 5 orders by the client's
// real time: the connection closed, the delay (0) passed, so the will is due even if a new connection follows
// 2 ms later, and a takeover publishes it too (§3.1.4). Ferry once decided by the order of the records in the
// sessions topic, so a new CONNECT whose record landed before the end record cancelled the will (9–15 of about
// 210 such lives per 3 min run). They are judged exactly once like any other, and counted apart to show how
// many the run had.
func quick(end byte) time.Duration {
	if end == 'b' {
		return willBound + 2*time.Second
	}
	return time.Second
}

func (w *willWatch) check(run string) willCounts {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := willCounts{ends: map[byte]int{}}
	bad := func(format string, args ...any) {
		d.violations++
		if len(d.firstViolations) < 10 {
			d.firstViolations = append(d.firstViolations, fmt.Sprintf(format, args...))
		}
	}
	brokeNear := func(addr string, from, to int64) bool {
		return w.k.near(addr, from-int64(time.Second), to+int64(3*time.Second))
	}
	for n, lives := range w.lives {
		for life, l := range lives {
			d.lives++
			d.ends[l.end]++
			pubs := w.got[[2]int{n, life}]
			d.published += pubs
			want := "at most once"
			switch {
			case l.end == 'f' || l.end == 'd':
			case l.end == 'n':
				if !brokeNear(l.addr, l.endAt, l.closedAt) {
					want = "never"
				}
			case l.delay == 0:
				want = "exactly once"
				if l.nextCall != 0 && l.nextCall-l.endAt < int64(quick(l.end)) { // came back at once: see quick
					d.quickReturns++
					if pubs == 0 {
						d.quickUnpublished++
					}
				}
			case l.nextReady != 0 && l.nextReady-l.endAt < int64(l.delay-time.Second):
				want = "never"
			case l.nextCall == 0 || l.nextCall-l.endAt > int64(l.delay+willBound+2*time.Second):
				want = "exactly once"
			}
			switch want {
			case "never":
				d.mustNot++
			case "exactly once":
				d.mustOnce++
			default:
				d.atMostOnce++
			}
			if pubs > 1 || (want == "never" && pubs > 0) || (want == "exactly once" && pubs == 0) {
				bad("will-%s-%d life %d (%s): will published %d times, want %s", run, n, life, l, pubs, want)
			}
		}
	}
	for k, got := range w.got {
		if k[0] >= len(w.lives) || k[1] >= len(w.lives[k[0]]) {
			bad("will-%s-%d: a will of life %d, which never was, published %d times", run, k[0], k[1], got)
		}
	}
	return d
}

func (d willCounts) String() string {
	return fmt.Sprintf("%d lives (%d ended by a normal DISCONNECT, %d closed by the client, %d broke, %d CONNECTs not accepted, %d DISCONNECTs unconfirmed); "+
		"%d wills published (records in Kafka); judged: %d exactly once (of which %d with a Will Delay of 0 whose client came back at once, %d of those not published), %d never, %d at most once; %d will violations",
		d.lives, d.ends['n'], d.ends['c'], d.ends['b'], d.ends['f'], d.ends['d'], d.published,
		d.mustOnce, d.quickReturns, d.quickUnpublished, d.mustNot, d.atMostOnce, d.violations)
}

// runWills runs the will clients until deadline, waits until the last will is due, and counts the wills in
// Kafka's messages topic.
func runWills(clients int, run string, addrs []string, delay time.Duration, cleanEvery int, deadline, t0 time.Time, broker, topic string, k *kills) (willCounts, error) {
	w := &willWatch{t0: t0, got: map[[2]int]int{}, k: k, lives: make([][]willLife, clients)}
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); w.willClient(i, run, addrs, delay, cleanEvery, deadline) }()
	}
	wg.Wait()
	time.Sleep(delay + willBound + 2*time.Second) // the last will due: a normal DISCONNECT's instance killed at once
	prefix := "hist/" + run + "/will/"
	sc, err := scanKafka(broker, topic, prefix, 3*time.Minute, func(r *kgo.Record) {
		n, err1 := strconv.Atoi(string(r.Key[len(prefix):]))
		life, err2 := strconv.Atoi(string(r.Value))
		if err1 == nil && err2 == nil {
			w.got[[2]int{n, life}]++
		}
	})
	if err != nil {
		return willCounts{}, fmt.Errorf("cannot count the wills in kafka: %w", err)
	}
	if len(sc.errs) > 0 {
		return willCounts{}, fmt.Errorf("cannot count the wills in kafka: %v", sc.errs)
	}
	d := w.check(run)
	for _, v := range d.firstViolations {
		fmt.Fprintf(os.Stdout, "sessions: will violation: %s\n", v)
	}
	return d, nil
}

func (l willLife) String() string {
	ends := map[byte]string{'n': "normal DISCONNECT", 'c': "socket closed by the client", 'b': "connection broke",
		'f': "CONNECT not accepted", 'd': "DISCONNECT unconfirmed"}
	s := fmt.Sprintf("Will Delay %v, on %s, %s at %.3f s", l.delay, l.addr, ends[l.end], float64(l.endAt)/1e9)
	if l.nextCall != 0 {
		s += fmt.Sprintf(", next CONNECT sent at %.3f s", float64(l.nextCall)/1e9)
	}
	if l.nextReady != 0 {
		s += fmt.Sprintf(", accepted at %.3f s", float64(l.nextReady)/1e9)
	}
	return s
}
