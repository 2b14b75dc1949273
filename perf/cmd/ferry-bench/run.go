package main

import (
	"bufio"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/ferrymq/ferry/perf/internal/load"
	"github.com/ferrymq/ferry/perf/internal/procstat"
	"github.com/ferrymq/ferry/perf/internal/report"
	"github.com/ferrymq/ferry/perf/internal/stats"
)

// workerConfigs splits connections and roles over the workers, contiguously.
func workerConfigs(o *options, n int, prefix string) []load.WorkerConfig {
	split := func(total, w int) (int, int) { return total * w / n, total * (w + 1) / n }
	cfgs := make([]load.WorkerConfig, n)
	useSrc := o.srcIPs > 0 && loopback(o.target)
	for w := range cfgs {
		c := load.WorkerConfig{
			Target: o.target, WSPath: o.wsPath, TLS: o.tls, TLSCA: o.tlsCA, TLSResume: o.tlsResume, TLSGroups: o.tlsGroups, ClientPrefix: prefix, KeepAlive: o.keepAlive,
			Username: o.username, Password: o.password, Persistent: o.persistent, Will: o.will,
			ConnRate: o.connRate / float64(n), ConnPar: max(1, o.connPar/n), ConnTimeout: o.connTO,
			SubFilter: o.filter, SubQoS: byte(o.subQoS), SubRx: o.subRx, PubTopic: o.topic, QoS: byte(o.qos),
			Window: o.window, PayloadSize: o.payload, JSONPayload: o.jsonPayload, TotalPubs: o.pubs, BatchMax: o.batch,
			StopGraceMs: 3000, SubsPerConn: o.subsPerConn, PubSndBuf: o.pubSndBuf, MinSentNs: o.minSentNs, Qos0Flow: o.qos0Flow,
		}
		if o.rate > 0 && o.pubs > 0 {
			c.RatePerPub = o.rate / float64(o.pubs)
		}
		if o.scenario == "idle" {
			c.IdleFrom, c.IdleTo = split(o.conns, w)
			c.TotalPubs = 0
		} else {
			c.SubFrom, c.SubTo = split(o.subs, w)
			c.PubFrom, c.PubTo = split(o.pubs, w)
		}
		if useSrc {
			for k := 0; k < o.srcIPs; k++ {
				c.SrcIPs = append(c.SrcIPs, fmt.Sprintf("127.0.%d.%d", 1+(w*o.srcIPs+k)/250, 1+(w*o.srcIPs+k)%250))
			}
		}
		cfgs[w] = c
	}
	return cfgs
}

type serverSet struct {
	pids []int
	s    []report.Server
}

func (ss *serverSet) sample(set func(*report.Server, procstat.Sample)) {
	for i, pid := range ss.pids {
		smp, err := procstat.Read(pid)
		if err != nil {
			ss.s[i].Err = err.Error()
			continue
		}
		set(&ss.s[i], smp)
	}
}

func sum(ss []report.Server, get func(*report.Server) *procstat.Sample) (rss int64, cpu float64, ok bool) {
	ok = len(ss) > 0
	for i := range ss {
		p := get(&ss[i])
		if p == nil {
			return 0, 0, false
		}
		rss += p.RSSBytes
		cpu += p.CPUSec
	}
	return
}

func ptr(s procstat.Sample) *procstat.Sample { return &s }

