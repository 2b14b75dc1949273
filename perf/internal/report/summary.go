package report

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"

	"github.com/ferrymq/ferry/perf/internal/stats"
)

// Summarize writes one Markdown table per label (scenario variant): a row per
// headline metric, a column per target with the median of all its runs and
// the spread (min–max), then the ratio of the reference target (Ferry) to
// each other target. order lists the targets' column order; others follow.
func Summarize(w io.Writer, results []*Result, order []string, ref string) {
	byLabel := map[string][]*Result{}
	var labels []string
	for _, r := range results {
		l := r.Label
		if l == "" {
			l = r.Scenario
		}
		if _, ok := byLabel[l]; !ok {
			labels = append(labels, l)
		}
		byLabel[l] = append(byLabel[l], r)
	}
	for _, l := range labels {
		summarizeLabel(w, l, byLabel[l], order, ref)
	}
}

type cell struct {
	vals []float64
	unit string
}

func summarizeLabel(w io.Writer, label string, rs []*Result, order []string, ref string) {
	targets := map[string]bool{}
	var metrics []string
	seen := map[string]bool{}
	cells := map[string]map[string]*cell{} // metric → target → values
	better := map[string]string{}
	var cmd string
	for _, r := range rs {
		t := r.TargetName
		if t == "" {
			t = r.Target
		}
		targets[t] = true
		if cmd == "" && !strings.Contains(r.Command, "--echo") {
			cmd = genericCommand(r.Command)
		}
		for _, m := range r.Headline {
			if !seen[m.Name] {
				seen[m.Name] = true
				metrics = append(metrics, m.Name)
				cells[m.Name] = map[string]*cell{}
			}
			c := cells[m.Name][t]
			if c == nil {
				c = &cell{unit: m.Unit}
				cells[m.Name][t] = c
			}
			c.vals = append(c.vals, m.Value)
			better[m.Name] = m.Better
		}
	}
	var cols []string
	for _, t := range order {
		if targets[t] {
			cols = append(cols, t)
		}
	}
	var rest []string
	for t := range targets {
		if !contains(cols, t) {
			rest = append(rest, t)
		}
	}
	sort.Strings(rest)
	cols = append(cols, rest...)
	hasRef := targets[ref]

	fmt.Fprintf(w, "\n#### %s\n\n", label)
	head := "| metric |"
	sep := "|---|"
	for _, c := range cols {
		head += " " + c + " |"
		sep += "---|"
	}
	if hasRef {
		for _, c := range cols {
			if c != ref {
				head += fmt.Sprintf(" %s ÷ %s |", ref, c)
				sep += "---|"
			}
		}
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, m := range metrics {
		row := "| " + m + " |"
		meds := map[string]float64{}
		for _, t := range cols {
			c := cells[m][t]
			if c == nil || len(c.vals) == 0 {
				row += " – |"
				continue
			}
			med, lo, hi := stats.Median(c.vals)
			meds[t] = med
			if len(c.vals) > 1 && lo != hi {
				row += fmt.Sprintf(" %s (%s–%s, n=%d) |", Fmt(med, c.unit), Fmt(lo, c.unit), Fmt(hi, c.unit), len(c.vals))
			} else {
				row += fmt.Sprintf(" %s (n=%d) |", Fmt(med, c.unit), len(c.vals))
			}
		}
		if hasRef {
			rv, ok := meds[ref]
			for _, t := range cols {
				if t == ref {
					continue
				}
				v, ok2 := meds[t]
				if !ok || !ok2 || v == 0 || better[m] == "" || cells[m][t].unit == "count" {
					row += " – |"
					continue
				}
				row += fmt.Sprintf(" %s |", ratio(rv/v))
			}
		}
		fmt.Fprintln(w, row)
	}
	if cmd != "" {
		fmt.Fprintf(w, "\nCommand (plus --target, --server-pid, --kafka, --metrics per target): `%s`\n", cmd)
	}
}

func ratio(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "–"
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", x), "0"), ".") + "×"
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// genericCommand drops the per-target and per-run flags from a command line,
// so one line stands for all the runs of a table.
func genericCommand(cmd string) string {
	drop := map[string]bool{"--target": true, "--server-pid": true, "--kafka": true, "--json": true,
		"--plot": true, "--label": true, "--target-name": true, "--metrics": true}
	f := strings.Fields(cmd)
	var out []string
	for i := 0; i < len(f); i++ {
		name, _, hasVal := strings.Cut(f[i], "=")
		if drop[name] || drop["-"+name] {
			if !hasVal {
				i++
			}
			continue
		}
		out = append(out, f[i])
	}
	return strings.Join(out, " ")
}
