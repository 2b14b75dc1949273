package payload

import (
	"os"
	"testing"
)

// The per-message cost of each contract on a 96-byte device document (the one ferry-bench --json-payload
// sends): what an event loop spends in Ingest, and DeliverJSON's cost for the way back.
func BenchmarkIngest(b *testing.B) {
	doc := []byte(`{"device":"bench-17","temp":21.5,"seq":123456789,"sent":1765000000000000000}          `)
	for _, c := range []struct{ name, rule string }{
		{"none", ""},
		{"json", "bench/#=json"},
		{"jsonschema", "bench/#=jsonschema:file:../../perf/payload/telemetry.schema.json"},
		{"avro", "bench/#=avro:file:../../perf/payload/telemetry.avsc;id=1"},
		{"protobuf", "bench/#=protobuf:file:testdata/bench.proto;id=2"},
	} {
		b.Run(c.name, func(b *testing.B) {
			var rules []string
			if c.rule != "" {
				rules = []string{c.rule}
			}
			s, err := New(rules)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 0, 512)
			b.ReportAllocs()
			b.SetBytes(int64(len(doc)))
			for b.Loop() {
				i := s.Match("bench/17")
				if i < 0 {
					buf = append(buf[:0], doc...)
					continue
				}
				if buf, _, err = s.Ingest(i, buf[:0], doc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The JSON Schema rule's two paths on the same document: the fast check (what a valid document costs) and the
// library validator alone (what a refused or unusual one costs, and what every document cost before the fast
// check).
func BenchmarkJSONSchemaPaths(b *testing.B) {
	doc := []byte(`{"device":"bench-17","temp":21.5,"seq":123456789,"sent":1765000000000000000}`)
	text, err := os.ReadFile("../../perf/payload/telemetry.schema.json")
	if err != nil {
		b.Fatal(err)
	}
	j, err := newJSONSchema(string(text), nil)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 512)
	for _, c := range []struct {
		name string
		f    func(dst, payload []byte) ([]byte, error)
	}{{"fast", j.ingest}, {"library", j.slowIngest}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(doc)))
			for b.Loop() {
				if buf, err = c.f(buf[:0], doc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDeliverJSON(b *testing.B) {
	doc := []byte(`{"device":"bench-17","temp":21.5,"seq":123456789,"sent":1765000000000000000}`)
	for _, c := range []struct{ name, rule string }{
		{"avro", "bench/#=avro:file:../../perf/payload/telemetry.avsc;id=1;deliver=json"},
		{"protobuf", "bench/#=protobuf:file:testdata/bench.proto;id=2;deliver=json"},
	} {
		b.Run(c.name, func(b *testing.B) {
			s, err := New([]string{c.rule})
			if err != nil {
				b.Fatal(err)
			}
			rec, _, err := s.Ingest(0, nil, doc)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.DeliverJSON("bench/17", rec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
