// Command ferry-bench is Ferry's load harness: it measures an MQTT broker
// (Ferry or any other) with idle connections, fan-in, fan-out and the
// MQTT→Kafka pipeline. See perf/README.md and BENCHMARKS.md.
//
//	ferry-bench idle|fanin|fanout|kafka-ingest --target host:port [--server-pid PID[,PID…]] [flags]
//	ferry-bench sink --listen 127.0.0.1:0          # the trivial echo target
//	ferry-bench summarize [--out FILE] results/*.json
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferrymq/ferry/perf/internal/load"
	"github.com/ferrymq/ferry/perf/internal/report"
	"github.com/ferrymq/ferry/perf/internal/sink"
)

const usage = `usage: ferry-bench <scenario> --target host:port [flags]

scenarios:
  idle          open --conns connections at --conn-rate, optional --subs-per-conn each, hold --hold
  fanin         --pubs publishers at --qos (window --window) to bench/<i>, --subs subscribers on bench/#
  fanout        one publisher at --rate msg/s to one topic, --subs subscribers
  kafka-ingest  --pubs publishers at QoS 1; a Kafka reader on --kafka counts records and latency
other commands:
  sink          run the trivial echo target (acks everything, forwards to subscribers)
  summarize     median tables (Markdown) from result JSON files
Run "ferry-bench <scenario> -h" for the flags.`

func main() {
	if len(os.Args) > 1 && os.Args[1] == load.WorkerArg {
		signal.Ignore(syscall.SIGINT) // the coordinator decides when workers end
		if err := load.RunWorker(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "ferry-bench worker:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd := os.Args[1]; cmd {
	case "idle", "fanin", "fanout", "kafka-ingest":
		var o *options
		o, err = parseOptions(cmd, os.Args[2:])
		if err == nil {
			err = run(o)
		}
	case "sink":
		err = runSink(os.Args[2:])
	case "summarize":
		err = runSummarize(os.Args[2:])
	case "-h", "--help", "help":
		fmt.Println(usage)
		return
	default:
		err = fmt.Errorf("unknown scenario %q\n%s", cmd, usage)
	}
	if err != nil {
		var se smokeError
		if errors.As(err, &se) {
			fmt.Fprintln(os.Stderr, "ferry-bench: smoke check failed:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "ferry-bench:", err)
		os.Exit(2)
	}
}

type smokeError struct{ msg string }

func (e smokeError) Error() string { return e.msg }

func runSink(args []string) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := sink.Listen(*listen)
	if err != nil {
		return fmt.Errorf("cannot start sink: %w", err)
	}
	fmt.Printf("listening %s\n", s.Addr())
	// Serve until stdin closes (when started by a coordinator) or a signal.
	done := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString(0)
		if isPipe(os.Stdin) {
			close(done)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case <-sig:
	case <-done:
	}
	fmt.Fprintf(os.Stderr, "sink: %d forwarded PUBLISHes dropped (per-connection cap)\n", s.Dropped.Load())
	return s.Close()
}

func isPipe(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeNamedPipe != 0
}

func runSummarize(args []string) error {
	fs := flag.NewFlagSet("summarize", flag.ContinueOnError)
	out := fs.String("out", "", "write to this file instead of stdout")
	order := fs.String("order", "ferry,mosquitto,mochi,mosquitto+bridge", "column order of targets")
	ref := fs.String("ref", "ferry", "target the ratios are computed for")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var rs []*report.Result
	for _, p := range fs.Args() {
		r, err := report.ReadJSON(p)
		if err != nil {
			return err
		}
		rs = append(rs, r)
	}
	w := os.Stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	report.Summarize(w, rs, strings.Split(*order, ","), *ref)
	return nil
}

func parsePids(s string) ([]int, error) {
	var ps []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p <= 0 {
			return nil, fmt.Errorf("bad --server-pid %q", f)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func since(t time.Time) float64 { return time.Since(t).Seconds() }
