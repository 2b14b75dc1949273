package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The README's flag table and the annotated deploy/ferry.yaml name every setting of the flag set, and nothing
// else: adding, renaming or removing a flag fails here until both are updated.
func TestFlagsDocumented(t *testing.T) {
	known := map[string]bool{}
	for _, n := range settingNames() {
		known[n] = true
	}

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	table := readmeFlagTable(t, string(readme))
	for _, n := range settingNames() {
		if !table[n] {
			t.Errorf("README.md's flag table lacks --%s", n)
		}
	}
	for n := range table {
		if !known[n] {
			t.Errorf("README.md's flag table names --%s, which ferry does not have", n)
		}
	}

	example, err := os.ReadFile("../../deploy/ferry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keys := exampleKeys(string(example))
	for _, n := range settingNames() {
		if n != "config" && !keys[n] {
			t.Errorf("deploy/ferry.yaml does not show %s (as a key, or a commented-out `# %s: ...` line)", n, n)
		}
	}
	for k := range keys {
		if !known[k] || k == "config" {
			t.Errorf("deploy/ferry.yaml shows %s, which is not a setting of a --config file", k)
		}
	}
}

var tableFlag = regexp.MustCompile("`--([a-z0-9-]+)`")

// readmeFlagTable returns the flags named in the first column of the table under "## Flags".
func readmeFlagTable(t *testing.T, readme string) map[string]bool {
	_, section, ok := strings.Cut(readme, "\n## Flags\n")
	if !ok {
		t.Fatal(`README.md has no "## Flags" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	names := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`--") {
			continue
		}
		for _, m := range tableFlag.FindAllStringSubmatch(cells[1], -1) {
			names[m[1]] = true
		}
	}
	if len(names) == 0 {
		t.Fatal("README.md's flag table names no flag")
	}
	return names
}

var exampleKey = regexp.MustCompile(`(?m)^(?:# ?)?([a-z][a-z0-9-]*):(?:\s|$)`)

// exampleKeys returns the keys of an annotated YAML file, including commented-out `# key: value` lines.
func exampleKeys(text string) map[string]bool {
	keys := map[string]bool{}
	for _, m := range exampleKey.FindAllStringSubmatch(text, -1) {
		keys[m[1]] = true
	}
	return keys
}
