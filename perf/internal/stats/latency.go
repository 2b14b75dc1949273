package stats

import (
	"fmt"
	"math"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histograms record microseconds from 1 µs to 10 minutes with 3
// significant digits (HdrHistogram: ±0.1 % per value, ~200 KB per histogram).
const (
	histMinUs = 1
	histMaxUs = int64(10 * time.Minute / time.Microsecond)
	histSig   = 3
)

// NewHist returns an empty latency histogram in microseconds.
func NewHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMinUs, histMaxUs, histSig) }

// RecordNs records a latency given in nanoseconds; negative values (clock
// steps) count as 0 and values beyond the range are clamped.
func RecordNs(h *hdrhistogram.Histogram, ns int64) {
	us := ns / 1000
	if us < histMinUs {
		us = histMinUs
	}
	if us > histMaxUs {
		us = histMaxUs
	}
	_ = h.RecordValue(us)
}

// Percentiles is a latency summary in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// Summarize reads the standard percentiles from a microsecond histogram.
func Summarize(h *hdrhistogram.Histogram) Percentiles {
	if h == nil || h.TotalCount() == 0 {
		return Percentiles{}
	}
	ms := func(us int64) float64 { return math.Round(float64(us)) / 1000 }
	v := h.ValueAtPercentiles([]float64{50, 90, 99, 99.9})
	return Percentiles{
		Count: h.TotalCount(),
		Min:   ms(h.Min()),
		Mean:  math.Round(h.Mean()) / 1000,
		P50:   ms(v[50]),
		P90:   ms(v[90]),
		P99:   ms(v[99]),
		P999:  ms(v[99.9]),
		Max:   ms(h.Max()),
	}
}

func (p Percentiles) String() string {
	if p.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s p90 %s p99 %s p99.9 %s max %s (n=%d)",
		FmtMs(p.P50), FmtMs(p.P90), FmtMs(p.P99), FmtMs(p.P999), FmtMs(p.Max), p.Count)
}

// FmtMs prints a millisecond figure with a unit that keeps 2-3 significant digits.
func FmtMs(ms float64) string {
	switch {
	case ms >= 1000:
		return fmt.Sprintf("%.2f s", ms/1000)
	case ms >= 10:
		return fmt.Sprintf("%.0f ms", ms)
	case ms >= 1:
		return fmt.Sprintf("%.2f ms", ms)
	default:
		return fmt.Sprintf("%.0f µs", ms*1000)
	}
}

// Export and Import move a histogram between processes as JSON-friendly data.
func Export(h *hdrhistogram.Histogram) *hdrhistogram.Snapshot { return h.Export() }

// MergeSnapshot adds a worker's snapshot into h.
func MergeSnapshot(h *hdrhistogram.Histogram, s *hdrhistogram.Snapshot) {
	if s == nil {
		return
	}
	h.Merge(hdrhistogram.Import(s))
}

// Median returns the median of xs (mean of the middle two for even counts)
// and the min and max; xs is not modified.
func Median(xs []float64) (med, lo, hi float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	s := append([]float64(nil), xs...)
	for i := 1; i < len(s); i++ { // insertion sort: a handful of runs
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	n := len(s)
	if n%2 == 1 {
		med = s[n/2]
	} else {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}
