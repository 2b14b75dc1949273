package report

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/HdrHistogram/hdrhistogram-go"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// nines maps a percentile to the chart's x axis: 90 → 1, 99 → 2, 99.9 → 3.
func nines(pct float64) float64 { return -math.Log10(1 - pct/100) }

// PlotLatency writes a percentile-distribution chart (HdrHistogram style:
// latency against percentile on a "number of nines" axis) for each named
// microsecond histogram.
func PlotLatency(path, title string, hists map[string]*hdrhistogram.Histogram) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms)"
	var ticks plot.ConstantTicks
	for _, pct := range []float64{0, 50, 90, 99, 99.9, 99.99, 99.999} {
		ticks = append(ticks, plot.Tick{Value: nines(pct), Label: fmt.Sprintf("%g", pct)})
	}
	p.X.Tick.Marker = ticks
	var lines []any
	for name, h := range hists {
		if h == nil || h.TotalCount() == 0 {
			continue
		}
		var xys plotter.XYs
		maxN := math.Min(5, math.Log10(float64(h.TotalCount())))
		for x := 0.0; x <= maxN+1e-9; x += 0.05 {
			pct := 100 * (1 - math.Pow(10, -x))
			xys = append(xys, plotter.XY{X: x, Y: float64(h.ValueAtPercentile(pct)) / 1000})
		}
		xys = append(xys, plotter.XY{X: maxN + 0.05, Y: float64(h.Max()) / 1000})
		lines = append(lines, name, xys)
	}
	if len(lines) == 0 {
		return nil
	}
	if err := plotutil.AddLines(p, lines...); err != nil {
		return fmt.Errorf("cannot plot latency: %w", err)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	return save(p, path)
}

// PlotSeries writes throughput over time.
func PlotSeries(path, title string, pts []Point) error {
	if len(pts) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = "per second"
	series := []struct {
		name string
		get  func(Point) float64
	}{
		{"published msg/s", func(q Point) float64 { return q.Published }},
		{"acked msg/s", func(q Point) float64 { return q.Acked }},
		{"delivered msg/s", func(q Point) float64 { return q.Delivered }},
		{"into Kafka msg/s", func(q Point) float64 { return q.Kafka }},
	}
	var lines []any
	for _, s := range series {
		var xys plotter.XYs
		nonzero := false
		for _, q := range pts {
			v := s.get(q)
			nonzero = nonzero || v != 0
			xys = append(xys, plotter.XY{X: q.T, Y: v})
		}
		if nonzero {
			lines = append(lines, s.name, xys)
		}
	}
	if len(lines) == 0 { // idle: plot connections instead
		var xys plotter.XYs
		for _, q := range pts {
			xys = append(xys, plotter.XY{X: q.T, Y: q.Conns})
		}
		p.Y.Label.Text = "connections"
		lines = append(lines, "connections", xys)
	}
	if err := plotutil.AddLines(p, lines...); err != nil {
		return fmt.Errorf("cannot plot throughput: %w", err)
	}
	p.Legend.Top = true
	return save(p, path)
}

func save(p *plot.Plot, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := p.Save(20*vg.Centimeter, 12*vg.Centimeter, path); err != nil {
		return fmt.Errorf("cannot save chart %s: %w", path, err)
	}
	return nil
}
