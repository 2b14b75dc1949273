package load

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// WorkerArg is the hidden first argument that makes the binary a worker.
const WorkerArg = "__worker"

type wproc struct {
	idx int
	cmd *exec.Cmd
	in  io.WriteCloser
	enc *json.Encoder
}

// Coordinator owns the worker processes of one run.
type Coordinator struct {
	procs  []*wproc
	events chan Event
	exited chan error

	mu     sync.Mutex
	latest []Counters
	errs   map[string]int
}

// StartWorkers re-executes the current binary once per config and sends each
// its config; it returns when every worker said "ready".
func StartWorkers(cfgs []WorkerConfig) (*Coordinator, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find own executable to start workers: %w", err)
	}
	c := &Coordinator{
		events: make(chan Event, 64*len(cfgs)),
		exited: make(chan error, len(cfgs)),
		latest: make([]Counters, len(cfgs)),
		errs:   map[string]int{},
	}
	for i := range cfgs {
		cfgs[i].Worker = i
		cmd := exec.Command(exe, WorkerArg)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			c.Kill()
			return nil, fmt.Errorf("cannot start worker %d: %w", i, err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			c.Kill()
			return nil, fmt.Errorf("cannot start worker %d: %w", i, err)
		}
		if err := cmd.Start(); err != nil {
			c.Kill()
			return nil, fmt.Errorf("cannot start worker %d: %w", i, err)
		}
		p := &wproc{idx: i, cmd: cmd, in: in, enc: json.NewEncoder(in)}
		c.procs = append(c.procs, p)
		go c.read(p, out)
		if err := p.enc.Encode(Command{Cmd: "config", Config: &cfgs[i]}); err != nil {
			c.Kill()
			return nil, fmt.Errorf("cannot configure worker %d: %w", i, err)
		}
	}
	if _, err := c.Wait("ready", 30*time.Second); err != nil {
		c.Kill()
		return nil, err
	}
	return c, nil
}

func (c *Coordinator) read(p *wproc, out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 256<<20) // results carry histograms
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			c.exited <- fmt.Errorf("worker %d sent an undecodable event: %w", p.idx, err)
			return
		}
		e.Worker = p.idx
		c.mu.Lock()
		c.latest[p.idx] = e.Counters
		c.mu.Unlock()
		if e.Ev != "progress" {
			c.events <- e
		}
	}
	err := p.cmd.Wait()
	if err == nil {
		err = sc.Err()
	}
	c.exited <- fmt.Errorf("worker %d exited: %v", p.idx, err)
}

// Broadcast sends cmd to every worker.
func (c *Coordinator) Broadcast(cmd Command) error {
	for _, p := range c.procs {
		if err := p.enc.Encode(cmd); err != nil {
			return fmt.Errorf("cannot send %q to worker %d: %w", cmd.Cmd, p.idx, err)
		}
	}
	return nil
}

// Wait collects event ev from every worker, in worker order.
func (c *Coordinator) Wait(ev string, timeout time.Duration) ([]Event, error) {
	got := make([]Event, len(c.procs))
	seen := 0
	t := time.NewTimer(timeout)
	defer t.Stop()
	for seen < len(c.procs) {
		select {
		case e := <-c.events:
			if e.Ev != ev {
				return nil, fmt.Errorf("worker %d: expected %q, got %q %s", e.Worker, ev, e.Ev, e.Msg)
			}
			got[e.Worker] = e
			seen++
		case err := <-c.exited:
			return nil, fmt.Errorf("while waiting for %q: %w", ev, err)
		case <-t.C:
			return nil, fmt.Errorf("timed out after %v waiting for %q from %d of %d workers",
				timeout, ev, len(c.procs)-seen, len(c.procs))
		}
	}
	return got, nil
}

// Totals sums the latest counters of all workers.
func (c *Coordinator) Totals() Counters {
	c.mu.Lock()
	defer c.mu.Unlock()
	var t Counters
	for _, l := range c.latest {
		t = t.Add(l)
	}
	return t
}

// Pids returns the worker process ids.
func (c *Coordinator) Pids() []int {
	var ps []int
	for _, p := range c.procs {
		if p.cmd.Process != nil {
			ps = append(ps, p.cmd.Process.Pid)
		}
	}
	return ps
}

// Close tells workers to exit and waits a little for them.
func (c *Coordinator) Close() {
	_ = c.Broadcast(Command{Cmd: "close"})
	for _, p := range c.procs {
		_ = p.in.Close()
	}
	deadline := time.After(10 * time.Second)
	for range c.procs {
		select {
		case <-c.exited:
		case <-deadline:
			c.Kill()
			return
		}
	}
}

// Kill ends the worker processes this coordinator started.
func (c *Coordinator) Kill() {
	for _, p := range c.procs {
		if p.cmd.Process != nil {
			_ = p.cmd.Process.Kill()
		}
	}
}
