package server_test

import (
	"testing"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
	"github.com/ferrymq/ferry/server/share"
)

// rawConnack sends a v5 CONNECT (keep-alive 30, session expiry asked) and returns the decoded CONNACK.
func rawConnack(t *testing.T, addr string, expiry uint32) *mqttcodec.Connack {
	t.Helper()
	r := dialRaw(t, addr)
	p := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: mqttcodec.Version5, CleanStart: true, KeepAlive: 30, ClientID: []byte("caps")}
	if expiry > 0 {
		p.Props.SessionExpiry = expiry
		p.Props.Set(mqttcodec.PropSessionExpiry)
	}
	r.send(mqttcodec.AppendConnect(nil, &p))
	fh, body := r.packet()
	if fh.Type != mqttcodec.CONNACK {
		t.Fatalf("got %s, want CONNACK", mqttcodec.TypeName(fh.Type))
	}
	var ack mqttcodec.Connack
	if err := ack.Decode(fh, body, mqttcodec.Version5); err != nil || ack.Reason != mqttcodec.Success {
		t.Fatalf("CONNACK %v, reason %s", err, ack.Reason)
	}
	return &ack
}

// Every capability a successful v5 CONNACK announces, pinned against the configured values, with the
// defaults the specification gives an absent property where Ferry leaves it out.
func TestConnackCapabilities(t *testing.T) {
	type want struct {
		keepAlive   int // -1: absent (the client's keep-alive is used)
		recvMax     uint16
		maxQoS      int // -1: absent (QoS 2)
		maxPacket   uint32
		aliasMax    uint16
		shared      byte
		expiry      int // -1: absent (the client's expiry is accepted)
		askedExpiry uint32
	}
	cases := []struct {
		name string
		opts []server.Opt
		want want
	}{
		{"defaults", nil, want{keepAlive: -1, recvMax: 1024, maxQoS: -1, maxPacket: 1 << 20, aliasMax: 64, shared: 1, expiry: -1, askedExpiry: 60}},
		{"configured", []server.Opt{server.ServerKeepAlive(45), server.ReceiveMaximum(77), server.MaximumQoS(1),
			server.MaxPacketSize(4096), server.TopicAliasMaximum(9), server.Share(share.Enabled(false)), server.MaxSessionExpiry(120)},
			want{keepAlive: 45, recvMax: 77, maxQoS: 1, maxPacket: 4096, aliasMax: 9, shared: 0, expiry: 120, askedExpiry: 3600}},
		{"qos0-no-aliases", []server.Opt{server.MaximumQoS(0), server.TopicAliasMaximum(0)},
			want{keepAlive: -1, recvMax: 1024, maxQoS: 0, maxPacket: 1 << 20, aliasMax: 0, shared: 1, expiry: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startFerry(t, tc.opts...)
			ack := rawConnack(t, f.addr, tc.want.askedExpiry)
			p := &ack.Props
			w := tc.want
			t.Run("MQTT-3.2.2-21/server-keep-alive", func(t *testing.T) {
				if w.keepAlive < 0 {
					if p.Has(mqttcodec.PropServerKeepAlive) { // [MQTT-3.2.2-22] the client's is used
						t.Fatalf("Server Keep Alive %d sent, none configured", p.ServerKeepAlive)
					}
					return
				}
				if !p.Has(mqttcodec.PropServerKeepAlive) || int(p.ServerKeepAlive) != w.keepAlive {
					t.Fatalf("Server Keep Alive %v/%d, want %d", p.Has(mqttcodec.PropServerKeepAlive), p.ServerKeepAlive, w.keepAlive)
				}
			})
			t.Run("receive-maximum", func(t *testing.T) {
				if !p.Has(mqttcodec.PropReceiveMaximum) || p.ReceiveMaximum != w.recvMax {
					t.Fatalf("Receive Maximum %d, want %d", p.ReceiveMaximum, w.recvMax)
				}
			})
			t.Run("MQTT-3.2.2-9/maximum-qos", func(t *testing.T) {
				if w.maxQoS < 0 {
					if p.Has(mqttcodec.PropMaximumQoS) {
						t.Fatalf("Maximum QoS %d sent with QoS 2 supported", p.MaximumQoS)
					}
					return
				}
				if !p.Has(mqttcodec.PropMaximumQoS) || int(p.MaximumQoS) != w.maxQoS {
					t.Fatalf("Maximum QoS %d, want %d", p.MaximumQoS, w.maxQoS)
				}
			})
			t.Run("retain-available", func(t *testing.T) {
				if p.Has(mqttcodec.PropRetainAvailable) && p.RetainAvailable != 1 {
					t.Fatalf("Retain Available %d: Ferry supports retained messages", p.RetainAvailable)
				}
			})
			t.Run("MQTT-3.2.2-15/maximum-packet-size", func(t *testing.T) {
				if !p.Has(mqttcodec.PropMaximumPacketSize) || p.MaximumPacketSize != w.maxPacket {
					t.Fatalf("Maximum Packet Size %d, want %d", p.MaximumPacketSize, w.maxPacket)
				}
			})
			t.Run("MQTT-3.2.2-17/topic-alias-maximum", func(t *testing.T) {
				if p.TopicAliasMaximum != w.aliasMax || (w.aliasMax > 0 && !p.Has(mqttcodec.PropTopicAliasMaximum)) {
					t.Fatalf("Topic Alias Maximum %d, want %d", p.TopicAliasMaximum, w.aliasMax)
				}
			})
			t.Run("wildcard-and-subscription-identifiers-available", func(t *testing.T) {
				// Absent means available; Ferry supports both.
				if p.Has(mqttcodec.PropWildcardSubAvailable) && p.WildcardSubAvailable != 1 {
					t.Fatal("Wildcard Subscription Available 0")
				}
				if p.Has(mqttcodec.PropSubIDAvailable) && p.SubIDAvailable != 1 {
					t.Fatal("Subscription Identifiers Available 0")
				}
			})
			t.Run("shared-subscription-available", func(t *testing.T) {
				if !p.Has(mqttcodec.PropSharedSubAvailable) || p.SharedSubAvailable != w.shared {
					t.Fatalf("Shared Subscription Available %v/%d, want %d", p.Has(mqttcodec.PropSharedSubAvailable), p.SharedSubAvailable, w.shared)
				}
			})
			t.Run("session-expiry", func(t *testing.T) {
				if w.expiry < 0 {
					if p.Has(mqttcodec.PropSessionExpiry) {
						t.Fatalf("Session Expiry %d sent, the client's was accepted", p.SessionExpiry)
					}
					return
				}
				if !p.Has(mqttcodec.PropSessionExpiry) || int(p.SessionExpiry) != w.expiry {
					t.Fatalf("Session Expiry %d, want the server's cap %d", p.SessionExpiry, w.expiry)
				}
			})
			t.Run("no-assigned-id-reason-or-auth", func(t *testing.T) {
				for _, id := range []mqttcodec.PropID{mqttcodec.PropAssignedClientID, mqttcodec.PropAuthMethod, mqttcodec.PropAuthData, mqttcodec.PropResponseInfo} {
					if p.Has(id) {
						t.Fatalf("unexpected CONNACK property %#x", byte(id))
					}
				}
			})
		})
	}
}
