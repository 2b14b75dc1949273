package kafkamux

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// FuzzMessageFromRecord: any record decodes without panicking, and a decoded
// message survives encode -> decode unchanged. Headers come from the fuzzer
// as "key\x00value\x01key\x00value...".
func FuzzMessageFromRecord(f *testing.F) {
	seed := fullMessage().Record("t")
	var hs []byte
	for _, h := range seed.Headers {
		hs = append(hs, h.Key...)
		hs = append(hs, 0)
		hs = append(hs, h.Value...)
		hs = append(hs, 1)
	}
	f.Add(seed.Key, seed.Value, hs)
	f.Add([]byte("a/b"), []byte(nil), []byte("mqtt.qos\x007\x01"))
	f.Add([]byte("a/+"), []byte("x"), []byte("mqtt.u.mqtt.v\x00x\x01plain\x00y"))
	f.Add([]byte{}, []byte{}, []byte("mqtt.expires_at\x00-62135596800000"))
	f.Fuzz(func(t *testing.T, key, value, headers []byte) {
		r := &kgo.Record{Key: key, Value: value}
		for _, kv := range bytes.Split(headers, []byte{1}) {
			if len(kv) == 0 {
				continue
			}
			k, v, _ := bytes.Cut(kv, []byte{0})
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: string(k), Value: v})
		}
		m1, err := MessageFromRecord(r)
		if err != nil {
			return
		}
		r2 := m1.Record("t")
		m2, err := MessageFromRecord(r2)
		if err != nil {
			t.Fatalf("re-decoding %+v: %v", m1, err)
		}
		if m1.Payload == nil {
			m1.Payload = []byte{} // Record writes an empty value, not a tombstone
		}
		if !reflect.DeepEqual(m1, m2) {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m1, m2)
		}
	})
}
