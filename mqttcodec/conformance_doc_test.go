package mqttcodec

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
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
	rowRe := regexp.MustCompile("(?m)^\\| (MQTT-[0-9.\\-]+) \\|[^\\n]*\\| (?:codec: `([^`]+)`|server: `([^`]+)`|not a codec concern \\(server\\)) \\|$")
	rows := rowRe.FindAllSubmatch(doc, -1)
	if n := len(regexp.MustCompile(`(?m)^\| MQTT-`).FindAll(doc, -1)); n != len(rows) || n < 200 {
		t.Fatalf("%d statement rows, %d well-formed", n, len(rows))
	}
	server := serverTests(t)
	named := map[string]bool{}
	for _, r := range rows {
		if len(r[3]) > 0 {
			fn, _, _ := strings.Cut(string(r[3]), "/")
			if !server.funcs[fn] {
				t.Errorf("CONFORMANCE.md row %s names %s: server/*_test.go defines no %s", r[1], r[3], fn)
			}
			if !strings.Contains(server.text, string(r[1])+"/") && !strings.Contains(server.text, "["+string(r[1])+"]") &&
				!strings.Contains(server.text, string(r[1])+":") {
				t.Errorf("CONFORMANCE.md row %s: no server test cites it", r[1])
			}
			continue
		}
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

// serverTestSources are the test functions of ../server and the text of its test files, for the
// "server:" rows (read as text: mqttcodec imports nothing of the server).
type serverTestSources struct {
	funcs map[string]bool
	text  string
}

func serverTests(t *testing.T) serverTestSources {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "server", "*_test.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("server tests: %v (%d files)", err, len(files))
	}
	st := serverTestSources{funcs: map[string]bool{}}
	var b strings.Builder
	fnRe := regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]+)\(`)
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range fnRe.FindAllSubmatch(src, -1) {
			st.funcs[string(m[1])] = true
		}
		b.Write(src)
	}
	st.text = b.String()
	return st
}
