package server_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
)

// A lane of 2 records is full almost all the time under pipelined QoS 1 load from several connections of one
// loop: every refused publish is retried once the lane has room (the lane's OnSpace is the one signal), and
// every PUBACK comes, in order, with none left waiting.
func TestLaneFullRetriesEveryPublisher(t *testing.T) {
	f := buildFerryLoops(t, 1, []kafkamux.Opt{kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir("")},
		[]offload.Opt{offload.LaneRecords(2), offload.LaneDelay(0)})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = f.srv.Stop(ctx)
		f.mux.Close()
	}()
	const clients, each = 4, 200
	pubs := make([]*raw, clients)
	for i := range pubs {
		pubs[i] = dialRaw(t, f.addr)
		pubs[i].connect(5, fmt.Sprintf("lane-full-%d", i))
	}
	for i, r := range pubs {
		var batch []byte
		for j := 1; j <= each; j++ {
			p := mqttcodec.Publish{Topic: []byte(fmt.Sprintf("full/%d", i)), QoS: 1, PacketID: uint16(j), Payload: []byte(strconv.Itoa(j))}
			batch = mqttcodec.AppendPublish(batch, &p, 5)
		}
		r.send(batch)
	}
	for i, r := range pubs {
		for j := 1; j <= each; j++ {
			fh, body := r.packet()
			var a mqttcodec.Ack
			if fh.Type != mqttcodec.PUBACK || a.Decode(fh, body, 5) != nil || a.PacketID != uint16(j) || a.Reason != 0 {
				t.Fatalf("publisher %d: ack %d is %s id %d reason %v, want PUBACK %d success in order", i, j, mqttcodec.TypeName(fh.Type), a.PacketID, a.Reason, j)
			}
		}
	}
}
