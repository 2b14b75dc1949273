// Package report holds a run's result (JSON), its Markdown rendering, charts,
// and the summary of many runs into the BENCHMARKS.md tables.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/ferrymq/ferry/perf/internal/load"
	"github.com/ferrymq/ferry/perf/internal/procstat"
	"github.com/ferrymq/ferry/perf/internal/stats"
)

// Result is everything one run measured. Field names are stable: bench.sh and
// the summary read them.
type Result struct {
	Scenario   string         `json:"scenario"`
	Label      string         `json:"label,omitempty"`       // e.g. "fanin-qos1"; rows of the summary
	TargetName string         `json:"target_name,omitempty"` // e.g. "mosquitto"; columns of the summary
	Target     string         `json:"target"`
	Command    string         `json:"command"`
	Started    time.Time      `json:"started"`
	Host       Host           `json:"host"`
	Params     map[string]any `json:"params"`
	Workers    int            `json:"workers"`

	Connect   Phase   `json:"connect"`
	Subscribe *Phase  `json:"subscribe,omitempty"`
	HoldSec   float64 `json:"hold_sec,omitempty"`

	DurationSec float64            `json:"duration_sec,omitempty"` // measurement window
	Window      *load.Counters     `json:"window,omitempty"`       // counters inside the window
	Totals      load.Counters      `json:"totals"`
	Rates       *Rates             `json:"rates,omitempty"`
	Delivery    *stats.Percentiles `json:"delivery_latency,omitempty"`
	// DeliveryRead (epoll receiver only): the deliveries timed when the generator read them; Delivery is then
	// timed at the kernel's receive time.
	DeliveryRead *stats.Percentiles `json:"delivery_read_latency,omitempty"`
	Ack          *stats.Percentiles `json:"ack_latency,omitempty"`
	Loss         *stats.Loss        `json:"loss,omitempty"`
	Kafka        *Kafka             `json:"kafka,omitempty"`
	Stages       []Stage            `json:"server_stages,omitempty"` // the server's own stage histograms (--metrics)

	Servers   []Server       `json:"servers,omitempty"`
	Derived   Derived        `json:"derived"`
	Generator Generator      `json:"generator"`
	Series    []Point        `json:"series,omitempty"`
	Errors    map[string]int `json:"errors,omitempty"`
	Notes     []string       `json:"notes,omitempty"`
	Headline  []Metric       `json:"headline"`
}

// Stage is one latency stage as the server measured it over the load window (Ferry's /metrics): p50 and p99
// are the upper bounds of the histogram buckets they fall in, in ms.
type Stage struct {
	Name  string  `json:"name"` // e.g. publish/kafka
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
}

// Host describes the machine.
type Host struct {
	Cores  int     `json:"cores"`
	Kernel string  `json:"kernel"`
	CPU    string  `json:"cpu"`
	MemGiB float64 `json:"mem_gib"`
}

// Phase is connection establishment or the idle subscribe phase.
type Phase struct {
	Attempted  int64             `json:"attempted"`
	OK         int64             `json:"ok"`
	Failed     int64             `json:"failed"`
	Sec        float64           `json:"sec"`
	RatePerSec float64           `json:"rate_per_sec"`
	Latency    stats.Percentiles `json:"latency"`
}

// Rates are per second over the measurement window.
type Rates struct {
	Published float64 `json:"published"`
	Acked     float64 `json:"acked"`
	Delivered float64 `json:"delivered"`
	Kafka     float64 `json:"kafka,omitempty"`
}

// Kafka is the kafka-ingest reader's view.
type Kafka struct {
	Broker      string            `json:"broker"`
	Topic       string            `json:"topic"`
	Records     int64             `json:"records"` // stamped records of this run
	Foreign     int64             `json:"foreign"` // other records seen
	InWindow    int64             `json:"in_window"`
	Latency     stats.Percentiles `json:"latency"` // payload stamp → record fetched by the reader
	Loss        stats.Loss        `json:"loss"`
	ServerConns []int             `json:"server_kafka_conns,omitempty"` // per --server-pid, sockets to the Kafka port
}

// Server is one --server-pid's readings.
type Server struct {
	Pid            int              `json:"pid"`
	Before         procstat.Sample  `json:"before"`
	AfterConnect   *procstat.Sample `json:"after_connect,omitempty"`
	AfterSubscribe *procstat.Sample `json:"after_subscribe,omitempty"`
	SubscribeStart *procstat.Sample `json:"subscribe_start,omitempty"` // idle: CPU as the SUBSCRIBEs start and
	SubscribeEnd   *procstat.Sample `json:"subscribe_end,omitempty"`   // as the last SUBACK arrives
	LoadStart      *procstat.Sample `json:"load_start,omitempty"`
	LoadEnd        *procstat.Sample `json:"load_end,omitempty"`
	End            procstat.Sample  `json:"end"`
	Err            string           `json:"error,omitempty"`
}

