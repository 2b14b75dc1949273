package sessions

import (
	"strings"
	"testing"
)

// Decode parses a record of this version once and still tells apart, for one it cannot use, a value
// that is not JSON, a record of another version and a record of this version that does not fit its kind.
func TestDecodeRec(t *testing.T) {
	o, err := Decode[OwnerRec]([]byte(`{"v":1,"instance":"a","epoch":7,"connected":true}`))
	if err != nil || o == nil || o.Instance != "a" || o.Epoch != 7 || !o.Connected {
		t.Fatalf("v1 owner record: %+v, %v", o, err)
	}
	if o, err := Decode[OwnerRec](nil); o != nil || err != nil {
		t.Fatalf("tombstone: %+v, %v; want nil, nil", o, err)
	}
	for _, c := range []struct{ value, want string }{
		{`not json`, "cannot decode: "},
		{`{"v":2,"instance":"a"}`, "unknown record version 2 (this instance reads version 1)"},
		{`{"v":2,"instance":7}`, "unknown record version 2"},
		{`{"instance":"a"}`, "unknown record version 0"},
		{`{"v":1,"instance":7}`, "cannot decode version 1: "},
	} {
		if o, err := Decode[OwnerRec]([]byte(c.value)); o != nil || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %+v, %v; want an error with %q", c.value, o, err, c.want)
		}
	}
}

// One JSON parse per record of this version (it was two: the version, then the record).
func BenchmarkDecodeOwnerRec(b *testing.B) {
	v := []byte(`{"v":1,"instance":"4f1c2b","epoch":1765090000000000000,"connected":true,"at":1765090000000,"expiry":0}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode[OwnerRec](v); err != nil {
			b.Fatal(err)
		}
	}
}
