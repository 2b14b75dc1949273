package mqttcodec

import (
	"bytes"
	"testing"
)

// Benchmarks of the hot paths. Run:
//
//	go test ./mqttcodec -run '^$' -bench . -benchmem
//
// SetBytes is the size of the whole packet, so MB/s is wire throughput.

type pubCase struct {
	name    string
	version byte
	p       Publish
}

func pubCases() []pubCase {
	var cs []pubCase
	props := mkProps(PropPayloadFormat, 1, PropMessageExpiry, 300, PropContentType, "application/json",
		PropResponseTopic, "fleet/replies/dev-000123", PropCorrelationData, "0123456789abcdef",
		PropUserProperty, [2]string{"site", "plant-7"}, PropUserProperty, [2]string{"fw", "2.4.1"})
	for _, size := range []struct {
		name string
		n    int
	}{{"64B", 64}, {"1KiB", 1024}} {
		payload := bytes.Repeat([]byte{'x'}, size.n)
		for _, qos := range []byte{0, 1} {
			base := Publish{QoS: qos, Topic: []byte("fleet/plant-7/dev-000123/telemetry"), Payload: payload}
			if qos > 0 {
				base.PacketID = 4242
			}
			q := "qos" + itoa(int(qos))
			cs = append(cs, pubCase{q + "/" + size.name + "/v311", Version311, base})
			cs = append(cs, pubCase{q + "/" + size.name + "/v5-no-props", Version5, base})
			withProps := base
			withProps.Props = props
			cs = append(cs, pubCase{q + "/" + size.name + "/v5-props", Version5, withProps})
		}
	}
	return cs
}

func BenchmarkDecodePublish(b *testing.B) {
	for _, c := range pubCases() {
		wire := AppendPublish(nil, &c.p, c.version)
		b.Run(c.name, func(b *testing.B) {
			var p Publish
			b.ReportAllocs()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				fh, body, _, err := Frame(wire, 1<<20)
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Decode(fh, body, c.version); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncodePublish(b *testing.B) {
	for _, c := range pubCases() {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			b.SetBytes(int64(PublishSize(&c.p, c.version)))
			for b.Loop() {
				buf = AppendPublish(buf[:0], &c.p, c.version)
			}
		})
	}
}

func BenchmarkAck(b *testing.B) {
	for _, v := range []byte{Version311, Version5} {
		wire := AppendAck(nil, &Ack{Type: PUBACK, PacketID: 4242}, v)
		b.Run("decode/level"+itoa(int(v)), func(b *testing.B) {
			var a Ack
			b.ReportAllocs()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				fh, body, _, _ := Frame(wire, 0)
				if err := a.Decode(fh, body, v); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("encode/level"+itoa(int(v)), func(b *testing.B) {
			buf := make([]byte, 0, 16)
			a := Ack{Type: PUBACK, PacketID: 4242}
			b.ReportAllocs()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				buf = AppendAck(buf[:0], &a, v)
			}
		})
	}
}

func BenchmarkDecodeConnect(b *testing.B) {
	for _, name := range []string{"CONNECT/v3.1.1/will-user-password", "CONNECT/v5/all-properties-will"} {
		wire := fixtureWire(name)
		b.Run(name, func(b *testing.B) {
			var c Connect
			b.ReportAllocs()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				fh, body, _, _ := Frame(wire, 0)
				if err := c.Decode(fh, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeSubscribe(b *testing.B) {
	for _, c := range []struct {
		name    string
		version byte
	}{{"SUBSCRIBE/v3", Version311}, {"SUBSCRIBE/v5/options-shared", Version5}} {
		wire := fixtureWire(c.name)
		b.Run(c.name, func(b *testing.B) {
			var s Subscribe
			b.ReportAllocs()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				fh, body, _, _ := Frame(wire, 0)
				if err := s.Decode(fh, body, c.version); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMatch(b *testing.B) {
	for _, c := range []struct{ name, filter, topic string }{
		{"exact", "fleet/plant-7/dev-000123/telemetry", "fleet/plant-7/dev-000123/telemetry"},
		{"plus", "fleet/+/+/telemetry", "fleet/plant-7/dev-000123/telemetry"},
		{"hash", "fleet/plant-7/#", "fleet/plant-7/dev-000123/telemetry"},
		{"miss-early", "other/#", "fleet/plant-7/dev-000123/telemetry"},
	} {
		f, t := []byte(c.filter), []byte(c.topic)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Match(f, t)
			}
		})
	}
}

func BenchmarkValidTopicName(b *testing.B) {
	t := []byte("fleet/plant-7/dev-000123/telemetry")
	b.ReportAllocs()
	b.SetBytes(int64(len(t)))
	for b.Loop() {
		if ValidTopicName(t) != nil {
			b.Fatal("invalid")
		}
	}
}
