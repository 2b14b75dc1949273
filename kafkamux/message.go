package kafkamux

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The Kafka data model, version 1 (see README.md for the table Kafka users
// read). One MQTT PUBLISH is one Kafka record:
//
//   - key: the MQTT topic name, UTF-8, so per-topic order is partition order;
//   - value: the payload, byte for byte;
//   - headers: MQTT properties under the reserved prefix "mqtt.", and user
//     properties under their own names, order and repeats kept.
//
// A user property whose name starts with the reserved prefix is written as
// "mqtt.u." + name, so it can neither be lost nor be read back as a reserved
// header.

// DataModelVersion is the value of the HeaderVersion header Ferry writes.
const DataModelVersion = "1"

// Reserved header names.
const (
	HeaderPrefix          = "mqtt."
	HeaderVersion         = "mqtt.v"                // data model version, "1"
	HeaderQoS             = "mqtt.qos"              // "0", "1" or "2"
	HeaderRetain          = "mqtt.retain"           // "1" when the PUBLISH had RETAIN=1; absent otherwise
	HeaderClientID        = "mqtt.client_id"        // publishing client id (No Local)
	HeaderPayloadFormat   = "mqtt.payload_format"   // "0" bytes, "1" UTF-8; absent when not sent
	HeaderContentType     = "mqtt.content_type"     // MQTT 5 content type
	HeaderResponseTopic   = "mqtt.response_topic"   // MQTT 5 response topic
	HeaderCorrelationData = "mqtt.correlation_data" // MQTT 5 correlation data, raw bytes
	HeaderExpiresAt       = "mqtt.expires_at"       // absolute expiry deadline, unix milliseconds, decimal
	HeaderUserEscape      = "mqtt.u."               // prefix of escaped user properties
	HeaderValueFormat     = "mqtt.value_format"     // payload rule (server/payload): "avro", "protobuf" or "jsonschema"
	HeaderSchema          = "mqtt.schema"           // payload rule: the schema, "SUBJECT/VERSION" or "file:PATH"
	HeaderSchemaID        = "mqtt.schema_id"        // payload rule: the registry id of the schema, decimal; absent without one
	HeaderPartitionKey    = "mqtt.pk"               // partition key of a route rule (hashed instead of the key); last header
)

// KafkaBornQoS is the QoS given to a record that has no HeaderQoS, such as
// one written by an ordinary Kafka producer.
const KafkaBornQoS = 1

// Message is one MQTT application message as Ferry stores it in Kafka.
//
// A Message handed to a [Handler] is shared by every subscriber and must be
// treated as read-only.
type Message struct {
	Topic            string // MQTT topic name = record key
	Payload          []byte // record value, byte for byte; nil read from Kafka = tombstone (retained)
	QoS              byte   // 0, 1 or 2
	Retain           bool   // RETAIN flag of the PUBLISH
	Tombstone        bool   // read side: the record value was null (Payload is nil); a cleared retained topic
	ClientID         string // publishing client id, for No Local; "" when unknown
	PayloadFormat    byte   // MQTT 5 payload format indicator, valid when HasPayloadFormat
	HasPayloadFormat bool
	ContentType      string
	ResponseTopic    string
	CorrelationData  []byte
	ExpiresAt        time.Time  // absolute message-expiry deadline; zero = none
	UserProps        []UserProp // MQTT 5 user properties, order and repeats kept
	Timestamp        time.Time  // record timestamp (read side only; ignored when writing)
	// Schema names the schema of a value a payload rule checked or converted (write side only): the
	// HeaderValueFormat, HeaderSchema and HeaderSchemaID headers. Shared, read-only.
	Schema *ValueSchema
	// Fetched is when the shared reader received the record, in Unix nanoseconds (read side only; 0 when the
	// message did not come through a follower): the start of a delivery's "write" latency stage.
	Fetched int64
	// Behind is how many records followed this one in its partition when the shared reader received it (the
	// partition's readable end, its last stable offset, minus this offset minus 1; read side only, 0 when the
	// message did not come through a follower): with Fetched − Timestamp, how far the reader trails Kafka.
	Behind int64
}

// ValueSchema is the schema headers of a record whose value a payload rule checked or converted. The byte
// slices are shared by every record of the rule and never modified.
type ValueSchema struct {
	Format, Ref, ID []byte
	Binary          bool // the value is no longer the device's text (converted, or framed): no payload format
}

// UserProp is one MQTT 5 user property.
type UserProp struct{ Key, Value string }

var (
	qosValues = [3][]byte{[]byte("0"), []byte("1"), []byte("2")}
	valueOne  = []byte("1")
	valueZero = []byte("0")
	valueVer  = []byte(DataModelVersion)
)

// Record builds the Kafka record of m for the Kafka topic kafkaTopic: key =
// m.Topic, value = m.Payload (an empty, non-null value when Payload is nil:
// use [Message.RetainedRecord] for tombstones), headers as documented above.
//
// The record references m.Payload and m.CorrelationData without copying:
// the caller must keep those bytes unchanged until the record's produce
// callback has run. The bytes of the other string fields are copied, except
// user property names, used as they are as header keys. Record makes three
// allocations (record, headers, one buffer for all string bytes).
func (m *Message) Record(kafkaTopic string) *kgo.Record {
	r := m.record(kafkaTopic)
	if r.Value == nil {
		r.Value = []byte{}
	}
	return r
}

// RetainedRecord is like [Message.Record] for the retained topic: an empty
// payload becomes a tombstone (null value), so compaction forgets the topic.
func (m *Message) RetainedRecord(kafkaTopic string) *kgo.Record {
	r := m.record(kafkaTopic)
	if len(r.Value) == 0 {
		r.Value = nil
	}
	return r
}

func (m *Message) record(kafkaTopic string) *kgo.Record {
	r := &kgo.Record{}
	m.fill(r, nil, kafkaTopic)
	return r
}

// RecordInto is [Message.Record] built in storage the caller keeps and reuses: r (its Headers array is
// reused) and buf, which holds the record's copies of m's string bytes and is returned, grown if it had to
// be, for the next call. With storage that has grown to the size of the messages, it allocates nothing. The
// record references buf and m.Payload until its produce callback has run; only then may r and buf be reused.
func (m *Message) RecordInto(r *kgo.Record, buf []byte, kafkaTopic string) []byte {
	buf = m.fill(r, buf, kafkaTopic)
	if r.Value == nil {
		r.Value = []byte{}
	}
	return buf
}

// fill sets r to m's record, reusing r.Headers' array and buf when they are large enough, and returns the
// buffer now holding the string bytes.
func (m *Message) fill(r *kgo.Record, buf []byte, kafkaTopic string) []byte {
	// Count headers and string bytes so that one slice and one buffer
	// hold everything.
	nh := 2 // version, qos
	nb := len(m.Topic)
	if m.Retain {
		nh++
	}
	if m.ClientID != "" {
		nh++
		nb += len(m.ClientID)
	}
	if m.HasPayloadFormat {
		nh++
	}
	if m.ContentType != "" {
		nh++
		nb += len(m.ContentType)
	}
	if m.ResponseTopic != "" {
		nh++
		nb += len(m.ResponseTopic)
	}
	if m.CorrelationData != nil {
		nh++
	}
	if !m.ExpiresAt.IsZero() {
		nh++
		nb += 20
	}
	if m.Schema != nil {
		nh += 3
	}
	nh += len(m.UserProps)
	for i := range m.UserProps {
		nb += len(m.UserProps[i].Value)
	}

	if cap(buf) < nb {
		buf = make([]byte, 0, nb)
	}
	buf = buf[:0]
	take := func(s string) []byte {
		start := len(buf)
		buf = append(buf, s...)
		return buf[start:len(buf):len(buf)]
	}
	h := r.Headers[:0]
	if cap(h) < nh {
		h = make([]kgo.RecordHeader, 0, nh)
	}
	clear(h[:cap(h)]) // no stale header values kept reachable
	*r = kgo.Record{Topic: kafkaTopic, Key: take(m.Topic), Value: m.Payload}
	h = append(h, kgo.RecordHeader{Key: HeaderVersion, Value: valueVer})
	q := m.QoS
	if q > 2 {
		q = 2 // not reachable from a valid PUBLISH; keep the record decodable
	}
	h = append(h, kgo.RecordHeader{Key: HeaderQoS, Value: qosValues[q]})
	if m.Retain {
		h = append(h, kgo.RecordHeader{Key: HeaderRetain, Value: valueOne})
	}
	if m.ClientID != "" {
		h = append(h, kgo.RecordHeader{Key: HeaderClientID, Value: take(m.ClientID)})
	}
	if m.HasPayloadFormat {
		v := valueZero
		if m.PayloadFormat != 0 {
			v = valueOne
		}
		h = append(h, kgo.RecordHeader{Key: HeaderPayloadFormat, Value: v})
	}
	if m.ContentType != "" {
		h = append(h, kgo.RecordHeader{Key: HeaderContentType, Value: take(m.ContentType)})
	}
	if m.ResponseTopic != "" {
		h = append(h, kgo.RecordHeader{Key: HeaderResponseTopic, Value: take(m.ResponseTopic)})
	}
	if m.CorrelationData != nil {
		h = append(h, kgo.RecordHeader{Key: HeaderCorrelationData, Value: m.CorrelationData})
	}
	if !m.ExpiresAt.IsZero() {
		start := len(buf)
		buf = strconv.AppendInt(buf, m.ExpiresAt.UnixMilli(), 10)
		h = append(h, kgo.RecordHeader{Key: HeaderExpiresAt, Value: buf[start:len(buf):len(buf)]})
	}
	if vs := m.Schema; vs != nil {
		h = append(h, kgo.RecordHeader{Key: HeaderValueFormat, Value: vs.Format}, kgo.RecordHeader{Key: HeaderSchema, Value: vs.Ref})
		if vs.ID != nil {
			h = append(h, kgo.RecordHeader{Key: HeaderSchemaID, Value: vs.ID})
		}
	}
	for i := range m.UserProps {
		k := m.UserProps[i].Key
		if strings.HasPrefix(k, HeaderPrefix) {
			k = HeaderUserEscape + k // allocates only for this rare case
		}
		h = append(h, kgo.RecordHeader{Key: k, Value: take(m.UserProps[i].Value)})
	}
	r.Headers = h
	return buf
}

// ErrBadTopic is wrapped by MessageFromRecord errors about the record key.
var ErrBadTopic = errors.New("not a valid MQTT topic name")

// MessageFromRecord decodes a record written by Ferry or by any Kafka
// producer. A record without Ferry headers is valid: QoS [KafkaBornQoS], no
// retain, no properties, every other header a user property. Unknown
// reserved headers (from a newer data model) are ignored; escaped user
// properties are unescaped.
//
// It fails when the key is not a valid MQTT topic name (null, empty, over
// 65,535 bytes, invalid UTF-8, or containing '+', '#' or NUL) [MQTT-4.7.3-1]
// [MQTT-4.7.3-2] [MQTT-4.7.3-3] [MQTT-1.5.4-1] [MQTT-1.5.4-2], or when a
// reserved header has an invalid value: a QoS, retain or payload format
// flag out of range, an unparsable expiry, a response topic that is not a
// valid topic name, a content type that is not an MQTT UTF-8 string, or
// correlation data over 65,535 bytes. A user-property header (any other
// name, or an escaped one) whose name or value cannot be an MQTT UTF-8
// string (invalid UTF-8, NUL, over 65,535 bytes) is dropped, the record
// kept: Kafka producers add binary headers of their own.
//
// The Message references r.Value and r's correlation data header bytes.
func MessageFromRecord(r *kgo.Record) (*Message, error) {
	m := new(Message)
	if err := decodeRecord(m, r, nil); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeRecord is [MessageFromRecord] into m, a zero Message. With s nil, m shares r.Value and r's
// correlation data and allocates its strings; otherwise every byte m references is copied into s (which must
// have RecordSize(r) bytes and len(r.Headers) user properties free), so that m keeps nothing of r.
func decodeRecord(m *Message, r *kgo.Record, s *recentChunk) error {
	if err := validTopicKey(r.Key); err != nil {
		return fmt.Errorf("cannot decode record %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	*m = Message{
		Topic:     s.str(r.Key),
		Payload:   s.bytes(r.Value),
		Tombstone: r.Value == nil,
		QoS:       KafkaBornQoS,
		Timestamp: r.Timestamp,
	}
	nUser := 0
	for i := range r.Headers {
		if !strings.HasPrefix(r.Headers[i].Key, HeaderPrefix) || strings.HasPrefix(r.Headers[i].Key, HeaderUserEscape) {
			nUser++
		}
	}
	if nUser > 0 {
		m.UserProps = s.userProps(nUser)
	}
	for i := range r.Headers {
		k, v := r.Headers[i].Key, r.Headers[i].Value
		if !strings.HasPrefix(k, HeaderPrefix) {
			if validMQTTString(k) && validMQTTBytes(v) { // [MQTT-1.5.4-1] [MQTT-1.5.4-2]: else dropped, see README
				m.UserProps = append(m.UserProps, UserProp{Key: s.strOf(k), Value: s.str(v)})
			}
			continue
		}
		if err := m.setReserved(k, v, s); err != nil {
			return fmt.Errorf("cannot decode record %s/%d@%d: header %s: %w", r.Topic, r.Partition, r.Offset, k, err)
		}
	}
	return nil
}

func (m *Message) setReserved(k string, v []byte, s *recentChunk) error {
	switch k {
	case HeaderQoS:
		if len(v) != 1 || v[0] < '0' || v[0] > '2' {
			return fmt.Errorf("invalid QoS %q", v)
		}
		m.QoS = v[0] - '0'
	case HeaderRetain:
		b, err := flag(v)
		if err != nil {
			return err
		}
		m.Retain = b == 1
	case HeaderClientID:
		m.ClientID = s.str(v)
	case HeaderPayloadFormat:
		b, err := flag(v)
		if err != nil {
			return err
		}
		m.PayloadFormat, m.HasPayloadFormat = b, true
	case HeaderContentType:
		if !validMQTTBytes(v) { // [MQTT-1.5.4-1] [MQTT-1.5.4-2]
			return errors.New("not a valid MQTT UTF-8 string")
		}
		m.ContentType = s.str(v)
	case HeaderResponseTopic:
		if err := validTopicKey(v); err != nil { // [MQTT-3.3.2-13] [MQTT-3.3.2-14]
			return fmt.Errorf("invalid response topic: %w", err)
		}
		m.ResponseTopic = s.str(v)
	case HeaderCorrelationData:
		if len(v) > 65535 { // MQTT Binary Data has a two-byte length
			return fmt.Errorf("correlation data of %d bytes: at most 65535", len(v))
		}
		m.CorrelationData = s.bytes(v)
	case HeaderExpiresAt:
		ms, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return fmt.Errorf("invalid expiry deadline %q: %w", v, err)
		}
		if m.ExpiresAt = time.UnixMilli(ms); m.ExpiresAt.IsZero() {
			m.ExpiresAt = time.Time{} // year 1: same as absent
		}
	default:
		if name, ok := strings.CutPrefix(k, HeaderUserEscape); ok && validMQTTString(name) && validMQTTBytes(v) {
			m.UserProps = append(m.UserProps, UserProp{Key: s.strOf(name), Value: s.str(v)})
		}
		// Other reserved names, including HeaderVersion, are ignored:
		// a newer writer may add headers older readers do not know.
	}
	return nil
}

func flag(v []byte) (byte, error) {
	if len(v) != 1 || (v[0] != '0' && v[0] != '1') {
		return 0, fmt.Errorf("invalid flag %q: want 0 or 1", v)
	}
	return v[0] - '0', nil
}

// validTopicKey checks that a record key is a valid MQTT topic name.
func validTopicKey(k []byte) error {
	switch {
	case k == nil:
		return fmt.Errorf("record key is null: %w", ErrBadTopic)
	case len(k) == 0: // [MQTT-4.7.3-1]
		return fmt.Errorf("record key is empty: %w", ErrBadTopic)
	case len(k) > 65535: // [MQTT-1.5.4-1] length must fit an MQTT UTF-8 string
		return fmt.Errorf("record key is %d bytes: %w", len(k), ErrBadTopic)
	}
	for i := 0; i < len(k); i++ {
		switch k[i] {
		case '+', '#': // [MQTT-3.3.2-2]
			return fmt.Errorf("record key %q contains a wildcard: %w", k, ErrBadTopic)
		case 0: // [MQTT-1.5.4-2]
			return fmt.Errorf("record key contains NUL: %w", ErrBadTopic)
		}
	}
	if !utf8.Valid(k) { // [MQTT-1.5.4-1]
		return fmt.Errorf("record key is not valid UTF-8: %w", ErrBadTopic)
	}
	return nil
}

// validMQTTBytes reports whether b can travel as an MQTT UTF-8 string: at most 65,535 bytes of valid UTF-8
// without NUL [MQTT-1.5.4-1] [MQTT-1.5.4-2]. Kafka header values are arbitrary bytes (tracing ids, Java
// serialised objects), and a client may close the connection on a string that breaks these rules.
func validMQTTBytes(b []byte) bool {
	if len(b) > 65535 || !utf8.Valid(b) {
		return false
	}
	for _, c := range b {
		if c == 0 {
			return false
		}
	}
	return true
}

func validMQTTString(s string) bool {
	return len(s) <= 65535 && utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// Record is franz-go's record, aliased so that packages above kafkamux
// handle records without importing franz-go.
type Record = kgo.Record

// RecordHeader is a Kafka record header.
type RecordHeader = kgo.RecordHeader

// RecordSize is the size franz-go's producer accounts for r against
// [MaxBufferedBytes]: key, value, and header keys and values.
func RecordSize(r *Record) int {
	n := len(r.Key) + len(r.Value)
	for i := range r.Headers {
		n += len(r.Headers[i].Key) + len(r.Headers[i].Value)
	}
	return n
}
