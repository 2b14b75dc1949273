package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSimulateMillionIdle checks the memory model of docs/operations.md ("One node, a million devices") at
// a million connections without a million sockets (this sandbox stops a process at 20,000 descriptors):
// it allocates, for each simulated connection, objects of the sizes an idle Ferry connection holds (gnet's
// conn and addresses, Ferry's conn and session, a registry entry, the client id, the owner record in the
// embedded Kafka), with the garbage a CONNECT leaves (about 7.4 KB, heap profile at 15,000 connects) in
// between, then idles and reads the resident memory, once with Go's default GOGC and once with the tuner.
// It asserts nothing about memory; run it by hand, one process per variant (SIM_TUNER=0: Go's default):
//
//	SIM_CONNS=1000000 SIM_TUNER=1 go test -run TestSimulateMillionIdle -v ./cmd/ferry
func TestSimulateMillionIdle(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SIM_CONNS"))
	if n == 0 {
		t.Skip("set SIM_CONNS (e.g. 1000000) to run the simulation")
	}
	tuned := os.Getenv("SIM_TUNER") != "0"
	live, rss := simulateIdle(t, n, tuned)
	t.Logf("%d connections, tuner %v: live heap %.0f B, RSS %.0f B per connection", n, tuned,
		float64(live)/float64(n), float64(rss)/float64(n))
}

// simSink makes the simulated garbage escape to the heap.
var simSink []byte

// simConn is one idle connection's objects, kept live.
type simConn struct {
	gnetConn          *[272]byte // gnet's conn (size class 288 with its method value closure: 272 + 16)
	closure           *[16]byte
	sockaddr, tcpAddr *[32]byte // unix.SockaddrInet4, net.TCPAddr's IP
	tcpAddrS          *[48]byte
	conn              *[176]byte // server.conn
	sess              *[112]byte // server.session
	id                string     // the client id
	kafka             *[112]byte // the owner record in kfake's memory
}

func simulateIdle(t *testing.T, n int, tuned bool) (live, rss uint64) {
	debug.SetGCPercent(100)
	runtime.GC()
	debug.FreeOSMemory()
	base := rssBytes(t)
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	baseHeap := ms0.HeapAlloc
	var tu *gcTuner
	if tuned {
		tu = newGCTuner()
	}
	conns := make([]simConn, 0, n) // 72 B each: stands for the registry's and gnet's tables
	last := time.Now()
	for i := range n {
		// The garbage of a CONNECT: Kafka produce and fetch buffers, JSON, the read-your-writes wait.
		for range 7 {
			simSink = make([]byte, 1024)
		}
		simSink = make([]byte, 256)
		c := simConn{
			gnetConn: new([272]byte), closure: new([16]byte), sockaddr: new([32]byte), tcpAddr: new([32]byte),
			tcpAddrS: new([48]byte), conn: new([176]byte), sess: new([112]byte),
			id: "client-" + strconv.Itoa(i), kafka: new([112]byte),
		}
		// Written, as real state is: memory fresh from the OS is zero and untouched pages are not resident.
		c.gnetConn[0], c.closure[0], c.sockaddr[0], c.tcpAddr[0] = 1, 1, 1, 1
		c.tcpAddrS[0], c.conn[0], c.sess[0], c.kafka[0] = 1, 1, 1, 1
		simSink[0], simSink[255] = 1, 1
		conns = append(conns, c)
		if tu != nil && i%4096 == 0 {
			if now := time.Now(); now.Sub(last) >= gcTick {
				tu.step(now.Sub(last))
				last = now
			}
		}
	}
	simSink = nil
	// Idle: keep-alives allocate next to nothing; the tuner (if any) steps each second.
	for range 10 {
		time.Sleep(gcTick)
		if tu != nil {
			now := time.Now()
			tu.step(now.Sub(last))
			last = now
		}
	}
	rss = rssBytes(t) - base
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	live = ms.HeapAlloc - baseHeap
	runtime.KeepAlive(conns)
	debug.SetGCPercent(100)
	return live, rss
}

func rssBytes(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skip("no /proc/self/statm")
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}
