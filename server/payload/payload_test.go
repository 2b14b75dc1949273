package payload

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

func TestParse(t *testing.T) {
	good := map[string]Spec{
		"a/+/b=json":                               {Filter: "a/+/b", Format: JSON, Version: -1},
		"a/#=jsonschema:file:x.json":               {Filter: "a/#", Format: JSONSchema, File: "x.json", Version: -1},
		"a=avro:registry:t-value":                  {Filter: "a", Format: Avro, Subject: "t-value", Version: -1},
		"a=avro:registry:t-value/3;deliver=json":   {Filter: "a", Format: Avro, Subject: "t-value", Version: 3, Deliver: true},
		"a=protobuf:file:t.proto;message=x.Y;id=7": {Filter: "a", Format: Protobuf, File: "t.proto", Message: "x.Y", ID: 7, Version: -1},
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		got.Raw = ""
		if *got != want {
			t.Errorf("%s: got %+v, want %+v", in, *got, want)
		}
	}
	for _, in := range []string{"", "a", "=json", "a=xml", "a=avro", "a=json:file:x", "a=avro:http:x", "a/#/b=json",
		"a/b#=json", "a=avro:registry:s/0", "a=avro:file:x;message=y", "a=jsonschema:file:x;id=1", "a=json;deliver=yes"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("%q: want an error", in)
		}
	}
}

func TestMatch(t *testing.T) {
	cases := []struct {
		f, topic string
		want     bool
	}{
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false},
		{"a/#", "a", true}, {"a/#", "a/b/c", true}, {"#", "a/b", true}, {"#", "$SYS/x", false},
		{"+/b", "$x/b", false}, {"a/+/c", "a//c", true}, {"a/b", "a/b/c", false}, {"a/b/c", "a/b", false},
	}
	for _, c := range cases {
		if got := match(c.f, c.topic); got != c.want {
			t.Errorf("match(%q, %q) = %v", c.f, c.topic, got)
		}
	}
	s, err := New([]string{"x/#=json", "a/+=json"})
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { s.Match("a/b"); s.Match("q/r/s") }); n != 0 {
		t.Errorf("Match allocates %v times", n)
	}
}