func run(o *options) (err error) {
	wallStart := time.Now()
	o.minSentNs = wallStart.UnixNano()
	cpuStart := procstat.SelfCPU()
	if strings.HasPrefix(o.target, "localhost:") {
		o.target = "127.0.0.1:" + strings.TrimPrefix(o.target, "localhost:")
	}
	res := &report.Result{
		Scenario: o.scenario, Label: o.label, TargetName: o.targetName, Target: o.target,
		Command: o.command(), Started: wallStart.UTC(), Host: hostInfo(),
		Params: params(o),
	}
	if res.Label == "" {
		res.Label = o.scenario
	}
	if o.echo {
		addr, pid, stop, err := startSink()
		if err != nil {
			return err
		}
		defer stop()
		o.target = addr
		res.Target = addr + " (in-harness sink)"
		if res.TargetName == "" {
			res.TargetName = "echo-sink"
		}
		o.serverPids = append([]int{pid}, o.serverPids...)
	}
	if c, err := net.DialTimeout("tcp", o.target, 3*time.Second); err != nil {
		return fmt.Errorf("cannot reach target %s: %w", o.target, err)
	} else {
		_ = c.Close()
	}

	nw := o.workers
	if nw <= 0 {
		nw = max(2, (o.totalConns()+5999)/6000)
	}
	res.Workers = nw
	prefix := fmt.Sprintf("fb%x-", time.Now().UnixNano()&0xffffff)
	ss := &serverSet{pids: o.serverPids, s: make([]report.Server, len(o.serverPids))}
	for i, p := range o.serverPids {
		ss.s[i].Pid = p
	}
	ss.sample(func(s *report.Server, p procstat.Sample) { s.Before = p })

	coord, err := load.StartWorkers(workerConfigs(o, nw, prefix))
	if err != nil {
		return err
	}
	defer coord.Kill()

	mon := startMonitor(o, coord)
	defer mon.stop()

	// Connect.
	mon.setPhase("connect")
	tConn := time.Now()
	connTimeout := 120*time.Second + time.Duration(float64(o.totalConns())/math.Max(o.connRate, 1)*float64(time.Second))
	if o.connRate <= 0 {
		connTimeout = 600 * time.Second
	}
	if err := coord.Broadcast(load.Command{Cmd: "connect"}); err != nil {
		return err
	}
	if _, err := coord.Wait("connected", connTimeout); err != nil {
		return err
	}
	connSec := since(tConn)
	afterConn := coord.Totals()
	res.Connect = report.Phase{Attempted: int64(o.totalConns()), OK: afterConn.ConnOK, Failed: afterConn.ConnFail,
		Sec: connSec, RatePerSec: float64(afterConn.ConnOK) / connSec}
	// Server CPU for accepting is read at once; memory after the settle time.
	ss.sample(func(s *report.Server, p procstat.Sample) { s.AfterConnect = ptr(p) })
	time.Sleep(o.settle)
	ss.sample(func(s *report.Server, p procstat.Sample) {
		if s.AfterConnect != nil {
			s.AfterConnect.RSSBytes = p.RSSBytes
		}
	})
	if o.kafka != "" {
		res.Kafka = &report.Kafka{Broker: o.kafka, Topic: o.kafkaTopic}
		countKafkaConns(o, res)
	}

	var stopped []load.Event
	var kr *kafkaReader
	if o.scenario == "idle" {
		if o.subsPerConn > 0 {
			mon.setPhase("subscribe")
			ss.sample(func(s *report.Server, p procstat.Sample) { s.SubscribeStart = ptr(p) })
			t := time.Now()
			if err := coord.Broadcast(load.Command{Cmd: "subscribe"}); err != nil {
				return err
			}
			if _, err := coord.Wait("subscribed", 180*time.Second); err != nil {
				return err
			}
			sec := since(t)
			ss.sample(func(s *report.Server, p procstat.Sample) { s.SubscribeEnd = ptr(p) })
			tot := coord.Totals()
			res.Subscribe = &report.Phase{Attempted: int64(o.subsPerConn) * afterConn.ConnOK, OK: tot.SubOK, Failed: tot.SubFail,
				Sec: sec, RatePerSec: float64(tot.SubOK) / sec}
			time.Sleep(o.settle)
			ss.sample(func(s *report.Server, p procstat.Sample) { s.AfterSubscribe = ptr(p) })
		}
		mon.setPhase("hold")
		ss.sample(func(s *report.Server, p procstat.Sample) { s.LoadStart = ptr(p) })
		time.Sleep(o.hold)
		res.HoldSec = o.hold.Seconds()
		ss.sample(func(s *report.Server, p procstat.Sample) { s.LoadEnd = ptr(p) })
		if o.kafka != "" {
			countKafkaConns(o, res)
		}
		if err := coord.Broadcast(load.Command{Cmd: "stop"}); err != nil {
			return err
		}
		if stopped, err = coord.Wait("stopped", 60*time.Second); err != nil {
			return err
		}
	} else {
		if o.scenario == "kafka-ingest" {
			if kr, err = startKafkaReader(o.kafka, o.kafkaTopic, wallStart.UnixNano()); err != nil {
				return err
			}
			mon.setKafka(&kr.count)
		}
		mon.setPhase("load")
		ss.sample(func(s *report.Server, p procstat.Sample) { s.LoadStart = ptr(p) })
		stages0, serr := scrapeStages(o.metricsURL)
		if serr != nil {
			return serr
		}
		genCPU0 := procstat.SelfCPU() + workersCPU(coord)
		tStart := time.Now()
		if err := coord.Broadcast(load.Command{Cmd: "start"}); err != nil {
			return err
		}
		var k0 int64
		if kr != nil {
			k0 = kr.count.Load()
		}
		time.Sleep(o.duration)
		if err := coord.Broadcast(load.Command{Cmd: "stop"}); err != nil {
			return err
		}
		dur := since(tStart)
		var k1 int64
		if kr != nil {
			k1 = kr.count.Load()
		}
		ss.sample(func(s *report.Server, p procstat.Sample) { s.LoadEnd = ptr(p) })
		if stages1, err := scrapeStages(o.metricsURL); err != nil {
			return err
		} else if stages1 != nil {
			res.Stages = stageQuantiles(stages0, stages1)
		}
		res.Generator.LoadCores = (procstat.SelfCPU() + workersCPU(coord) - genCPU0) / dur
		if o.kafka != "" {
			countKafkaConns(o, res)
		}
		if stopped, err = coord.Wait("stopped", 60*time.Second); err != nil {
			return err
		}
		var win load.Counters
		for _, e := range stopped {
			if e.AtStop != nil {
				win = win.Add(*e.AtStop)
			}
		}
		win = win.Sub(load.Counters{ConnOK: win.ConnOK, ConnFail: win.ConnFail, SubOK: win.SubOK, SubFail: win.SubFail})
		res.DurationSec = dur
		res.Window = &win
		res.Rates = &report.Rates{Published: float64(win.Published) / dur, Acked: float64(win.Acked) / dur,
			Delivered: float64(win.Delivered) / dur}
		if kr != nil {
			res.Rates.Kafka = float64(k1-k0) / dur
			res.Kafka.InWindow = k1 - k0
		}
		mon.setPhase("drain")
		time.Sleep(o.drain)
	}

	acked := map[int]uint64{}
	for _, e := range stopped {
		for id, n := range e.Acked {
			acked[id] = n
		}
	}
	mon.setPhase("finish")
	if err := coord.Broadcast(load.Command{Cmd: "finish", Acked: acked}); err != nil {
		return err
	}
	results, err := coord.Wait("result", 120*time.Second)
	if err != nil {
		return err
	}
	res.Totals = coord.Totals()
	coord.Close()
	mon.stop()
	ss.sample(func(s *report.Server, p procstat.Sample) { s.End = p })
	res.Servers = ss.s

	// Merge the workers' measurements.
	connH, subH, delH, ackH := stats.NewHist(), stats.NewHist(), stats.NewHist(), stats.NewHist()
	delReadH := stats.NewHist()
	var loss stats.Loss
	res.Errors = map[string]int{}
	for _, e := range results {
		r := e.Result
		stats.MergeSnapshot(connH, r.Connect)
		stats.MergeSnapshot(subH, r.Subscribe)
		stats.MergeSnapshot(delH, r.Delivery)
		stats.MergeSnapshot(delReadH, r.DeliveryRead)
		stats.MergeSnapshot(ackH, r.Ack)
		loss.Merge(r.Loss)
		res.Generator.WorkerCPUSec = append(res.Generator.WorkerCPUSec, r.CPUSec)
		res.Generator.CPUSec += r.CPUSec
		for k, v := range r.Errors {
			res.Errors[k] += v
		}
	}
	res.Connect.Latency = stats.Summarize(connH)
	if res.Subscribe != nil {
		res.Subscribe.Latency = stats.Summarize(subH)
	}
	var kh *hdrhistogram.Histogram
	if o.scenario != "idle" {
		d, a := stats.Summarize(delH), stats.Summarize(ackH)
		res.Delivery, res.Ack = &d, &a
		if delReadH.TotalCount() > 0 {
			dr := stats.Summarize(delReadH)
			res.DeliveryRead = &dr
		}
		if o.subs > 0 {
			res.Loss = &loss
		}
		if kr != nil {
			kl, h, kerr := kr.stop(acked)
			kh = h
			res.Kafka.Records, res.Kafka.Foreign = kr.count.Load(), kr.foreign.Load()
			res.Kafka.Latency, res.Kafka.Loss = stats.Summarize(h), kl
			if kerr != nil {
				res.Notes = append(res.Notes, "kafka reader: "+kerr.Error())
			}
		}
	}
	res.Generator.CPUSec += procstat.SelfCPU() - cpuStart
	res.Generator.WallSec = since(wallStart)
	res.Generator.Cores = res.Generator.CPUSec / res.Generator.WallSec
	res.Series = mon.series()
	derive(o, res)
	headline(o, res)

	if err := output(o, res, connH, delH, ackH, kh); err != nil {
		return err
	}
	if o.smoke {
		return smokeCheck(o, res)
	}
	return nil
}

