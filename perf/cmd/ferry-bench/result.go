package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/ferrymq/ferry/perf/internal/procstat"
	"github.com/ferrymq/ferry/perf/internal/report"
)

// What a run reports: the derived figures, the headline, the output files and the smoke check.

// derive computes the per-connection, per-subscription and per-core figures.
func derive(o *options, res *report.Result) {
	d := &res.Derived
	s := res.Servers
	rss0, cpu0, ok0 := sum(s, func(x *report.Server) *procstat.Sample { return &x.Before })
	rss1, cpu1, ok1 := sum(s, func(x *report.Server) *procstat.Sample { return x.AfterConnect })
	if ok0 && ok1 && res.Connect.OK > 0 {
		if o.scenario == "idle" {
			d.RSSPerConn = float64(rss1-rss0) / float64(res.Connect.OK)
		}
		d.ConnectCPUSec = cpu1 - cpu0
		if d.ConnectCPUSec > 0 {
			d.ConnsPerCPUSec = float64(res.Connect.OK) / d.ConnectCPUSec
		}
	}
	if rss2, _, ok2 := sum(s, func(x *report.Server) *procstat.Sample { return x.AfterSubscribe }); ok1 && ok2 && res.Subscribe != nil && res.Subscribe.OK > 0 {
		d.RSSPerSub = float64(rss2-rss1) / float64(res.Subscribe.OK)
	}
	_, cs0, oks0 := sum(s, func(x *report.Server) *procstat.Sample { return x.SubscribeStart })
	_, cs1, oks1 := sum(s, func(x *report.Server) *procstat.Sample { return x.SubscribeEnd })
	if oks0 && oks1 && res.Subscribe != nil && res.Subscribe.OK > 0 {
		d.SubCPUSec = cs1 - cs0
		if d.SubCPUSec > 0 {
			d.SubsPerCPUSec = float64(res.Subscribe.OK) / d.SubCPUSec
		}
	}
	_, cl0, okl0 := sum(s, func(x *report.Server) *procstat.Sample { return x.LoadStart })
	_, cl1, okl1 := sum(s, func(x *report.Server) *procstat.Sample { return x.LoadEnd })
	if okl0 && okl1 {
		d.LoadCPUSec = cl1 - cl0
		if o.scenario == "idle" && res.HoldSec > 0 {
			d.HoldCPUPercent = 100 * d.LoadCPUSec / res.HoldSec
		} else if res.DurationSec > 0 {
			d.BusyCores = d.LoadCPUSec / res.DurationSec
			if d.BusyCores > 0 && res.Rates != nil {
				rate := res.Rates.Delivered
				if o.scenario == "kafka-ingest" {
					rate = res.Rates.Kafka
				}
				d.MsgPerBusyCore = rate / d.BusyCores
			}
		}
	}
}

