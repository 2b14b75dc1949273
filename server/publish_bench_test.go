package server_test

import (
	"testing"

	"github.com/ferrymq/ferry/mqttcodec"
)

// BenchmarkPublishQoS1 measures one QoS 1 PUBLISH through the whole instance: decode on the loop, copy into a
// pooled request, produce to in-process kfake with acks=all, PUBACK back in order. Allocations reported here
// include kfake's and franz-go's; `-memprofile` separates the server path from them (see README).
func BenchmarkPublishQoS1(b *testing.B) {
	f := startFerry(b)
	r := dialRaw(b, f.addr)
	r.connect(mqttcodec.Version5, "bench")
	const window = 256
	payload := make([]byte, 64)
	pkts := make([][]byte, 65536)
	for i := range pkts {
		p := mqttcodec.Publish{Topic: []byte("bench/topic"), QoS: 1, PacketID: uint16(i), Payload: payload}
		if i == 0 {
			p.PacketID = 1
		}
		pkts[i] = mqttcodec.AppendPublish(nil, &p, mqttcodec.Version5)
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	sent, acked := 0, 0
	for acked < b.N {
		for sent < b.N && sent-acked < window {
			r.send(pkts[(sent%65535)+1])
			sent++
		}
		fh, _ := r.packet()
		if fh.Type != mqttcodec.PUBACK {
			b.Fatalf("got %s", mqttcodec.TypeName(fh.Type))
		}
		acked++
	}
}
