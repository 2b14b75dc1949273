package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bufbuild/protocompile"
	"github.com/eclipse/paho.golang/paho"
	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
	"github.com/ferrymq/ferry/server/payload"
)

// The schema registry in these tests is franz-go's srfake: an in-process HTTP server implementing the
// Confluent REST endpoints, written against the same client library (pkg/sr) Ferry uses. It is a test double
// of an external HTTP service; Kafka (kfake), the MQTT clients (paho) and the sockets are real.

func payloadSet(t *testing.T, rules []string, opts ...payload.Opt) *payload.Set {
	t.Helper()
	s, err := payload.New(rules, opts...)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// pubAck publishes and returns the PUBACK/PUBREC, refusals included (paho returns them with an error).
func pubAck(t *testing.T, c *v5, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if r == nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
	return r
}

// waitUntil polls cond until it holds; the test's deadline bounds it (no timing is asserted).
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		time.Sleep(5 * time.Millisecond)
	}
}

// A JSON Schema rule: valid payloads reach Kafka as published, with headers naming the schema; invalid ones
// (schema mismatch, not JSON) get PUBACK/PUBREC 0x99 with the first validation error and never reach Kafka;
// topics no rule matches are not checked.
func TestPayloadJSONSchema(t *testing.T) {
	set := payloadSet(t, []string{"sensors/+/t=jsonschema:file:payload/testdata/telemetry.schema.json"})
	f := startFerry(t, server.Payload(set, false))
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "ps-pub", CleanStart: true})
	ok := func(p string) {
		if r := pubAck(t, pub, &paho.Publish{Topic: "sensors/d1/t", QoS: 1, Payload: []byte(p)}); r.ReasonCode != 0 {
			t.Fatalf("valid %s: %#x", p, r.ReasonCode)
		}
	}
	ok(`{"device":"d1","temp":21.5}`)
	for _, c := range []struct {
		qos     byte
		payload string
		why     string
	}{
		{1, `{"device":"d1","temp":900}`, "/temp"},
		{2, `{"temp":1}`, "device"},
		{1, `{"device":`, "not JSON"},
	} {
		r := pubAck(t, pub, &paho.Publish{Topic: "sensors/d1/t", QoS: c.qos, Payload: []byte(c.payload)})
		if r.ReasonCode != byte(mqttcodec.PayloadFormatInvalid) || !strings.Contains(r.Properties.ReasonString, c.why) {
			t.Fatalf("%s: reason %#x %q, want 0x99 naming %q", c.payload, r.ReasonCode, r.Properties.ReasonString, c.why)
		}
	}
	ok(`{"device":"d1","temp":22}`)
	if r := pubAck(t, pub, &paho.Publish{Topic: "other", QoS: 1, Payload: []byte("not json")}); r.ReasonCode != 0 {
		t.Fatalf("unchecked topic: %#x", r.ReasonCode)
	}
	recs := kafkaRecords(t, f.mux.Addr(), f.mux.MessagesTopic(), 3)
	var got []string
	for _, r := range recs {
		if string(r.Key) == "sensors/d1/t" {
			got = append(got, string(r.Value))
			if header(r, kafkamux.HeaderValueFormat) != "jsonschema" || !strings.HasPrefix(header(r, kafkamux.HeaderSchema), "file:") {
				t.Fatalf("headers %v", r.Headers)
			}
		}
	}
	// Same topic, same partition: an invalid payload would sit between the two valid ones.
	if len(got) != 2 || got[0] != `{"device":"d1","temp":21.5}` || got[1] != `{"device":"d1","temp":22}` {
		t.Fatalf("records %q", got)
	}
	st, _ := f.srv.PayloadStats()
	if st[0].Invalid[payload.ReasonSchema] != 2 || st[0].Invalid[payload.ReasonNotJSON] != 1 {
		t.Fatalf("stats %+v", st[0])
	}
}