// headline picks the figures the summary tables compare.
func headline(o *options, r *report.Result) {
	d := r.Derived
	servers := len(r.Servers) > 0
	switch o.scenario {
	case "idle":
		r.Add("connections open", float64(r.Connect.OK), "count", "higher")
		r.Add("connect failures", float64(r.Connect.Failed), "count", "lower")
		r.Add("connect rate", r.Connect.RatePerSec, "conn/s", "higher")
		r.Add("CONNECT→CONNACK p50", r.Connect.Latency.P50, "ms", "lower")
		r.Add("CONNECT→CONNACK p99", r.Connect.Latency.P99, "ms", "lower")
		if servers {
			r.Add("server RSS per connection", d.RSSPerConn, "B", "lower")
			if r.Subscribe != nil {
				r.Add("server RSS per subscription", d.RSSPerSub, "B", "lower")
			}
			r.Add("connections per server CPU-second", d.ConnsPerCPUSec, "/cpu-s", "higher")
			if d.SubsPerCPUSec > 0 {
				r.Add("subscriptions per server CPU-second", d.SubsPerCPUSec, "/cpu-s", "higher")
			}
			r.Add("server CPU while holding", d.HoldCPUPercent, "%", "lower")
		}
		if r.Subscribe != nil {
			r.Add("subscriptions granted", float64(r.Subscribe.OK), "count", "higher")
			r.Add("SUBSCRIBE→SUBACK p99", r.Subscribe.Latency.P99, "ms", "lower")
		}
		r.Add("connections dropped by server", float64(r.Totals.Disconnected), "count", "lower")
		if o.tlsResume {
			r.Add("TLS handshakes resumed", float64(r.Totals.TLSResumed), "count", "higher")
		}
		if r.Kafka != nil && len(r.Kafka.ServerConns) > 0 {
			n := 0
			for _, c := range r.Kafka.ServerConns {
				n += c
			}
			r.Add("server TCP connections to Kafka", float64(n), "count", "lower")
		}
	default:
		rt := r.Rates
		r.Add("published", rt.Published, "msg/s", "higher")
		if o.qos > 0 {
			r.Add("acknowledged", rt.Acked, "msg/s", "higher")
		}
		if o.subs > 0 {
			r.Add("delivered", rt.Delivered, "msg/s", "higher")
			if r.Loss != nil {
				name := "lost (acked, never delivered)"
				if o.qos == 0 {
					name = "not delivered (QoS 0, allowed)"
				}
				r.Add(name, float64(r.Loss.Lost), "count", "lower")
				r.Add("duplicates", float64(r.Loss.Duplicates), "count", "lower")
			}
			r.Add("delivery latency p50", r.Delivery.P50, "ms", "lower")
			r.Add("delivery latency p90", r.Delivery.P90, "ms", "lower")
			r.Add("delivery latency p99", r.Delivery.P99, "ms", "lower")
			r.Add("delivery latency p99.9", r.Delivery.P999, "ms", "lower")
			if dr := r.DeliveryRead; dr != nil {
				// The epoll receiver's delivery figures are the kernel's receive times; these are the same
				// deliveries as the generator read them (the difference is the generator's own delay).
				r.Add("delivery read by generator p50", dr.P50, "ms", "lower")
				r.Add("delivery read by generator p99", dr.P99, "ms", "lower")
			}
		}
		if o.qos > 0 {
			r.Add("PUBLISH→ack p50", r.Ack.P50, "ms", "lower")
			r.Add("PUBLISH→ack p99", r.Ack.P99, "ms", "lower")
		}
		for _, st := range r.Stages {
			r.Add("server stage "+st.Name+" p50", st.P50, "ms", "lower")
			r.Add("server stage "+st.Name+" p99", st.P99, "ms", "lower")
		}
		if r.Kafka != nil && o.scenario == "kafka-ingest" {
			r.Add("into Kafka", rt.Kafka, "msg/s", "higher")
			if servers && d.MsgPerBusyCore > 0 {
				r.Add("into Kafka per busy server core", d.MsgPerBusyCore, "msg/s", "higher")
			}
			r.Add("lost (acked, not in Kafka)", float64(r.Kafka.Loss.Lost), "count", "lower")
			r.Add("duplicates in Kafka", float64(r.Kafka.Loss.Duplicates), "count", "lower")
			r.Add("publish→Kafka p50", r.Kafka.Latency.P50, "ms", "lower")
			r.Add("publish→Kafka p99", r.Kafka.Latency.P99, "ms", "lower")
			r.Add("publish→Kafka p99.9", r.Kafka.Latency.P999, "ms", "lower")
		}
		if servers {
			r.Add("server busy cores", d.BusyCores, "cores", "lower")
			if msgs := rt.Published * r.DurationSec; msgs > 0 && d.LoadCPUSec > 0 {
				r.Add("server CPU per 1,000 messages", d.LoadCPUSec*1e3/(msgs/1e3), "ms", "lower")
			}
			if o.scenario != "kafka-ingest" && d.MsgPerBusyCore > 0 {
				r.Add("delivered per busy server core", d.MsgPerBusyCore, "msg/s", "higher")
			}
		}
		r.Add("generator busy cores (window)", r.Generator.LoadCores, "cores", "")
		r.Add("connections dropped by server", float64(r.Totals.Disconnected), "count", "lower")
	}
	r.Add("generator CPU (whole run)", r.Generator.Cores, "cores", "")
}

