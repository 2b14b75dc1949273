package payload

import (
	"strings"
	"testing"
)

// checkSchemas exercise every keyword the fast check handles, and some it leaves to the library.
var checkSchemas = []string{
	// the bench document's schema
	`{"type":"object","required":["device","temp","seq","sent"],"additionalProperties":false,
	  "properties":{"device":{"type":"string","minLength":1,"maxLength":64},"temp":{"type":"number","minimum":-50,"maximum":150},
	  "seq":{"type":"integer","minimum":0},"sent":{"type":"integer"}}}`,
	`{"type":["object","null"],"properties":{"a":{"type":"array","items":{"type":"integer","multipleOf":3},"minItems":1,"maxItems":3},
	  "b":{"enum":["x","é",1.5,null,true]},"c":{"const":"q"},"d":{"type":"string","pattern":"^[a-z]+$"}}}`,
	`{"properties":{"n":{"exclusiveMinimum":0.1,"exclusiveMaximum":10,"multipleOf":0.5},"i":{"type":"integer","maximum":9007199254740993}}}`,
	`{"anyOf":[{"type":"string"},{"type":"integer","minimum":5}],"not":{"const":7}}`,
	`{"oneOf":[{"type":"integer"},{"type":"number","minimum":2}]}`,
	`{"$defs":{"node":{"type":"object","required":["v"],"properties":{"v":{"type":"number"},"next":{"$ref":"#/$defs/node"}}}},
	  "$ref":"#/$defs/node","properties":{"extra":false}}`,
	`{"$schema":"http://json-schema.org/draft-07/schema#","definitions":{"s":{"type":"string"}},
	  "properties":{"r":{"$ref":"#/definitions/s","maxLength":1},"f":{"format":"email"}}}`,
	`{"$schema":"http://json-schema.org/draft-04/schema#","properties":{"x":{"minimum":1,"exclusiveMinimum":true}}}`,
	`{"allOf":[{"required":["a"]},{"properties":{"a":{"type":"boolean"}}}],"additionalProperties":{"type":"string"}}`,
	`{"items":{"enum":[[1],{"a":1},2]},"uniqueItems":true}`,
	`{"properties":{"a":true,"b":false},"minProperties":1}`,
	`false`, `true`,
}

var checkDocs = []string{
	`{"device":"bench-17","temp":21.5,"seq":123456789,"sent":1765000000000000000}`,
	`{"device":"","temp":21.5,"seq":1,"sent":1}`, `{"device":"d","temp":150.0000000000000001,"seq":0,"sent":1}`,
	`{"device":"d","temp":-50,"seq":-0,"sent":1e3}`, `{"device":"d","temp":151,"seq":1,"sent":1}`,
	`{"device":"d\u00e9","temp":1,"seq":1.0,"sent":1}`, `{"device":"d","temp":1,"seq":1,"sent":1,"x":1}`,
	`{"device":"d","temp":1,"seq":1}`, `{"device":"d","device":"e","temp":1,"seq":1,"sent":1}`,
	`{"device":"d","temp":"1","seq":1,"sent":1}`, `{"device":"d","temp":1,"seq":1,"sent":1`,
	`null`, `{"a":[3,6]}`, `{"a":[]}`, `{"a":[3,4]}`, `{"a":[3,6,9,12]}`, `{"a":[3.0]}`, `{"a":[9007199254740993]}`,
	`{"b":"x"}`, `{"b":"\u00e9"}`, `{"b":"é"}`, `{"b":1.50}`, `{"b":15e-1}`, `{"b":null}`, `{"b":true}`, `{"b":false}`,
	`{"b":"y"}`, `{"c":"q"}`, `{"c":"\u0071"}`, `{"c":"r"}`, `{"d":"abc"}`, `{"d":"aB"}`, `{"d":"a\nb"}`,
	`{"n":0.1}`, `{"n":0.5}`, `{"n":0.10000000000000001}`, `{"n":10}`, `{"n":9.5}`, `{"n":0.7}`,
	`{"i":9007199254740993}`, `{"i":9007199254740994}`, `{"i":9007199254740993.0}`, `{"i":1e400}`,
	`"s"`, `5`, `4`, `7`, `7.0`, `1.5`, `2.5`, `2`, `3`, `true`, `[]`, `{}`, `1e-400`, `-1e400`,
	`{"v":1}`, `{"v":1,"next":{"v":2,"next":{"v":"x"}}}`, `{"v":1,"next":{}}`, `{"v":1,"extra":1}`,
	`{"r":"a"}`, `{"r":"ab"}`, `{"r":1}`, `{"f":"a@b.c"}`, `{"f":"nope"}`,
	`{"x":1}`, `{"x":1.01}`, `{"a":true}`, `{"a":true,"z":"s"}`, `{"a":true,"z":1}`, `{"z":"s"}`,
	`[[1],2]`, `[2,2]`, `[{"a":1}]`, `[3]`, `{"b":1}`, `{"a":1,"a":true}`,
	`[1,]`, `{"a" 1}`, `"\ud800"`, "\"\xff\"", `01`, ` {"device" : "d" , "temp" : 1 , "seq" : 1 , "sent" : 1 } `,
	`{"a":[1,2,[3,{"x":[]}]]}`, `1E2000000`, `{"n":1e2000000}`, `{"temp":-1E2000000}`, `{"i":1e-2000000}`, `[` + strings.Repeat(`[`, 1200) + strings.Repeat(`]`, 1201),
}

// The fast check never contradicts the library: what it calls valid the library accepts, what it calls
// invalid the library refuses (unsure is always allowed).
func TestCheckAgreesWithLibrary(t *testing.T) {
	fast := 0
	for _, sc := range checkSchemas {
		j, err := newJSONSchema(sc, nil)
		if err != nil {
			t.Fatalf("%s: %v", sc, err)
		}
		for _, d := range checkDocs {
			if agree(t, j, []byte(d)) {
				fast++
			}
		}
	}
	// most of the pairs are decided without the library
	if total := len(checkSchemas) * len(checkDocs); fast < total/2 {
		t.Errorf("the fast check decided %d of %d", fast, total)
	}
}

// agree checks the fast verdict against the library's and reports whether the fast check decided.
func agree(t *testing.T, j *jsonSchemaCodec, doc []byte) bool {
	t.Helper()
	v := checkJSON(j.root, doc)
	_, err := j.slowIngest(nil, doc)
	switch {
	case v == vOK && err != nil:
		t.Errorf("schema %s, document %q: fast check valid, library: %v", j.s.Location, doc, err)
	case v == vBad && err == nil:
		t.Errorf("schema %s, document %q: fast check invalid, library valid", j.s.Location, doc)
	}
	return v != vUnsure
}

func FuzzCheckJSON(f *testing.F) {
	var codecs []*jsonSchemaCodec
	for _, sc := range checkSchemas {
		j, err := newJSONSchema(sc, nil)
		if err != nil {
			f.Fatal(err)
		}
		codecs = append(codecs, j)
	}
	for i, d := range checkDocs {
		f.Add(uint8(i), []byte(d))
	}
	f.Fuzz(func(t *testing.T, which uint8, doc []byte) {
		agree(t, codecs[int(which)%len(codecs)], doc)
	})
}

// A valid ordinary document costs no allocation.
func TestCheckAllocs(t *testing.T) {
	j, err := newJSONSchema(checkSchemas[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	doc := []byte(checkDocs[0])
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := j.ingest(buf[:0], doc); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ingest of a valid document allocates %v times", n)
	}
}