// Derived are the figures computed from server readings (summed over pids).
type Derived struct {
	RSSPerConn     float64 `json:"rss_bytes_per_conn,omitempty"`
	RSSPerSub      float64 `json:"rss_bytes_per_sub,omitempty"`
	ConnsPerCPUSec float64 `json:"conns_per_server_cpu_sec,omitempty"`
	ConnectCPUSec  float64 `json:"connect_server_cpu_sec,omitempty"`
	SubsPerCPUSec  float64 `json:"subs_per_server_cpu_sec,omitempty"` // idle: subscriptions granted per CPU-second of the SUBSCRIBE phase
	SubCPUSec      float64 `json:"subscribe_server_cpu_sec,omitempty"`
	HoldCPUPercent float64 `json:"hold_server_cpu_percent,omitempty"`
	LoadCPUSec     float64 `json:"load_server_cpu_sec,omitempty"`
	BusyCores      float64 `json:"server_busy_cores,omitempty"`
	MsgPerBusyCore float64 `json:"msg_per_sec_per_busy_core,omitempty"`
}

// Generator is the harness's own cost.
type Generator struct {
	CPUSec       float64   `json:"cpu_sec"`
	WallSec      float64   `json:"wall_sec"`
	Cores        float64   `json:"busy_cores"`
	WorkerCPUSec []float64 `json:"worker_cpu_sec"`
	LoadCores    float64   `json:"load_busy_cores,omitempty"` // during the measurement window
}

// Point is one second of the run; rates per second.
type Point struct {
	T         float64 `json:"t"`
	Conns     float64 `json:"conns"` // connected so far (not a rate)
	Published float64 `json:"published"`
	Acked     float64 `json:"acked"`
	Delivered float64 `json:"delivered"`
	Kafka     float64 `json:"kafka,omitempty"`
}

// Metric is one headline figure; the summary takes medians of these.
type Metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"` // "B", "msg/s", "ms", "conn/s", "count", "%"
	// Better is "higher", "lower" or "" (informational).
	Better string `json:"better,omitempty"`
}

// Add appends a headline metric unless v is NaN.
func (r *Result) Add(name string, v float64, unit, better string) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	r.Headline = append(r.Headline, Metric{name, v, unit, better})
}

// WriteJSON writes r to path.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode result: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("cannot write result: %w", err)
	}
	return nil
}

// ReadJSON reads a result file.
func ReadJSON(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("cannot decode %s: %w", path, err)
	}
	return &r, nil
}

// Fmt renders a metric value for tables.
func Fmt(v float64, unit string) string {
	switch unit {
	case "ms":
		return stats.FmtMs(v)
	case "B":
		switch {
		case math.Abs(v) >= 10*1024:
			return fmt.Sprintf("%.1f KB", v/1024)
		default:
			return fmt.Sprintf("%.0f B", v)
		}
	case "msg/s", "conn/s", "/cpu-s":
		switch {
		case math.Abs(v) >= 1e6:
			return fmt.Sprintf("%.2fM %s", v/1e6, unit)
		case math.Abs(v) >= 1e4:
			return fmt.Sprintf("%.1fk %s", v/1e3, unit)
		default:
			return fmt.Sprintf("%.0f %s", v, unit)
		}
	case "count":
		return fmt.Sprintf("%.0f", v)
	case "%":
		return fmt.Sprintf("%.1f %%", v)
	case "cores":
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.4g %s", v, unit)
}

// WriteMarkdown renders one run as a Markdown table.
func (r *Result) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "### %s against %s", r.Scenario, r.Target)
	if r.TargetName != "" {
		fmt.Fprintf(w, " (%s)", r.TargetName)
	}
	fmt.Fprintf(w, "\n\n`%s`\n\n", r.Command)
	fmt.Fprintf(w, "| metric | value |\n|---|---|\n")
	for _, m := range r.Headline {
		fmt.Fprintf(w, "| %s | %s |\n", m.Name, Fmt(m.Value, m.Unit))
	}
	if len(r.Errors) > 0 {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s ×%d", k, r.Errors[k]))
		}
		fmt.Fprintf(w, "| errors | %s |\n", strings.ReplaceAll(strings.Join(parts, "; "), "|", "/"))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\n- %s", n)
	}
	fmt.Fprintln(w)
}
