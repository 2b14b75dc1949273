package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferrymq/ferry/perf/internal/procstat"
)

// reading is one sample of the broker process.
type reading struct {
	at         time.Time
	rss        int64
	goroutines int64 // -1 = unknown
	fds        int64
}

func fdCount(pid int) int64 {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return int64(len(ents))
}

// metrics fetches Ferry's /metrics and returns the sum of each named family's samples.
func metrics(admin string, names ...string) (map[string]float64, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		name := l
		if i := strings.IndexAny(l, "{ "); i >= 0 {
			name = l[:i]
		}
		if !want[name] {
			continue
		}
		f := strings.Fields(l[strings.LastIndexByte(l, '}')+1:]) // value [timestamp]; the name too when unlabelled
		if len(f) == 0 {
			continue
		}
		if f[0] == name {
			f = f[1:]
		}
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err == nil {
			out[name] += v
		}
	}
	return out, sc.Err()
}

// metricLabels returns the samples of one family as "labels value" pairs (for reasons of drops).
func metricLabels(admin, name string) (map[string]float64, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, name+"{") {
			continue
		}
		i := strings.LastIndexByte(l, '}')
		v, err := strconv.ParseFloat(strings.TrimSpace(l[i+1:]), 64)
		if err == nil {
			out[l[len(name)+1:i]] = v
		}
	}
	return out, nil
}

// readyz returns whether /readyz answers 200.
func readyz(admin string) (bool, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + admin + "/readyz")
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == 200, nil
}

func read(pid int, admin string) reading {
	r := reading{at: time.Now(), goroutines: -1, fds: fdCount(pid)}
	if s, err := procstat.Read(pid); err == nil {
		r.rss = s.RSSBytes
	}
	if admin != "" {
		if m, err := metrics(admin, "go_goroutines"); err == nil {
			if v, ok := m["go_goroutines"]; ok {
				r.goroutines = int64(v)
			}
		}
	}
	return r
}

// sample writes "unix_ms rss goroutines fds" lines for pid every --every until SIGTERM or --max; the pid is
// re-read from --pid-file at every sample when given (a broker that the script restarts).
func sample(args []string) error {
	fs := flag.NewFlagSet("sample", flag.ExitOnError)
	pid := fs.Int("pid", 0, "process to sample")
	pidFile := fs.String("pid-file", "", "file holding the pid (re-read every sample)")
	admin := fs.String("admin", "", "admin address for go_goroutines (optional)")
	out := fs.String("out", "samples.txt", "output file")
	every := fs.Duration("every", 500*time.Millisecond, "interval")
	maxDur := fs.Duration("max", 2*time.Hour, "stop after this long")
	_ = fs.Parse(args)
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer f.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	t := time.NewTicker(*every)
	defer t.Stop()
	end := time.After(*maxDur)
	var peak int64
	for {
		p := *pid
		if *pidFile != "" {
			if b, err := os.ReadFile(*pidFile); err == nil {
				p, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			}
		}
		if p > 0 {
			r := read(p, *admin)
			if r.rss > 0 {
				fmt.Fprintf(f, "%d %d %d %d\n", r.at.UnixMilli(), r.rss, r.goroutines, r.fds)
				peak = max(peak, r.rss)
			}
		}
		select {
		case <-t.C:
		case <-sig:
			fmt.Printf("sample: peak_rss=%s\n", mib(peak))
			return nil
		case <-end:
			fmt.Printf("sample: peak_rss=%s\n", mib(peak))
			return nil
		}
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }
