package mqttcodec

import (
	"os"
	"regexp"
	"testing"
)

// TestConformanceDocument keeps CONFORMANCE.md and the conformance tests in
// step: every "codec:" row names an existing subtest, and every
// conformance subtest has its row.
func TestConformanceDocument(t *testing.T) {
	doc, err := os.ReadFile("CONFORMANCE.md")
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]string{"TestConformance311": "conformance311_test.go", "TestConformance5": "conformance5_test.go"}
	tests := map[string]bool{}
	runRe := regexp.MustCompile(`t\.Run\("(MQTT-[0-9.\-]+/v(?:311|5)/[^"]+)"`)
	for fn, file := range sources {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range runRe.FindAllSubmatch(src, -1) {
			name := fn + "/" + string(m[1])
			if tests[name] {
				t.Errorf("subtest %s defined twice", name)
			}
			tests[name] = true
		}
	}
	rowRe := regexp.MustCompile("(?m)^\\| (MQTT-[0-9.\\-]+) \\|[^\\n]*\\| (?:codec: `([^`]+)`|not a codec concern \\(server\\)) \\|$")
	rows := rowRe.FindAllSubmatch(doc, -1)
	if n := len(regexp.MustCompile(`(?m)^\| MQTT-`).FindAll(doc, -1)); n != len(rows) || n < 200 {
		t.Fatalf("%d statement rows, %d well-formed", n, len(rows))
	}
	named := map[string]bool{}
	for _, r := range rows {
		if len(r[2]) == 0 {
			continue
		}
		name := string(r[2])
		if !tests[name] {
			t.Errorf("CONFORMANCE.md names %s, which does not exist", name)
		}
		if want := "/" + string(r[1]) + "/"; !regexp.MustCompile(regexp.QuoteMeta(want)).MatchString(name) {
			t.Errorf("row %s names test %s of another statement", r[1], name)
		}
		named[name] = true
	}
	for name := range tests {
		if !named[name] {
			t.Errorf("subtest %s has no row in CONFORMANCE.md", name)
		}
	}
}
