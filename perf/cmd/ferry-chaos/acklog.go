package main

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"time"
)

// ackKey names one message: its QoS, its publisher and its sequence number.
type ackKey struct {
	qos byte
	pub uint32
	seq uint64
}

// ackLog appends one line "qos pub seq" per acknowledged message to a file, flushed every 50 ms: what the
// verifier holds the broker to. The load process is not the one being killed, but the file is flushed
// promptly anyway so a crash of the load generator itself loses at most 50 ms of records.
type ackLog struct {
	mu   sync.Mutex
	f    *os.File
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

func openAckLog(path string) (*ackLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open ack log: %w", err)
	}
	l := &ackLog{f: f, w: bufio.NewWriterSize(f, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				l.mu.Lock()
				_ = l.w.Flush()
				l.mu.Unlock()
			case <-l.stop:
				return
			}
		}
	}()
	return l, nil
}

func (l *ackLog) add(k ackKey) {
	if l == nil {
		return
	}
	l.mu.Lock()
	fmt.Fprintf(l.w, "%d %d %d\n", k.qos, k.pub, k.seq)
	l.mu.Unlock()
}

func (l *ackLog) close() error {
	if l == nil {
		return nil
	}
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.w.Flush(); err != nil {
		return err
	}
	return l.f.Close()
}

// readAckLogs reads the acknowledged messages from ack log files.
func readAckLogs(paths []string) (map[ackKey]struct{}, error) {
	acked := map[ackKey]struct{}{}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("cannot read ack log: %w", err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var k ackKey
			if _, err := fmt.Sscanf(sc.Text(), "%d %d %d", &k.qos, &k.pub, &k.seq); err != nil {
				f.Close()
				return nil, fmt.Errorf("ack log %s: bad line %q: %w", p, sc.Text(), err)
			}
			acked[k] = struct{}{}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("cannot read ack log %s: %w", p, err)
		}
	}
	return acked, nil
}
