package server_test

import (
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/mqttcodec"
)

// fanoutFrames name the parts of a delivery: the shared reader's fan-out of a record to the matching sessions,
// the loop's run for the connections it made ready, the writing of a session's queued deliveries (from that
// run or from the subscriber's own traffic), and the subscriber's PUBACK.
var fanoutFrames = []string{"server.(*Server).fanOut", "server.(*loop).service", "server.(*conn).drain", "server.(*conn).onAck"}

// perRecordFrame is the one allocation site under fanoutFrames that is not per delivery: gnet's Execute, by
// which a record's fan-out wakes each loop once whatever its number of subscribers (loop.wake), allocates its
// closure and a queue node.
const perRecordFrame = "gnet/v2.(*eventloop).Execute"

// A record delivered at QoS 1 to many subscribers allocates nothing per delivery, on the reader (match, fold,
// queue) or on the loops (encode, write, the packet id in flight, the subscriber's PUBACK): counted from a
// memory profile that samples every allocation, over records fanned out to subscribers on real sockets. Each
// record's wake-up of a loop (gnet's Execute: two objects per loop, not per subscriber) is left out.
func TestFanoutDeliveryAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	f := startFerry(t)
	const subs = 40
	rs := make([]*raw, subs)
	for i := range rs {
		rs[i] = dialRaw(t, f.addr)
		rs[i].connect(mqttcodec.Version311, "fanallocs-"+strconv.Itoa(i))
		p := mqttcodec.Subscribe{PacketID: 1, Subs: []mqttcodec.Subscription{{Filter: []byte("fan/allocs"), QoS: 1}}}
		rs[i].send(mqttcodec.AppendSubscribe(nil, &p, mqttcodec.Version311))
		if fh, _ := rs[i].packet(); fh.Type != mqttcodec.SUBACK {
			t.Fatalf("got %s, want SUBACK", mqttcodec.TypeName(fh.Type))
		}
	}
	pub := dialRaw(t, f.addr)
	pub.connect(mqttcodec.Version311, "fanallocs-pub")
	payload := make([]byte, 64)
	next := uint16(0)
	// publish sends n records, burst at a time before the deliveries are read and acknowledged.
	publish := func(n, burst int) {
		for sent := 0; sent < n; sent += burst {
			for range burst {
				next++
				if next == 0 {
					next = 1
				}
				p := mqttcodec.Publish{Topic: []byte("fan/allocs"), QoS: 1, PacketID: next, Payload: payload}
				pub.send(mqttcodec.AppendPublish(nil, &p, mqttcodec.Version311))
			}
			for range burst {
				if fh, _ := pub.packet(); fh.Type != mqttcodec.PUBACK {
					t.Fatalf("got %s, want PUBACK", mqttcodec.TypeName(fh.Type))
				}
			}
			for _, r := range rs {
				for range burst {
					fh, body := r.packet()
					if fh.Type != mqttcodec.PUBLISH {
						t.Fatalf("subscriber got %s, want PUBLISH", mqttcodec.TypeName(fh.Type))
					}
					var d mqttcodec.Publish
					if err := d.Decode(fh, body, mqttcodec.Version311); err != nil {
						t.Fatal(err)
					}
					r.send(mqttcodec.AppendAck(nil, &mqttcodec.Ack{Type: mqttcodec.PUBACK, PacketID: d.PacketID}, mqttcodec.Version311))
				}
			}
		}
	}
	// Warm: queues, flight tables and buffers at their working size. Measured, a record goes out when the last
	// one's deliveries are read, and a subscriber's PUBACK can still be on its way when the next delivery is
	// written: the warm-up's bursts of four make room for more than that in every session's flight table once,
	// so its growth (amortised, once per session) does not land in a measured phase.
	publish(200, 4)
	publish(100, 1)

	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	gc := debug.SetGCPercent(-1)
	t.Cleanup(func() { runtime.MemProfileRate = old; debug.SetGCPercent(gc) })
	phase := func(n int) map[string]int64 {
		before := fanoutAllocs()
		publish(n, 1)
		after := fanoutAllocs()
		for k, v := range before {
			after[k] -= v
		}
		return after
	}
	const short, long = 100, 500
	a, b := phase(short), phase(long)
	var sites []string
	total := int64(0)
	for site, n := range b {
		d := n - a[site]
		if d <= 0 {
			continue
		}
		total += d
		sites = append(sites, strconv.FormatFloat(float64(d)/float64((long-short)*subs), 'f', 3, 64)+" per delivery at"+site)
	}
	sort.Strings(sites)
	if perThousand := total * 1000 / ((long - short) * subs); perThousand > 0 {
		t.Fatalf("%d allocations per thousand deliveries, want none:\n%s", perThousand, strings.Join(sites, "\n"))
	}
}

// fanoutAllocs returns the objects allocated so far under fanoutFrames, by allocating stack.
func fanoutAllocs() map[string]int64 {
	m := map[string]int64{}
	for _, rec := range memRecords() {
		frames := runtime.CallersFrames(rec.Stack())
		var site strings.Builder
		under := false
		for {
			fr, more := frames.Next()
			if strings.HasSuffix(fr.Function, perRecordFrame) {
				break
			}
			site.WriteString("\n  " + fr.Function)
			for _, f := range fanoutFrames {
				if strings.HasSuffix(fr.Function, f) {
					under = true
				}
			}
			if under || !more {
				break
			}
		}
		if under {
			m[site.String()] += rec.AllocObjects
		}
	}
	return m
}
