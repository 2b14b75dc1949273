package payload

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

var jsonCorpus = []string{
	`{}`, `[]`, `0`, `-0`, `1.5e-3`, `-12E+2`, `"x"`, `true`, `false`, `null`, ` {"a" : [1, 2.0, {"b": null}] } `,
	`"\u00e9\n\t\"\\\/"`, `"\ud83d\ude00"`, `"é😀"`, `{"a":1,"a":2}`, `[[[[]]]]`,
	// invalid
	``, ` `, `{`, `[1,]`, `{"a":}`, `{"a" 1}`, `01`, `1.`, `.5`, `-`, `1e`, `+1`, `tru`, `nul`, `"abc`, "\"a\x01\"",
	`"\x"`, `"\u12"`, `{"a":1}x`, `[1 2]`, `{a:1}`, `'a'`, `"\ud800"`, "\"\xff\"", `NaN`, `1 2`,
}

// parseJSON accepts exactly the documents encoding/json accepts (strings valid UTF-8) and gives the same values.
func TestParseJSON(t *testing.T) {
	for _, in := range jsonCorpus {
		checkParse(t, []byte(in))
	}
}

func checkParse(t *testing.T, in []byte) {
	t.Helper()
	got, err := parseJSON(in)
	d := json.NewDecoder(bytes.NewReader(in))
	d.UseNumber()
	var want any
	werr := d.Decode(&want)
	if werr == nil && len(bytes.Trim(in[d.InputOffset():], " \t\r\n")) > 0 {
		werr = errors.New("data after the value") // as encoding/json's Unmarshal says
	}
	if werr == nil && err != nil && strings.Contains(err.Error(), "UTF") {
		return // invalid UTF-8 or a lone surrogate, which encoding/json replaces by U+FFFD; parseJSON refuses it
	}
	if (err == nil) != (werr == nil) {
		t.Fatalf("%q: parseJSON err %v, encoding/json err %v", in, err, werr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: got %#v, want %#v", in, got, want)
	}
}

func FuzzParseJSON(f *testing.F) {
	for _, in := range jsonCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, in []byte) { checkParse(t, in) })
}