// v3.1.1 clients cannot be told 0x99: by default the invalid PUBLISH is acknowledged and dropped; with
// PayloadV3Disconnect the connection closes, at any QoS. Nothing invalid reaches Kafka either way.
func TestPayloadV3(t *testing.T) {
	for _, disconnect := range []bool{false, true} {
		set := payloadSet(t, []string{"v3/#=json"})
		f := startFerry(t, server.Payload(set, disconnect))
		c := dialV3(t, f.addr, "pv3", true, nil)
		tok := c.Publish("v3/x", 1, false, "{bad")
		if !disconnect {
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("drop: want the ack, got %v", tok.Error())
			}
		} else {
			waitUntil(t, func() bool { return !c.IsConnectionOpen() })
			c = dialV3(t, f.addr, "pv3b", true, nil)
			c.Publish("v3/x", 0, false, "{bad") // the action holds at QoS 0 too
			waitUntil(t, func() bool { return !c.IsConnectionOpen() })
			c = dialV3(t, f.addr, "pv3c", true, nil)
		}
		if tok := c.Publish("v3/x", 1, false, `{"ok":true}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("valid: %v", tok.Error())
		}
		recs := kafkaRecords(t, f.mux.Addr(), f.mux.MessagesTopic(), 1)
		if len(recs) != 1 || string(recs[0].Value) != `{"ok":true}` {
			t.Fatalf("disconnect=%v: records %v", disconnect, recs)
		}
	}
}

const telemetryAvro = `{"type":"record","name":"Telemetry","namespace":"acme","fields":[
 {"name":"device","type":"string"},{"name":"temp","type":"double"},{"name":"seq","type":"long"},
 {"name":"note","type":["null","string"],"default":null}]}`

type telemetry struct {
	Device string  `avro:"device"`
	Temp   float64 `avro:"temp"`
	Seq    int64   `avro:"seq"`
	Note   *string `avro:"note"`
}

func registry(t *testing.T) (*srfake.Registry, *sr.Client) {
	reg := srfake.New()
	t.Cleanup(reg.Close)
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	return reg, cl
}

// JSON from a device becomes an Avro record in the Confluent wire format, which a Kafka consumer decodes with
// the registry's schema and a real Avro library; and an Avro record produced by a Kafka application reaches a
// subscriber as JSON.
func TestPayloadAvroBothWays(t *testing.T) {
	reg, cl := registry(t)
	reg.SeedSchema("telemetry-value", 1, 7, sr.Schema{Schema: telemetryAvro, Type: sr.TypeAvro})
	set := payloadSet(t, []string{"sensors/#=avro:registry:telemetry-value", "cmd/#=avro:registry:telemetry-value;deliver=json"},
		payload.Registry(cl))
	f := startFerry(t, server.Payload(set, false))
	waitUntil(t, func() bool { ok, _ := f.srv.Ready(); return ok })

	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "av-pub", CleanStart: true})
	if r := pubAck(t, pub, &paho.Publish{Topic: "sensors/d1", QoS: 1, Payload: []byte(`{"device":"d1","temp":21.5,"seq":3}`)}); r.ReasonCode != 0 {
		t.Fatalf("publish: %#x %s", r.ReasonCode, r.Properties.ReasonString)
	}
	if r := pubAck(t, pub, &paho.Publish{Topic: "sensors/d1", QoS: 1, Payload: []byte(`{"device":"d1","temp":"warm","seq":3}`)}); r.ReasonCode != 0x99 {
		t.Fatalf("mismatch: %#x", r.ReasonCode)
	}
	recs := kafkaRecords(t, f.mux.Addr(), f.mux.MessagesTopic(), 1)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	if header(r, kafkamux.HeaderValueFormat) != "avro" || header(r, kafkamux.HeaderSchema) != "telemetry-value/1" || header(r, kafkamux.HeaderSchemaID) != "7" {
		t.Fatalf("headers %v", r.Headers)
	}
	var serde sr.Serde // the consumer's side: the schema by the id in the record, from the registry
	ss, err := cl.SchemaByID(context.Background(), 7)
	if err != nil {
		t.Fatal(err)
	}
	sch, err := avro.Parse(ss.Schema)
	if err != nil {
		t.Fatal(err)
	}
	serde.Register(7, telemetry{}, sr.DecodeFn(func(b []byte, v any) error { return avro.Unmarshal(sch, b, v) }))
	var got telemetry
	if err := serde.Decode(r.Value, &got); err != nil {
		t.Fatal(err)
	}
	if got.Device != "d1" || got.Temp != 21.5 || got.Seq != 3 || got.Note != nil {
		t.Fatalf("decoded %+v", got)
	}

	// A Kafka application answers in Avro; the subscriber gets JSON.
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "av-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "cmd/#", QoS: 1})
	serde.Register(7, telemetry{}, sr.EncodeFn(func(v any) ([]byte, error) { return avro.Marshal(sch, v) }))
	note := "from kafka"
	val, err := serde.Encode(telemetry{Device: "d1", Temp: 1.5, Seq: 9, Note: &note})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(f.mux.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: f.mux.MessagesTopic(), Key: []byte("cmd/d1"), Value: val}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	m := sub.next(t)
	var js map[string]any
	if err := json.Unmarshal(m.Payload, &js); err != nil {
		t.Fatalf("not JSON: %q", m.Payload)
	}
	if js["device"] != "d1" || js["seq"] != 9.0 || m.Properties.ContentType != "application/json" {
		t.Fatalf("got %s content type %q", m.Payload, m.Properties.ContentType)
	}
	if js["note"] != note { // an optional field's union: its value, as the device would send it
		t.Fatalf("union: %v", js["note"])
	}
}

// Registry trouble: a schema loaded before the registry went down keeps working; a subject that was never
// fetched refuses its publishes (v5 0x83 with the reason; v3 disconnected without an ack, so it sends again)
// and /readyz says why; a record with an unknown schema id is delivered unchanged and counted.
func TestPayloadRegistryDown(t *testing.T) {
	reg, cl := registry(t)
	reg.SeedSchema("telemetry-value", 1, 7, sr.Schema{Schema: telemetryAvro, Type: sr.TypeAvro})
	set := payloadSet(t, []string{"sensors/#=avro:registry:telemetry-value;deliver=json", "missing/#=avro:registry:nope-value"},
		payload.Registry(cl), payload.Refresh(10*time.Millisecond), payload.FetchTimeout(time.Second))
	f := startFerry(t, server.Payload(set, false))
	waitUntil(t, func() bool { st, _ := f.srv.PayloadStats(); return st[0].Loaded })
	reg.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		http.Error(w, `{"error_code":50001,"message":"down"}`, http.StatusServiceUnavailable)
		return true
	})
	_, errs0 := f.srv.PayloadStats()
	waitUntil(t, func() bool { _, n := f.srv.PayloadStats(); return n > errs0+2 })
	if ok, why := f.srv.Ready(); ok || !strings.Contains(why, "nope-value") {
		t.Fatalf("ready %v %q", ok, why)
	}

	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "rd-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "sensors/#", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "rd-pub", CleanStart: true})
	if r := pubAck(t, pub, &paho.Publish{Topic: "sensors/d1", QoS: 1, Payload: []byte(`{"device":"d1","temp":1,"seq":1}`)}); r.ReasonCode != 0 {
		t.Fatalf("cached schema: %#x %s", r.ReasonCode, r.Properties.ReasonString)
	}
	if m := sub.next(t); !strings.Contains(string(m.Payload), `"device":"d1"`) {
		t.Fatalf("round trip: %q", m.Payload)
	}
	r := pubAck(t, pub, &paho.Publish{Topic: "missing/x", QoS: 1, Payload: []byte(`{}`)})
	if r.ReasonCode != byte(mqttcodec.ImplementationSpecificError) || !strings.Contains(r.Properties.ReasonString, "nope-value") {
		t.Fatalf("unknown subject: %#x %q", r.ReasonCode, r.Properties.ReasonString)
	}
	v3 := dialV3(t, f.addr, "rd-v3", true, nil)
	v3.Publish("missing/x", 1, false, "{}")
	waitUntil(t, func() bool { return !v3.IsConnectionOpen() })

	// A Kafka application writes a record framed with an id the registry (down) never gave Ferry.
	prod, err := kgo.NewClient(kgo.SeedBrokers(f.mux.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	odd := []byte{0, 0, 0, 0, 99, 2, 'x'}
	if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: f.mux.MessagesTopic(), Key: []byte("sensors/d2"), Value: odd}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if m := sub.next(t); string(m.Payload) != string(odd) || m.Properties.ContentType != "" {
		t.Fatalf("unknown id: %q %q", m.Payload, m.Properties.ContentType)
	}
	st, _ := f.srv.PayloadStats()
	if st[0].DeliverErrors != 1 || st[0].DeliveredJSON != 1 || st[1].Invalid[payload.ReasonUnavailable] != 2 {
		t.Fatalf("stats %+v", st)
	}
	for _, r := range kafkaRecords(t, f.mux.Addr(), f.mux.MessagesTopic(), 2) {
		if strings.HasPrefix(string(r.Key), "missing/") {
			t.Fatalf("unvalidated record written: %s", r.Key)
		}
	}
}

const telemetryProto = `syntax = "proto3";
package acme;
message Other { string x = 1; }
message Telemetry { string device = 1; double temp = 2; int64 seq = 3; }`

// Protobuf from the registry: device JSON (protojson) becomes a Protobuf record in the Confluent wire format
// with the message-index array, decoded on the Kafka side with the registry's schema; a Protobuf record from a
// Kafka application reaches a subscriber as JSON.
func TestPayloadProtobuf(t *testing.T) {
	reg, cl := registry(t)
	reg.SeedSchema("telemetry-value", 1, 21, sr.Schema{Schema: telemetryProto, Type: sr.TypeProtobuf})
	set := payloadSet(t, []string{"pb/#=protobuf:registry:telemetry-value;message=acme.Telemetry;deliver=json"}, payload.Registry(cl))
	f := startFerry(t, server.Payload(set, false))
	waitUntil(t, func() bool { ok, _ := f.srv.Ready(); return ok })
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "pb-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "pb/#", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "pb-pub", CleanStart: true})
	if r := pubAck(t, pub, &paho.Publish{Topic: "pb/d1", QoS: 1, Payload: []byte(`{"device":"d1","temp":2.5,"seq":"4"}`)}); r.ReasonCode != 0 {
		t.Fatalf("publish: %#x %s", r.ReasonCode, r.Properties.ReasonString)
	}
	if r := pubAck(t, pub, &paho.Publish{Topic: "pb/d1", QoS: 1, Payload: []byte(`{"device":"d1","bogus":1}`)}); r.ReasonCode != 0x99 {
		t.Fatalf("unknown field: %#x", r.ReasonCode)
	}
	recs := kafkaRecords(t, f.mux.Addr(), f.mux.MessagesTopic(), 1)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	var ch sr.ConfluentHeader
	id, rest, err := ch.DecodeID(recs[0].Value)
	if err != nil || id != 21 {
		t.Fatalf("id %d %v", id, err)
	}
	idx, body, err := ch.DecodeIndex(rest, 8)
	if err != nil || len(idx) != 1 || idx[0] != 1 {
		t.Fatalf("message index %v %v", idx, err)
	}
	md := compileProto(t, telemetryProto).Messages().Get(idx[0])
	m := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(body, m); err != nil {
		t.Fatal(err)
	}
	if m.Get(md.Fields().ByName("device")).String() != "d1" || m.Get(md.Fields().ByName("seq")).Int() != 4 {
		t.Fatalf("decoded %v", m)
	}
	if got := sub.next(t); got.Properties.ContentType != "application/json" || !strings.Contains(string(got.Payload), `"seq":"4"`) {
		t.Fatalf("subscriber got %s (%q)", got.Payload, got.Properties.ContentType)
	}
}

func compileProto(t *testing.T, text string) protoreflect.FileDescriptor {
	t.Helper()
	comp := protocompile.Compiler{Resolver: &protocompile.SourceResolver{
		Accessor: protocompile.SourceAccessorFromMap(map[string]string{"t.proto": text}),
	}}
	files, err := comp.Compile(context.Background(), "t.proto")
	if err != nil {
		t.Fatal(err)
	}
	return files[0]
}
