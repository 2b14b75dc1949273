package kafkamux

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func fullMessage() *Message {
	return &Message{
		Topic:            "devices/42/cmd/résumé",
		Payload:          []byte{0, 1, 2, 0xff, 'x'},
		QoS:              2,
		Retain:           true,
		ClientID:         "dev-42",
		PayloadFormat:    1,
		HasPayloadFormat: true,
		ContentType:      "application/json",
		ResponseTopic:    "devices/42/reply",
		CorrelationData:  []byte{9, 8, 7},
		ExpiresAt:        time.UnixMilli(1_900_000_000_123),
		UserProps: []UserProp{
			{"a", "1"},
			{"b", "2"},
			{"a", "3"},                     // repeat keeps order
			{"mqtt.qos", "0"},              // reserved name: escaped, not read as QoS
			{"mqtt.u.x", "nested"},         // already looks escaped
			{"mqtt.", ""},                  // prefix alone, empty value
			{"", "empty key"},              // empty name is a valid UTF-8 string
			{"traceparent", "00-abc-01"},   // an ordinary header name
			{"MQTT.QOS", "upper is not 1"}, // prefix is case-sensitive
		},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	in := fullMessage()
	r := in.Record("mqtt-messages")
	if string(r.Key) != in.Topic || &r.Value[0] != &in.Payload[0] {
		t.Fatalf("key %q / value not referencing the payload", r.Key)
	}
	if r.Topic != "mqtt-messages" {
		t.Fatalf("record topic %q", r.Topic)
	}
	for _, h := range r.Headers {
		if h.Key == HeaderQoS && string(h.Value) != "2" {
			t.Fatalf("a user property overrode %s: %q", HeaderQoS, h.Value)
		}
	}
	r.Timestamp = time.UnixMilli(1_800_000_000_000)
	out, err := MessageFromRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	want := *in
	want.Timestamp = r.Timestamp
	if !reflect.DeepEqual(out, &want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, &want)
	}

	// Optional fields absent: a minimal QoS 0 message.
	min := &Message{Topic: "t", Payload: []byte("p")}
	out, err = MessageFromRecord(min.Record("x"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, min) {
		t.Fatalf("minimal round trip: got %+v want %+v", out, min)
	}
	if got := len(min.Record("x").Headers); got != 2 {
		t.Fatalf("minimal message has %d headers, want 2 (version, qos)", got)
	}
}

func TestMessageRoundTripThroughKafka(t *testing.T) {
	m := newMux(t)
	got := make(chan *Message, 4)
	if err := m.Follow(m.MessagesTopic(), func(_ int32, _ int64, msg *Message) { got <- msg }); err != nil {
		t.Fatal(err)
	}
	in := fullMessage()
	produceSync(t, m, in.Record(m.MessagesTopic()))
	empty := &Message{Topic: "empty", QoS: 1} // nil payload: empty value, not a tombstone
	produceSync(t, m, empty.Record(m.MessagesTopic()))

	// The two records are on different partitions: they may arrive in either order.
	byTopic := map[string]*Message{}
	for len(byTopic) < 2 {
		select {
		case out := <-got:
			byTopic[out.Topic] = out
		case <-time.After(10 * time.Second):
			t.Fatal("record not delivered")
		}
	}
	for _, want := range []*Message{in, empty} {
		out := byTopic[want.Topic]
		if out.Timestamp.IsZero() {
			t.Fatal("no timestamp")
		}
		if out.Fetched == 0 {
			t.Fatal("no fetch time from the follower")
		}
		w := *want
		w.Timestamp, w.Fetched = out.Timestamp, out.Fetched // read-side fields
		if w.Payload == nil {
			w.Payload = []byte{}
			if out.Payload == nil {
				t.Fatal("empty payload read back as a tombstone")
			}
		}
		if !reflect.DeepEqual(out, &w) {
			t.Fatalf("through Kafka:\n got %+v\nwant %+v", out, &w)
		}
	}
}

func TestRetainedRecordTombstone(t *testing.T) {
	m := &Message{Topic: "a/b", Retain: true, Payload: []byte{}}
	if r := m.RetainedRecord("r"); r.Value != nil {
		t.Fatalf("empty retained payload: value %q, want null", r.Value)
	}
	if r := m.Record("r"); r.Value == nil {
		t.Fatal("Record wrote a null value for an empty payload")
	}
	m.Payload = []byte("x")
	if r := m.RetainedRecord("r"); string(r.Value) != "x" {
		t.Fatalf("retained value %q", r.Value)
	}
	out, err := MessageFromRecord(&kgo.Record{Key: []byte("a/b"), Value: nil})
	if err != nil || out.Payload != nil {
		t.Fatalf("tombstone decoded as %+v, %v", out, err)
	}
}

func TestKafkaBornRecord(t *testing.T) {
	r := &kgo.Record{
		Key:   []byte("plant/7/line/3"),
		Value: []byte(`{"t":21.5}`),
		Headers: []kgo.RecordHeader{
			{Key: "content-type", Value: []byte("json")},
			{Key: "mqtt.future_header", Value: []byte("ignored")},
			{Key: HeaderVersion, Value: []byte("99")},
		},
		Timestamp: time.UnixMilli(5),
	}
	m, err := MessageFromRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	want := &Message{
		Topic: "plant/7/line/3", Payload: r.Value, QoS: KafkaBornQoS, Timestamp: r.Timestamp,
		UserProps: []UserProp{{"content-type", "json"}},
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v\nwant %+v", m, want)
	}

	r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderQoS, Value: []byte("0")})
	if m, err := MessageFromRecord(r); err != nil || m.QoS != 0 {
		t.Fatalf("qos header: %+v, %v", m, err)
	}
}

func TestMessageFromRecordRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  []byte
	}{
		{"MQTT-4.7.3-1/null key", nil},
		{"MQTT-4.7.3-1/empty key", []byte{}},
		{"MQTT-3.3.2-2/plus", []byte("a/+/b")},
		{"MQTT-3.3.2-2/hash", []byte("a/#")},
		{"MQTT-1.5.4-2/NUL", []byte("a\x00b")},
		{"MQTT-1.5.4-1/invalid UTF-8", []byte{'a', 0xc3, 0x28}},
		{"MQTT-1.5.4-1/too long", []byte(strings.Repeat("a", 65536))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := MessageFromRecord(&kgo.Record{Key: tc.key, Value: []byte("v")})
			if !errors.Is(err, ErrBadTopic) {
				t.Fatalf("err = %v, want ErrBadTopic", err)
			}
		})
	}
	for _, h := range []kgo.RecordHeader{
		{Key: HeaderQoS, Value: []byte("3")},
		{Key: HeaderQoS, Value: []byte("")},
		{Key: HeaderRetain, Value: []byte("yes")},
		{Key: HeaderPayloadFormat, Value: []byte("2")},
		{Key: HeaderExpiresAt, Value: []byte("soon")},
		{Key: HeaderResponseTopic, Value: []byte("replies/#")},   // [MQTT-3.3.2-14]
		{Key: HeaderResponseTopic, Value: []byte{}},              // [MQTT-4.7.3-1]
		{Key: HeaderResponseTopic, Value: []byte{'r', 0xff}},     // [MQTT-3.3.2-13]
		{Key: HeaderContentType, Value: []byte("text\x00plain")}, // [MQTT-1.5.4-2]
		{Key: HeaderContentType, Value: []byte{0xc3, 0x28}},      // [MQTT-1.5.4-1]
		{Key: HeaderCorrelationData, Value: make([]byte, 65536)},
	} {
		_, err := MessageFromRecord(&kgo.Record{Key: []byte("ok"), Headers: []kgo.RecordHeader{h}})
		if err == nil || !strings.Contains(err.Error(), h.Key) {
			t.Errorf("header %s=%q: err = %v, want an error naming the header", h.Key, h.Value, err)
		}
	}
	// Valid: a key with '$', spaces and multi-byte characters.
	if _, err := MessageFromRecord(&kgo.Record{Key: []byte("$SYS/ a/日本")}); err != nil {
		t.Fatal(err)
	}
}

func TestRecordAllocs(t *testing.T) {
	m := fullMessage()
	m.UserProps = m.UserProps[:3] // no escaped names
	allocs := testing.AllocsPerRun(100, func() { _ = m.Record("mqtt-messages") })
	if allocs > 3 {
		t.Fatalf("Record: %v allocations, want <= 3 (record, headers, string bytes)", allocs)
	}
}