func mustNew(t *testing.T, specs []string, opts ...Opt) *Set {
	t.Helper()
	s, err := New(specs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func reasonOf(err error) int {
	var inv *Invalid
	if errors.As(err, &inv) {
		return inv.Reason
	}
	return -1
}

func TestJSONAndJSONSchema(t *testing.T) {
	s := mustNew(t, []string{"j=json", "s=jsonschema:file:testdata/telemetry.schema.json"})
	if out, hdr, err := s.Ingest(0, []byte("k"), []byte(`{"a":1}`)); err != nil || string(out) != `k{"a":1}` || hdr != nil {
		t.Fatalf("json: %q %v %v", out, hdr, err)
	}
	if out, _, err := s.Ingest(0, []byte("k"), []byte(`{"a":`)); reasonOf(err) != ReasonNotJSON || string(out) != "k" {
		t.Fatalf("bad json: %q %v", out, err)
	}
	if _, hdr, err := s.Ingest(1, nil, []byte(`{"device":"d1","temp":21.5}`)); err != nil || string(hdr.Format) != "jsonschema" {
		t.Fatalf("valid: %v %v", hdr, err)
	}
	_, _, err := s.Ingest(1, nil, []byte(`{"device":"d1","temp":900}`))
	if reasonOf(err) != ReasonSchema || !strings.Contains(err.Error(), "/temp") {
		t.Fatalf("out of range: %v", err)
	}
	_, _, err = s.Ingest(1, nil, []byte(`not json`))
	if reasonOf(err) != ReasonNotJSON {
		t.Fatalf("not json: %v", err)
	}
	st, _ := s.Stats()
	if st[0].Invalid[ReasonNotJSON] != 1 || st[1].Invalid[ReasonSchema] != 1 || st[1].Invalid[ReasonNotJSON] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAvroFile(t *testing.T) {
	s := mustNew(t, []string{"t=avro:file:testdata/telemetry.avsc;id=42;deliver=json"})
	out, hdr, err := s.Ingest(0, nil, []byte(`{"device":"d1","temp":21.5,"seq":9007199254740993,"note":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(hdr.Format) != "avro" || string(hdr.ID) != "42" || string(hdr.Ref) != "file:testdata/telemetry.avsc" {
		t.Fatalf("headers %q %q %q", hdr.Format, hdr.ID, hdr.Ref)
	}
	var ch sr.ConfluentHeader
	id, body, err := ch.DecodeID(out)
	if err != nil || id != 42 {
		t.Fatalf("wire header: %d %v", id, err)
	}
	text, _ := os.ReadFile("testdata/telemetry.avsc")
	sch := avro.MustParse(string(text))
	var got struct {
		Device string   `avro:"device"`
		Temp   float64  `avro:"temp"`
		Seq    int64    `avro:"seq"`
		Unit   string   `avro:"unit"`
		Note   *string  `avro:"note"`
		Tags   []string `avro:"tags"`
	}
	if err := avro.Unmarshal(sch, body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Device != "d1" || got.Temp != 21.5 || got.Seq != 9007199254740993 || got.Unit != "C" || got.Note == nil || *got.Note != "hi" {
		t.Fatalf("decoded %+v", got)
	}
	js, err := s.DeliverJSON("t", out)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js, &back); err != nil || back["device"] != "d1" || back["unit"] != "C" {
		t.Fatalf("to JSON: %s %v", js, err)
	}
	for in, why := range map[string]string{
		`{"temp":1,"seq":1}`:                         "/device: missing",
		`{"device":"d","temp":"hot","seq":1}`:        "/temp: want a number",
		`{"device":"d","temp":1,"seq":1.5}`:          "/seq: 1.5 is not an Avro long",
		`{"device":"d","temp":1,"seq":1,"unit":"K"}`: "/unit: want one of the symbols",
		`{"device":"d","temp":1,"seq":1,"x":1}`:      "/x: not a field",
		`{"device":"d","temp":1,"seq":1,"note":5}`:   "/note: want a string",
	} {
		_, _, err := s.Ingest(0, nil, []byte(in))
		if reasonOf(err) != ReasonSchema || !strings.Contains(err.Error(), why) {
			t.Errorf("%s: got %v, want %q", in, err, why)
		}
	}
}

func TestProtobufFile(t *testing.T) {
	s := mustNew(t, []string{"t=protobuf:file:testdata/telemetry.proto;message=acme.Telemetry;id=5;deliver=json"})
	out, _, err := s.Ingest(0, nil, []byte(`{"device":"d1","temp":21.5,"seq":"7"}`))
	if err != nil {
		t.Fatal(err)
	}
	var ch sr.ConfluentHeader
	id, rest, err := ch.DecodeID(out)
	if err != nil || id != 5 {
		t.Fatal(id, err)
	}
	idx, _, err := ch.DecodeIndex(rest, 8)
	if err != nil || len(idx) != 1 || idx[0] != 1 { // acme.Telemetry is the file's second message
		t.Fatalf("index %v %v", idx, err)
	}
	js, err := s.DeliverJSON("t", out)
	if err != nil || !strings.Contains(string(js), `"device":"d1"`) {
		t.Fatalf("%s %v", js, err)
	}
	if _, _, err := s.Ingest(0, nil, []byte(`{"device":"d1","bogus":1}`)); reasonOf(err) != ReasonSchema {
		t.Fatalf("unknown field: %v", err)
	}
	n := mustNew(t, []string{"t=protobuf:file:testdata/telemetry.proto;message=acme.Envelope.Telemetry"})
	if got := n.rules[0].cur.Load().c.(*protoCodec).index; len(got) != 2 || got[0] != 0 || got[1] != 0 {
		t.Fatalf("nested index %v", got)
	}
}

const avroText = `{"type":"record","name":"T","fields":[{"name":"device","type":"string"},{"name":"temp","type":"double"}]}`

func TestRegistry(t *testing.T) {
	reg := srfake.New()
	defer reg.Close()
	reg.SeedSchema("t-value", 1, 11, sr.Schema{Schema: avroText, Type: sr.TypeAvro})
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	s := mustNew(t, []string{"t/#=avro:registry:t-value;deliver=json", "u=avro:registry:missing-value"},
		Registry(cl), Refresh(20*time.Millisecond), FetchTimeout(time.Second))
	if _, _, err := s.Ingest(0, nil, []byte(`{"device":"d","temp":1}`)); !isUnavailable(err) {
		t.Fatalf("before Start: %v", err)
	}
	s.Start()
	defer s.Close()
	waitFor(t, func() bool { return s.rules[0].cur.Load() != nil })
	out, hdr, err := s.Ingest(0, nil, []byte(`{"device":"d","temp":1}`))
	if err != nil || string(hdr.Ref) != "t-value/1" || string(hdr.ID) != "11" || out[4] != 11 {
		t.Fatalf("%v %v", hdr, err)
	}
	if ok, why := s.Ready(); ok || !strings.Contains(why, "missing-value") {
		t.Fatalf("ready %v %q", ok, why)
	}
	if _, _, err := s.Ingest(1, nil, []byte(`{}`)); !isUnavailable(err) || !strings.Contains(err.Error(), "missing-value") {
		t.Fatalf("unknown subject: %v", err)
	}

	// The registry goes down: the cached schema keeps working; an id never seen cannot be decoded.
	reg.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return true
	})
	errs := func() uint64 { _, n := s.Stats(); return n }
	before := errs()
	waitFor(t, func() bool { return errs() > before+2 })
	if _, _, err := s.Ingest(0, nil, []byte(`{"device":"d","temp":1}`)); err != nil {
		t.Fatalf("cached schema with the registry down: %v", err)
	}
	if js, err := s.DeliverJSON("t/x", out); err != nil || string(js) != `{"device":"d","temp":1}` {
		t.Fatalf("deliver with cached id: %s %v", js, err)
	}
	unknown := append([]byte{0, 0, 0, 0, 99}, out[5:]...)
	if _, err := s.DeliverJSON("t/x", unknown); err == nil || !strings.Contains(err.Error(), "schema id 99") {
		t.Fatalf("unknown id: %v", err)
	}
	if _, err := s.DeliverJSON("other", out); !errors.Is(err, ErrNoRule) {
		t.Fatalf("no rule: %v", err)
	}

	// Back up, with a new version: the latest rule picks it up.
	reg.ClearInterceptors()
	reg.SeedSchema("t-value", 2, 12, sr.Schema{Schema: avroText, Type: sr.TypeAvro})
	waitFor(t, func() bool { l := s.rules[0].cur.Load(); return l != nil && l.id == 12 })
}

func isUnavailable(err error) bool {
	var u *Unavailable
	return errors.As(err, &u)
}

// waitFor polls cond until it holds; the test's own deadline bounds it (no timing is asserted).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		time.Sleep(5 * time.Millisecond)
	}
}

// A number math/big cannot read under a numeric keyword is refused with a reason; the validator library
// would dereference a nil *big.Rat on it.
func TestJSONSchemaHugeNumber(t *testing.T) {
	s := mustNew(t, []string{"s=jsonschema:file:testdata/telemetry.schema.json"})
	for _, doc := range []string{`{"device":"d1","temp":1E2000000}`, `{"device":"d1","temp":-1e2000000}`} {
		if _, _, err := s.Ingest(0, nil, []byte(doc)); reasonOf(err) != ReasonSchema {
			t.Errorf("%s: %v", doc, err)
		}
	}
}

// A number with an exponent past ±4096 is refused before the validator library sees it: the library would
// spend tens of milliseconds of the event loop on 1e999999 under a numeric keyword. The same text in a string,
// and ordinary exponents, are unaffected.
func TestJSONSchemaHugeExponentRefused(t *testing.T) {
	s := mustNew(t, []string{"s=jsonschema:file:testdata/telemetry.schema.json"})
	for _, doc := range []string{`{"device":"d1","temp":1e999999}`, `{"device":"d1","temp":-1E5000}`, `{"device":"d1","temp":1e+4097}`} {
		_, _, err := s.Ingest(0, nil, []byte(doc))
		if reasonOf(err) != ReasonSchema || !strings.Contains(err.Error(), "exponent") {
			t.Errorf("%s: %v, want a refusal naming the exponent", doc, err)
		}
	}
	for _, doc := range []string{`{"device":"1e999999","temp":12.5e0}`, `{"device":"d1","temp":1e2}`} {
		if _, _, err := s.Ingest(0, nil, []byte(doc)); err != nil {
			t.Errorf("%s: %v, want it accepted", doc, err)
		}
	}
	if got := hugeExponent([]byte(`[true,false,null,1e4096,"x\"1e9999",3E-4096]`)); got != -1 {
		t.Errorf("hugeExponent found one at %d in a document without", got)
	}
}

// A schema — from the registry above all — cannot make Ferry read a local file or fetch a URL through a $ref:
// references resolve only to the schema itself and to the registry references loaded with it.
func TestJSONSchemaRefLoadsNothing(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret.json")
	if err := os.WriteFile(secret, []byte(`{"type":"string"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"file://" + secret, "http://127.0.0.1:1/x.json"} {
		_, err := newJSONSchema(`{"properties":{"x":{"$ref":"`+ref+`"}}}`, nil)
		if err == nil {
			t.Errorf("$ref %s: compiled, want an error (nothing may be loaded)", ref)
		}
	}
}

func TestParseFraming(t *testing.T) {
	sp, err := Parse("j/#=jsonschema:registry:j-value;framing=confluent")
	if err != nil || !sp.Frame {
		t.Fatalf("%+v %v", sp, err)
	}
	for _, in := range []string{"j=jsonschema:file:x.json;framing=confluent", "j=avro:registry:s;framing=confluent",
		"j=jsonschema:registry:s;framing=yes"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("%q: want an error", in)
		}
	}
}

// A JSON Schema rule on a registry subject writes the payload byte for byte by default; with
// framing=confluent it writes the Confluent wire format (magic byte, schema id, the JSON), which deliver=json
// strips again.
func TestJSONSchemaFraming(t *testing.T) {
	reg := srfake.New()
	defer reg.Close()
	text, err := os.ReadFile("testdata/telemetry.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	reg.SeedSchema("j-value", 1, 21, sr.Schema{Schema: string(text), Type: sr.TypeJSON})
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	s := mustNew(t, []string{"plain/#=jsonschema:registry:j-value", "framed/#=jsonschema:registry:j-value;framing=confluent;deliver=json"},
		Registry(cl), FetchTimeout(time.Second))
	s.Start()
	defer s.Close()
	waitFor(t, func() bool { ok, _ := s.Ready(); return ok })
	doc := []byte(`{"device":"d1","temp":21.5}`)
	out, hdr, err := s.Ingest(0, nil, doc)
	if err != nil || string(out) != string(doc) || hdr.Binary || string(hdr.ID) != "21" {
		t.Fatalf("plain: %q %+v %v", out, hdr, err)
	}
	out, hdr, err = s.Ingest(1, nil, doc)
	if err != nil || !hdr.Binary {
		t.Fatalf("framed: %+v %v", hdr, err)
	}
	var ch sr.ConfluentHeader
	id, body, err := ch.DecodeID(out)
	if err != nil || id != 21 || string(body) != string(doc) {
		t.Fatalf("framed: id %d body %q %v", id, body, err)
	}
	if _, _, err := s.Ingest(1, nil, []byte(`{"device":"d1","temp":900}`)); reasonOf(err) != ReasonSchema {
		t.Fatalf("framed, invalid: %v", err)
	}
	if js, err := s.DeliverJSON("framed/x", out); err != nil || string(js) != string(doc) {
		t.Fatalf("deliver: %q %v", js, err)
	}
}

// Registry schemas with references: the referenced subjects are fetched (and theirs) and compiled with the
// schema, for Avro (named types), Protobuf (imports) and JSON Schema ($ref by the reference's name).
func TestRegistryReferences(t *testing.T) {
	reg := srfake.New()
	defer reg.Close()
	seed := func(subject string, id int, typ sr.SchemaType, text string, refs ...sr.SchemaReference) {
		reg.SeedSchema(subject, 1, id, sr.Schema{Schema: text, Type: typ, References: refs})
	}
	seed("point-avro", 31, sr.TypeAvro, `{"type":"record","name":"Point","namespace":"geo","fields":[{"name":"lat","type":"double"}]}`)
	seed("place-avro", 32, sr.TypeAvro, `{"type":"record","name":"Place","namespace":"geo","fields":[{"name":"name","type":"string"},{"name":"at","type":"geo.Point"}]}`,
		sr.SchemaReference{Name: "geo.Point", Subject: "point-avro", Version: 1})
	seed("point-proto", 33, sr.TypeProtobuf, "syntax = \"proto3\";\npackage geo;\nmessage Point { double lat = 1; }")
	seed("place-proto", 34, sr.TypeProtobuf, "syntax = \"proto3\";\npackage geo;\nimport \"geo/point.proto\";\nmessage Place { string name = 1; Point at = 2; }",
		sr.SchemaReference{Name: "geo/point.proto", Subject: "point-proto", Version: 1})
	seed("lat-json", 35, sr.TypeJSON, `{"type":"number","minimum":-90,"maximum":90}`)
	seed("point-json", 36, sr.TypeJSON, `{"type":"object","required":["lat"],"properties":{"lat":{"$ref":"lat.json"}}}`,
		sr.SchemaReference{Name: "lat.json", Subject: "lat-json", Version: 1})
	seed("place-json", 37, sr.TypeJSON, `{"type":"object","properties":{"at":{"$ref":"point.json"}}}`,
		sr.SchemaReference{Name: "point.json", Subject: "point-json", Version: 1})
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	s := mustNew(t, []string{"a=avro:registry:place-avro;deliver=json", "p=protobuf:registry:place-proto;message=geo.Place;deliver=json",
		"j=jsonschema:registry:place-json"}, Registry(cl), FetchTimeout(time.Second))
	s.Start()
	defer s.Close()
	waitFor(t, func() bool { ok, _ := s.Ready(); return ok })
	doc := []byte(`{"name":"x","at":{"lat":45.5}}`)
	for i, topic := range []string{"a", "p"} {
		rec, _, err := s.Ingest(i, nil, doc)
		if err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
		js, err := s.DeliverJSON(topic, rec)
		var back map[string]any
		if err != nil || json.Unmarshal(js, &back) != nil || back["at"].(map[string]any)["lat"] != 45.5 {
			t.Fatalf("%s: round trip %s %v", topic, js, err)
		}
	}
	if _, _, err := s.Ingest(2, nil, doc); err != nil {
		t.Fatalf("json: %v", err)
	}
	_, _, err = s.Ingest(2, nil, []byte(`{"at":{"lat":91}}`))
	if reasonOf(err) != ReasonSchema || !strings.Contains(err.Error(), "/at/lat") {
		t.Fatalf("json, through two references: %v", err)
	}
}

// Options out of range are refused with an error that names them, before any rule is parsed.
func TestNewRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		opt  Opt
		want string
	}{
		{Refresh(-time.Second), "schema refresh interval -1s"},
		{FetchTimeout(0), "schema registry timeout 0s"},
		{Logger(nil), "logger: nil"},
	} {
		if _, err := New([]string{"x/#=json"}, tc.opt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New with a bad option: %v, want an error naming %q", err, tc.want)
		}
	}
	if _, err := New([]string{"x/#=json"}, Refresh(0), FetchTimeout(time.Second), Hold(0)); err != nil {
		t.Fatalf("Refresh 0 (never) and Hold 0 (the fetch timeout): %v", err)
	}
}
