package server

import (
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
)

// BenchmarkFanoutTopicAlias measures what outbound topic aliases save when one record goes out to many v5
// subscribers (writePublish, the encoding step of the delivery path): wire bytes and CPU per delivered
// PUBLISH, for a 16-byte payload and topics of several lengths, each subscriber cycling over 8 topics (all
// within its alias table). "off" is a client that announced no Topic Alias Maximum.
//
// With /socket, every PUBLISH is also written to a loopback TCP socket (one write per delivery, as a
// fan-out to many connections does), read and discarded by another goroutine: the CPU of the whole send.
//
//	go test -run '^$' -bench BenchmarkFanoutTopicAlias -benchtime 1000000x -count 5 ./server/
func BenchmarkFanoutTopicAlias(b *testing.B) {
	for _, sock := range []bool{false, true} {
		for _, tlen := range []int{32, 64, 128} {
			for _, on := range []bool{false, true} {
				name := "topic" + strconv.Itoa(tlen) + "/alias-off"
				if on {
					name = "topic" + strconv.Itoa(tlen) + "/alias-on"
				}
				if sock {
					name += "/socket"
				}
				b.Run(name, func(b *testing.B) { benchFanoutAlias(b, tlen, on, sock) })
			}
		}
	}
}

func benchFanoutAlias(b *testing.B, tlen int, on, sock bool) {
	var w io.Writer = io.Discard
	if sock {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				_, _ = io.Copy(io.Discard, c)
			}
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		w = c
	}
	var max uint16
	if on {
		max = 16
	}
	const subs = 100
	conns := make([]*conn, subs)
	for i := range conns {
		conns[i] = aliasTestConn(mqttcodec.Version5, max)
	}
	var ds []delivery
	for i := range 8 {
		end := "/device-" + strconv.Itoa(i)
		t := strings.Repeat("x", tlen-len(end)) + end // topics that differ in their last level
		ds = append(ds, delivery{msg: &kafkamux.Message{Topic: t, Payload: make([]byte, 16)}, qos: 1})
	}
	now := time.Now()
	out := make([]byte, 0, 64<<10)
	wire := 0
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		c := conns[n%subs]
		c.l.out = out[:0]
		c.writePublish(&ds[(n/subs)%len(ds)], 1, false, now)
		wire += len(c.l.out)
		_, _ = w.Write(c.l.out)
	}
	b.ReportMetric(float64(wire)/float64(b.N), "wire-B/msg")
}