// RecordInto builds the same record as Record in reused storage: a large message, then a small one (no stale
// header or byte of the first may show), then the large one again, without allocating once the storage fits.
func TestRecordIntoReusesStorage(t *testing.T) {
	big := fullMessage()
	small := &Message{Topic: "a/b", Payload: []byte("x"), QoS: 1}
	var r kgo.Record
	var buf []byte
	for i, m := range []*Message{big, small, big} {
		buf = m.RecordInto(&r, buf, "mqtt-messages")
		if want := m.Record("mqtt-messages"); !reflect.DeepEqual(&r, want) {
			t.Fatalf("message %d: RecordInto built\n%+v\nwant\n%+v", i, r, *want)
		}
		if stale := r.Headers[len(r.Headers):cap(r.Headers)]; i == 1 && len(stale) > 0 && stale[0].Key != "" {
			t.Fatalf("message %d: headers of the previous message left beyond the record's", i)
		}
	}
	m := fullMessage()
	m.UserProps = m.UserProps[:3] // no escaped names
	if allocs := testing.AllocsPerRun(100, func() { buf = m.RecordInto(&r, buf, "mqtt-messages") }); allocs != 0 {
		t.Fatalf("RecordInto into storage of the right size: %v allocations, want 0", allocs)
	}
}

func BenchmarkRecord(b *testing.B) {
	m := &Message{Topic: "devices/42/telemetry", Payload: make([]byte, 128), QoS: 1, ClientID: "dev-42"}
	b.ReportAllocs()
	b.SetBytes(int64(len(m.Payload)))
	for b.Loop() {
		_ = m.Record("mqtt-messages")
	}
}

func BenchmarkMessageFromRecord(b *testing.B) {
	m := &Message{Topic: "devices/42/telemetry", Payload: make([]byte, 128), QoS: 1, ClientID: "dev-42"}
	r := m.Record("mqtt-messages")
	b.ReportAllocs()
	b.SetBytes(int64(len(m.Payload)))
	for b.Loop() {
		if _, err := MessageFromRecord(r); err != nil {
			b.Fatal(err)
		}
	}
}

// Headers of Kafka producers that cannot be MQTT user properties are dropped; the record is kept.
func TestMessageFromRecordDropsBadUserProps(t *testing.T) {
	r := &kgo.Record{Key: []byte("a/b"), Value: []byte("v"), Headers: []kgo.RecordHeader{
		{Key: "ok", Value: []byte("1")},
		{Key: "binary", Value: []byte{0xde, 0xad, 0xbe, 0xef}},           // [MQTT-1.5.4-1]
		{Key: "nul", Value: []byte("a\x00b")},                            // [MQTT-1.5.4-2]
		{Key: "big", Value: bytes.Repeat([]byte("a"), 65536)},            // longer than an MQTT string
		{Key: "bad\xffname", Value: []byte("x")},                         // [MQTT-1.5.4-1]
		{Key: HeaderUserEscape + "mqtt.x\x00", Value: []byte("escaped")}, // escaped name with NUL
		{Key: HeaderUserEscape + "mqtt.y", Value: []byte("kept")},
		{Key: "ok", Value: []byte("2")},
	}}
	m, err := MessageFromRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	want := []UserProp{{"ok", "1"}, {"mqtt.y", "kept"}, {"ok", "2"}}
	if !reflect.DeepEqual(m.UserProps, want) {
		t.Fatalf("user properties %q, want %q", m.UserProps, want)
	}
	// The limits themselves are valid.
	r = &kgo.Record{Key: []byte("a"), Headers: []kgo.RecordHeader{
		{Key: HeaderCorrelationData, Value: make([]byte, 65535)}, {Key: "k", Value: bytes.Repeat([]byte("é"), 32767)},
		{Key: HeaderResponseTopic, Value: []byte("$SYS/r é")},
	}}
	if m, err := MessageFromRecord(r); err != nil || len(m.UserProps) != 1 || len(m.CorrelationData) != 65535 {
		t.Fatalf("at the limits: %+v, %v", m, err)
	}
}
