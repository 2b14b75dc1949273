package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/ferrymq/ferry/perf/internal/report"
)

// Ferry's own view of where a message's time goes: the ferry_publish_stage_seconds and
// ferry_delivery_stage_seconds histograms of its /metrics (--metrics), scraped at the start and the end of the
// load window; the difference gives each stage's p50 and p99 over the window, next to the outside view the
// harness measures (PUBLISH→ack, delivery). A bucket's upper bound is reported, so a figure is "at most".

var stageBucket = regexp.MustCompile(`^ferry_(publish|delivery)_stage_seconds_bucket\{stage="(\w+)",le="([^"]+)"\} (\S+)$`)

// stageCounts are cumulative bucket counts per "publish/kafka"-style stage name, by upper bound in seconds.
type stageCounts map[string]map[float64]float64

func scrapeStages(url string) (stageCounts, error) {
	if url == "" {
		return nil, nil
	}
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return nil, fmt.Errorf("cannot scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	return parseStages(resp.Body)
}

func parseStages(r io.Reader) (stageCounts, error) {
	out := stageCounts{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := stageBucket.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		le, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			le = math.Inf(1)
		}
		n, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			return nil, fmt.Errorf("bad bucket line %q: %w", sc.Text(), err)
		}
		name := m[1] + "/" + m[2]
		if out[name] == nil {
			out[name] = map[float64]float64{}
		}
		out[name][le] = n
	}
	return out, sc.Err()
}

// stageQuantiles returns, per stage, the p50 and p99 (upper bucket bounds, in ms) of what happened between
// the two scrapes, and the count.
func stageQuantiles(before, after stageCounts) []report.Stage {
	var out []report.Stage
	for name, b := range after {
		les := make([]float64, 0, len(b))
		for le := range b {
			les = append(les, le)
		}
		sort.Float64s(les)
		total := b[math.Inf(1)] - before[name][math.Inf(1)]
		if total <= 0 {
			continue
		}
		q := func(p float64) float64 {
			for _, le := range les {
				if b[le]-before[name][le] >= p*total {
					return le * 1e3
				}
			}
			return math.Inf(1)
		}
		out = append(out, report.Stage{Name: name, Count: int64(total), P50: q(0.5), P99: q(0.99)})
	}
	sort.Slice(out, func(i, j int) bool { return stageOrder(out[i].Name) < stageOrder(out[j].Name) })
	return out
}

func stageOrder(name string) int {
	for i, n := range []string{"publish/queued", "publish/kafka", "publish/ack", "delivery/read", "delivery/write"} {
		if n == name {
			return i
		}
	}
	return 99
}