func output(o *options, res *report.Result, connH, delH, ackH, kh *hdrhistogram.Histogram) error {
	if o.jsonOut != "" {
		if err := res.WriteJSON(o.jsonOut); err != nil {
			return err
		}
	}
	if o.md {
		res.WriteMarkdown(os.Stdout)
	} else {
		printText(os.Stdout, res)
	}
	if o.plotDir != "" {
		name := res.Label
		if res.TargetName != "" {
			name += "-" + res.TargetName
		}
		name = strings.NewReplacer("/", "_", " ", "_", "+", "_").Replace(name)
		hists := map[string]*hdrhistogram.Histogram{}
		title := o.scenario + " latency"
		if o.scenario == "idle" {
			hists["CONNECT→CONNACK"] = connH
		} else {
			hists["publish→delivery"] = delH
			hists["PUBLISH→ack"] = ackH
			if kh != nil {
				hists["publish→Kafka"] = kh
			}
		}
		if err := report.PlotLatency(filepath.Join(o.plotDir, name+"-latency.png"), title+" ("+res.Target+")", hists); err != nil {
			return err
		}
		if err := report.PlotSeries(filepath.Join(o.plotDir, name+"-throughput.png"), o.scenario+" over time ("+res.Target+")", res.Series); err != nil {
			return err
		}
	}
	return nil
}

func printText(w io.Writer, r *report.Result) {
	fmt.Fprintf(w, "%s against %s: %d workers, generator %.2f cores over %.1f s\n", r.Scenario, r.Target, r.Workers, r.Generator.Cores, r.Generator.WallSec)
	for _, m := range r.Headline {
		fmt.Fprintf(w, "  %-40s %s\n", m.Name, report.Fmt(m.Value, m.Unit))
	}
	for k, v := range r.Errors {
		fmt.Fprintf(w, "  error: %s ×%d\n", k, v)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

func smokeCheck(o *options, r *report.Result) error {
	var bad []string
	if r.Connect.Failed > 0 || r.Connect.OK == 0 {
		bad = append(bad, fmt.Sprintf("%d of %d connections failed", r.Connect.Failed, r.Connect.Attempted))
	}
	if r.Totals.Disconnected > 0 {
		bad = append(bad, fmt.Sprintf("server dropped %d connections", r.Totals.Disconnected))
	}
	if r.Subscribe != nil && r.Subscribe.Failed > 0 {
		bad = append(bad, fmt.Sprintf("%d subscriptions refused", r.Subscribe.Failed))
	}
	if o.scenario != "idle" {
		if r.Totals.Published == 0 {
			bad = append(bad, "nothing published")
		}
		if o.subs > 0 && r.Totals.Delivered == 0 {
			bad = append(bad, "nothing delivered")
		}
		if o.qos > 0 && r.Loss != nil && r.Loss.Lost > 0 {
			bad = append(bad, fmt.Sprintf("%d acknowledged messages lost", r.Loss.Lost))
		}
		for _, st := range r.Stages {
			r.Add("server stage "+st.Name+" p50", st.P50, "ms", "lower")
			r.Add("server stage "+st.Name+" p99", st.P99, "ms", "lower")
		}
		if r.Kafka != nil && o.scenario == "kafka-ingest" {
			if r.Kafka.Records == 0 {
				bad = append(bad, "no records reached Kafka")
			}
			if o.qos > 0 && r.Kafka.Loss.Lost > 0 {
				bad = append(bad, fmt.Sprintf("%d acknowledged messages missing in Kafka", r.Kafka.Loss.Lost))
			}
		}
	}
	if len(bad) > 0 {
		return smokeError{strings.Join(bad, "; ")}
	}
	fmt.Fprintln(os.Stderr, "smoke: ok")
	return nil
}

func hostInfo() report.Host {
	h := report.Host{Cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					h.CPU = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kb); err == nil {
			h.MemGiB = math.Round(kb/1024/1024*10) / 10
		}
	}
	return h
}

func params(o *options) map[string]any {
	p := map[string]any{"workers": o.workers, "keepalive": o.keepAlive, "conn_rate": o.connRate}
	if o.scenario == "idle" {
		p["conns"], p["subs_per_conn"], p["hold_sec"] = o.conns, o.subsPerConn, o.hold.Seconds()
	} else {
		p["pubs"], p["subs"], p["qos"], p["sub_qos"], p["window"] = o.pubs, o.subs, o.qos, o.subQoS, o.window
		p["qos0_flow"] = o.qos0Flow
		if o.subRx != "" {
			p["sub_rx"] = o.subRx
		}
		p["payload"], p["duration_sec"], p["rate"], p["topic"], p["filter"] = o.payload, o.duration.Seconds(), o.rate, o.topic, o.filter
	}
	if o.persistent {
		p["persistent"] = true
	}
	if o.kafka != "" {
		p["kafka"], p["kafka_topic"] = o.kafka, o.kafkaTopic
	}
	if o.tlsResume {
		p["tls_resume"] = true
	}
	if o.tlsGroups != "" {
		p["tls_groups"] = o.tlsGroups
	}
	return p
}
