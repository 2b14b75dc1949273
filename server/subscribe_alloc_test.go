package server_test

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/mqttcodec"
)

// A SUBSCRIBE of ten new filters, as the idle benchmark's clients send one per connection, allocates what the
// subscriptions keep (trie nodes, the filters, the session's map) and no garbage that a session which ends
// with its connection does not need: no held acknowledgement or callback for a record it does not have, and
// no regrowth of the session's map of filters, which is sized once by the first SUBSCRIBE. Counted from a
// memory profile that samples every allocation under (*conn).handle, over many connections.
func TestSubscribeAllocatesNoGarbage(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	f := startFerry(t)
	const conns, filters = 100, 10
	rs := make([]*raw, conns)
	for i := range rs {
		rs[i] = dialRaw(t, f.addr)
		rs[i].connect(mqttcodec.Version311, "suballocs-"+strconv.Itoa(i))
	}
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	gc := debug.SetGCPercent(-1)
	t.Cleanup(func() { runtime.MemProfileRate = old; debug.SetGCPercent(gc) })
	before := subscribeAllocs(t)
	for i, r := range rs {
		p := mqttcodec.Subscribe{PacketID: 1}
		for k := range filters {
			p.Subs = append(p.Subs, mqttcodec.Subscription{Filter: []byte("bench/idle/s" + strconv.Itoa(i) + "/" + strconv.Itoa(k))})
		}
		r.send(mqttcodec.AppendSubscribe(nil, &p, mqttcodec.Version311))
		if fh, _ := r.packet(); fh.Type != mqttcodec.SUBACK {
			t.Fatalf("got %s, want SUBACK", mqttcodec.TypeName(fh.Type))
		}
	}
	after := subscribeAllocs(t)
	for site, n := range after {
		if n -= before[site]; n <= 0 {
			continue
		}
		if strings.Contains(site, "server.(*conn).ackWhenSaved") || strings.Contains(site, "maps.(*Map).grow") {
			t.Errorf("%.2f allocations per SUBSCRIBE at%s", float64(n)/conns, site)
		}
	}
}

// subscribeAllocs returns the objects allocated so far under handOffFrame, by allocating stack (innermost
// frames up to the first outside the runtime).
func subscribeAllocs(t *testing.T) map[string]int64 {
	t.Helper()
	m := map[string]int64{}
	for _, rec := range memRecords() {
		st := rec.Stack()
		if !underHandOff(st) {
			continue
		}
		var b strings.Builder
		frames := runtime.CallersFrames(st)
		for {
			fr, more := frames.Next()
			b.WriteString("\n  " + fr.Function)
			if !more || !strings.HasPrefix(fr.Function, "runtime.") && !strings.HasPrefix(fr.Function, "internal/") {
				break
			}
		}
		m[b.String()] += rec.AllocObjects
	}
	return m
}
