package load

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/perf/internal/stats"
	"github.com/ferrymq/ferry/perf/internal/wire"
)

type slot struct {
	seq    uint64
	sentNs int64
	state  uint8 // 0 free, 1 awaiting PUBACK/PUBREC, 2 awaiting PUBCOMP
}

// pubState is a publisher's bookkeeping. seq and the payload buffer belong to
// the pubLoop goroutine; slots are shared with the reader under mu; acked is
// the reader's until the publisher has stopped and drained.
type pubState struct {
	c      *client
	gid    int
	topic  string
	qos    byte
	tokens chan struct{} // in-flight window; a token is taken per PUBLISH at QoS >= 1

	seq      uint64
	mu       sync.Mutex
	slots    []slot // by packet id
	acked    stats.SeqTracker
	inflight atomic.Int64
	ackLat   []int64 // reader goroutine only

	failOnce sync.Once
	failed   chan struct{}

	// QoS 0 flow control (Qos0Flow): every batch ends with a PINGREQ; the
	// batch's tokens return on its PINGRESP. A broker handles a connection's
	// packets in order, so a PINGRESP means it has taken in the PUBLISHes
	// before it: at most Window messages wait in the broker's input.
	pingMu    sync.Mutex
	pingBatch []int
}

func newPubState(c *client, gid int, cfg *WorkerConfig) *pubState {
	p := &pubState{
		c: c, gid: gid, qos: cfg.QoS,
		topic:  strings.ReplaceAll(cfg.PubTopic, "{i}", strconv.Itoa(gid)),
		failed: make(chan struct{}),
	}
	if p.qos > 0 || cfg.Qos0Flow {
		p.tokens = make(chan struct{}, cfg.Window)
		for i := 0; i < cfg.Window; i++ {
			p.tokens <- struct{}{}
		}
		p.slots = make([]slot, 65536)
	}
	return p
}

func (p *pubState) fail() { p.failOnce.Do(func() { close(p.failed) }) }

// pid maps a sequence number to a packet id 1..65535.
func pid(seq uint64) uint16 { return uint16(seq%65535) + 1 }

// run publishes until stop closes or the connection fails. Runs on the
// publisher's own goroutine.
func (p *pubState) run(start time.Time, stop <-chan struct{}) {
	w := p.c.w
	cfg := &w.cfg
	payload := make([]byte, cfg.PayloadSize)
	batchMax := cfg.BatchMax
	buf := make([]byte, 0, batchMax*(cfg.PayloadSize+len(p.topic)+8))
	rate := cfg.RatePerPub
	for {
		select {
		case <-stop:
			return
		case <-p.failed:
			return
		default:
		}
		n := batchMax
		if rate > 0 {
			allowed := int64(time.Since(start).Seconds()*rate) + 1 - int64(p.seq)
			if allowed <= 0 {
				next := start.Add(time.Duration(float64(p.seq) / rate * float64(time.Second)))
				t := time.NewTimer(time.Until(next))
				select {
				case <-stop:
					t.Stop()
					return
				case <-t.C:
				}
				continue
			}
			if allowed < int64(n) {
				n = int(allowed)
			}
		}
		if p.tokens != nil {
			select {
			case <-p.tokens:
			case <-stop:
				return
			case <-p.failed:
				return
			}
			got := 1
		more:
			for got < n {
				select {
				case <-p.tokens:
					got++
				default:
					break more
				}
			}
			n = got
		}
		buf = buf[:0]
		now := stats.NowNs()
		if p.qos > 0 {
			p.mu.Lock()
		}
		for i := 0; i < n; i++ {
			seq := p.seq
			p.seq++
			if cfg.JSONPayload {
				stats.PutJSONStamp(payload, stats.Stamp{SentNs: now, Pub: uint32(p.gid), Seq: seq})
			} else {
				stats.PutStamp(payload, stats.Stamp{SentNs: now, Pub: uint32(p.gid), Seq: seq})
			}
			var id uint16
			if p.qos > 0 {
				id = pid(seq)
				if p.slots[id].state != 0 {
					w.noteErr("packet id reused while in flight (window > 65535 or lost ack)")
				}
				p.slots[id] = slot{seq: seq, sentNs: now, state: 1}
			}
			buf = wire.AppendPublish(buf, p.topic, p.qos, false, false, id, payload)
		}
		if p.qos > 0 {
			p.mu.Unlock()
			p.inflight.Add(int64(n))
		} else if p.tokens != nil {
			buf = wire.AppendPingreq(buf)
			p.pingMu.Lock()
			p.pingBatch = append(p.pingBatch, n)
			p.pingMu.Unlock()
		}
		if err := p.c.write(buf); err != nil {
			if !p.c.closing.Load() {
				w.noteErr("publish write: " + errText(err))
			}
			p.fail()
			return
		}
		w.cnt.published.Add(int64(n))
	}
}

// onPong returns the tokens of the oldest unconfirmed QoS 0 batch. Runs on
// the reader goroutine.
func (p *pubState) onPong() {
	p.pingMu.Lock()
	if len(p.pingBatch) == 0 {
		p.pingMu.Unlock()
		return
	}
	n := p.pingBatch[0]
	p.pingBatch = p.pingBatch[1:]
	p.pingMu.Unlock()
	for i := 0; i < n; i++ {
		select {
		case p.tokens <- struct{}{}:
		default:
		}
	}
}

// onAck handles PUBACK, PUBREC and PUBCOMP. Runs on the reader goroutine.
func (p *pubState) onAck(typ byte, id uint16, now int64, acks []byte) []byte {
	if p.qos == 0 {
		return acks
	}
	p.mu.Lock()
	s := &p.slots[id]
	st := *s
	switch {
	case typ == wire.PUBACK && p.qos == 1 && st.state == 1,
		typ == wire.PUBREC && p.qos == 2 && st.state == 1:
		if typ == wire.PUBREC {
			s.state = 2
		} else {
			s.state = 0
		}
	case typ == wire.PUBCOMP && p.qos == 2 && st.state == 2:
		s.state = 0
	default:
		p.mu.Unlock()
		p.c.w.noteErr("unexpected acknowledgement (wrong type or unknown packet id)")
		return acks
	}
	p.mu.Unlock()
	if typ != wire.PUBCOMP {
		p.ackLat = append(p.ackLat, now-st.sentNs)
		p.acked.Add(st.seq)
		p.c.w.cnt.acked.Add(1)
	}
	if typ == wire.PUBREC {
		return wire.AppendAck(acks, wire.PUBREL, id)
	}
	p.inflight.Add(-1)
	select {
	case p.tokens <- struct{}{}:
	default:
	}
	return acks
}
