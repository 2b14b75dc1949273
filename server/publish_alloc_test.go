package server_test

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/mqttcodec"
)

// A QoS 1 PUBLISH is decoded and handed to the Kafka producer without allocating: every allocation made on the
// event loop under (*conn).handle — decode, the checks, the pooled request, the record built in the request's
// own storage, the lane's budget, franz-go's buffering of the record — is counted from a memory profile that
// samples every allocation, over a stream of publishes through real sockets into the embedded Kafka. Like
// testing.AllocsPerRun, the count per publish is rounded down (here per hundred publishes): the request pool
// refilling after a garbage collection is not an allocation per publish.
func TestPublishHandOffAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops pooled requests on purpose")
	}
	f := startFerry(t)
	r := dialRaw(t, f.addr)
	r.connect(mqttcodec.Version5, "allocs")
	payload := make([]byte, 64)
	pkts := make([][]byte, 1024)
	for i := range pkts {
		p := mqttcodec.Publish{Topic: []byte("devices/7/telemetry"), QoS: 1, PacketID: uint16(i + 1), Payload: payload}
		pkts[i] = mqttcodec.AppendPublish(nil, &p, mqttcodec.Version5)
	}
	publish := func(n int) {
		const window = 16
		sent, acked := 0, 0
		for acked < n {
			for sent < n && sent-acked < window {
				r.send(pkts[sent%len(pkts)])
				sent++
			}
			if fh, _ := r.packet(); fh.Type != mqttcodec.PUBACK {
				t.Fatalf("got %s, want PUBACK", mqttcodec.TypeName(fh.Type))
			}
			acked++
		}
	}
	publish(2 * len(pkts)) // warm: pools, queues and the producer's buffers at their working size

	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	gc := debug.SetGCPercent(-1) // collections only where handOffAllocs runs them: none empties the pools mid-run
	t.Cleanup(func() { runtime.MemProfileRate = old; debug.SetGCPercent(gc) })
	// Each measurement starts from emptied pools (the profile is read after garbage collections, which empty
	// sync.Pools), so a run refills the request pool once, whatever its length: what grows with the number of
	// publishes is the difference between a short and a long run.
	phase := func(n int) int64 {
		before := handOffAllocs(t)
		publish(n)
		return handOffAllocs(t) - before
	}
	const short, long = 1000, 5000
	a, b := phase(short), phase(long)
	if perHundred := (b - a) * 100 / (long - short); perHundred > 0 {
		t.Fatalf("%d allocations on the loop's PUBLISH path for %d publishes and %d for %d: %d per hundred publishes, want none:\n%s",
			a, short, b, long, perHundred, handOffSites())
	}
}

// handOffFrame names the loop's handling of one packet: what is allocated under it is allocated per packet.
const handOffFrame = "server.(*conn).handle"

// handOffAllocs returns the objects allocated so far under handOffFrame, from the memory profile.
func handOffAllocs(t *testing.T) int64 {
	t.Helper()
	var n int64
	for _, rec := range memRecords() {
		if underHandOff(rec.Stack()) {
			n += rec.AllocObjects
		}
	}
	return n
}

// handOffSites lists the allocating stacks under handOffFrame, for the failure message.
func handOffSites() string {
	var b strings.Builder
	for _, rec := range memRecords() {
		st := rec.Stack()
		if !underHandOff(st) {
			continue
		}
		b.WriteString("---\n")
		frames := runtime.CallersFrames(st)
		for {
			fr, more := frames.Next()
			b.WriteString("  " + fr.Function + "\n")
			if !more || strings.HasSuffix(fr.Function, handOffFrame) {
				break
			}
		}
	}
	return b.String()
}

func memRecords() []runtime.MemProfileRecord {
	// The profile shows allocations as of the last completed garbage collection cycle but one.
	runtime.GC()
	runtime.GC()
	recs := make([]runtime.MemProfileRecord, 4096)
	for {
		n, ok := runtime.MemProfile(recs, true)
		if ok {
			return recs[:n]
		}
		recs = make([]runtime.MemProfileRecord, n+1024)
	}
}

func underHandOff(st []uintptr) bool {
	frames := runtime.CallersFrames(st)
	for {
		fr, more := frames.Next()
		if strings.HasSuffix(fr.Function, handOffFrame) {
			return true
		}
		if !more {
			return false
		}
	}
}
