package main

import (
	"math"
	"strconv"
	"strings"

	"github.com/ferrymq/ferry/kafkamux"
)

// promWriter appends metrics in the Prometheus text exposition format (version 0.0.4). It runs once per scrape,
// so it may allocate; the counters it reads are plain atomics (server/metrics.go says why no library).
// Samples of one family must be written together, right after its family line.
type promWriter struct{ b []byte }

var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

// family writes the HELP and TYPE lines of a metric family.
func (p *promWriter) family(name, typ, help string) {
	p.b = append(p.b, "# HELP "...)
	p.b = append(p.b, name...)
	p.b = append(p.b, ' ')
	p.b = append(p.b, helpEscaper.Replace(help)...)
	p.b = append(p.b, "\n# TYPE "...)
	p.b = append(p.b, name...)
	p.b = append(p.b, ' ')
	p.b = append(p.b, typ...)
	p.b = append(p.b, '\n')
}

// labels appends {k="v",…} from name/value pairs; nothing when there are none.
func (p *promWriter) labels(kv []string) {
	if len(kv) == 0 {
		return
	}
	p.b = append(p.b, '{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			p.b = append(p.b, ',')
		}
		p.b = append(p.b, kv[i]...)
		p.b = append(p.b, `="`...)
		for _, r := range []byte(kv[i+1]) {
			switch r {
			case '\\':
				p.b = append(p.b, `\\`...)
			case '"':
				p.b = append(p.b, `\"`...)
			case '\n':
				p.b = append(p.b, `\n`...)
			default:
				p.b = append(p.b, r)
			}
		}
		p.b = append(p.b, '"')
	}
	p.b = append(p.b, '}')
}

// u writes one sample with an integer value.
func (p *promWriter) u(name string, v uint64, kv ...string) {
	p.b = append(p.b, name...)
	p.labels(kv)
	p.b = append(p.b, ' ')
	p.b = strconv.AppendUint(p.b, v, 10)
	p.b = append(p.b, '\n')
}

// i writes one sample with a signed integer value (gauges).
func (p *promWriter) i(name string, v int64, kv ...string) {
	p.b = append(p.b, name...)
	p.labels(kv)
	p.b = append(p.b, ' ')
	p.b = strconv.AppendInt(p.b, v, 10)
	p.b = append(p.b, '\n')
}

// f writes one sample with a float value.
func (p *promWriter) f(name string, v float64, kv ...string) {
	p.b = append(p.b, name...)
	p.labels(kv)
	p.b = append(p.b, ' ')
	switch {
	case math.IsInf(v, 1):
		p.b = append(p.b, "+Inf"...)
	case math.IsInf(v, -1):
		p.b = append(p.b, "-Inf"...)
	default:
		p.b = strconv.AppendFloat(p.b, v, 'g', -1, 64)
	}
	p.b = append(p.b, '\n')
}

// histogram writes the _bucket (cumulative, le in seconds), _sum (seconds) and _count samples of one
// histogram. Its family line must have been written.
func (p *promWriter) histogram(name string, h kafkamux.HistogramSnapshot, kv ...string) {
	var cum uint64
	lkv := append(append([]string(nil), kv...), "le", "")
	for i, n := range h.Counts {
		cum += n
		if b := kafkamux.HistogramBound(i); b >= 0 {
			lkv[len(lkv)-1] = strconv.FormatFloat(b.Seconds(), 'g', -1, 64)
		} else {
			lkv[len(lkv)-1] = "+Inf"
		}
		p.u(name+"_bucket", cum, lkv...)
	}
	p.f(name+"_sum", h.Sum.Seconds(), kv...)
	p.u(name+"_count", h.Count, kv...)
}