func workersCPU(c *load.Coordinator) float64 {
	var t float64
	for _, pid := range c.Pids() {
		if s, err := procstat.Read(pid); err == nil {
			t += s.CPUSec
		}
	}
	return t
}

func countKafkaConns(o *options, res *report.Result) {
	_, port, err := net.SplitHostPort(o.kafka)
	if err != nil {
		return
	}
	p, _ := strconv.Atoi(port)
	res.Kafka.ServerConns = res.Kafka.ServerConns[:0]
	for _, pid := range o.serverPids {
		n, err := procstat.TCPConnsTo(pid, p)
		if err != nil {
			n = -1
		}
		res.Kafka.ServerConns = append(res.Kafka.ServerConns, n)
	}
}

// startSink runs "ferry-bench sink" as a separate process (so its CPU is
// measured like a broker's) and returns its address and pid.
func startSink() (addr string, pid int, stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command(exe, "sink", "--listen", "127.0.0.1:0")
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return "", 0, nil, fmt.Errorf("cannot start sink: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening ") {
		_ = cmd.Process.Kill()
		return "", 0, nil, fmt.Errorf("sink did not start: %q %v", line, err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = in.Close()
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(3 * time.Second):
				_ = cmd.Process.Kill()
			}
		})
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "listening ")), cmd.Process.Pid, stop, nil
}
