package server_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/mqttcodec"
)

// A client's DISCONNECT, in both versions: the server discards the will, closes the connection, and handles
// nothing the client sent after it.
func TestClientDisconnect(t *testing.T) {
	f := startFerry(t)
	watch := dialV5(t, f.addr, &paho.Connect{ClientID: "disc-watch", CleanStart: true})
	watch.sub(t, paho.SubscribeOptions{Topic: "disc/#", QoS: 1})
	// The two specifications number the sender's duties in opposite order: 3.1.1 has close (-1) then nothing
	// more (-2), 5.0 nothing more (-1) then close (-2). Both make DISCONNECT 0x00 discard the will (-3).
	for _, v := range []struct {
		name          string
		version       byte
		close, silent string
	}{{"v311", mqttcodec.Version311, "MQTT-3.14.4-1", "MQTT-3.14.4-2"}, {"v5", mqttcodec.Version5, "MQTT-3.14.4-2", "MQTT-3.14.4-1"}} {
		id := "disc-" + v.name
		r := dialRaw(t, f.addr)
		cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: v.version, CleanStart: true, KeepAlive: 30, ClientID: []byte(id),
			WillFlag: true, WillQoS: 1, WillTopic: []byte("disc/will/" + v.name), WillPayload: []byte("will")}
		r.send(mqttcodec.AppendConnect(nil, &cp))
		if fh, _ := r.packet(); fh.Type != mqttcodec.CONNACK {
			t.Fatalf("%s: got %s, want CONNACK", v.name, mqttcodec.TypeName(fh.Type))
		}
		// DISCONNECT and, behind it in the same segment, a PUBLISH the client should never have sent.
		after := mqttcodec.Publish{Topic: []byte("disc/after/" + v.name), Payload: []byte("late")}
		r.send(append([]byte{0xE0, 0}, mqttcodec.AppendPublish(nil, &after, v.version)...))
		t.Run(v.close+"/"+v.name+"/server-closes", func(t *testing.T) {
			r.expectClosed()
		})
		t.Run(v.silent+"/"+v.name+"/nothing-handled-after-disconnect", func(t *testing.T) {
			watch.none(t, 300*time.Millisecond) // neither the late PUBLISH nor the will
		})
		t.Run("MQTT-3.14.4-3/"+v.name+"/will-discarded", func(t *testing.T) {
			watch.none(t, 100*time.Millisecond)
		})
	}
}
