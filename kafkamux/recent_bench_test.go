package kafkamux

import "testing"

// The reader's decode of a record of the messages topic into the recent-records cache (the default 64 MiB,
// one partition's share of six), eviction included: what each record costs the shared reader. The record is
// BenchmarkMessageFromRecord's, the decode without a cache.
func BenchmarkRecentTake(b *testing.B) {
	m := &Message{Topic: "devices/42/telemetry", Payload: make([]byte, 128), QoS: 1, ClientID: "dev-42"}
	rec := m.Record("mqtt-messages")
	r := newRecent(64 << 20)
	for p := int32(1); p < 6; p++ { // six partitions share the budget
		if _, err := r.take(&Record{Partition: p, Key: []byte("a"), Value: []byte{}}, 0, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(m.Payload)))
	for b.Loop() {
		if _, err := r.take(rec, 1, 0); err != nil {
			b.Fatal(err)
		}
		rec.Offset++
	}
}
