// Package procstat reads a process's memory and CPU from /proc (Linux only).
package procstat

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clkTck is USER_HZ; it is 100 on every Linux architecture Go supports.
const clkTck = 100

// Sample is one reading of a process.
type Sample struct {
	At       time.Time `json:"-"`
	RSSBytes int64     `json:"rss_bytes"`
	CPUSec   float64   `json:"cpu_sec"` // user + system
	Threads  int       `json:"threads"`
}

// Read samples pid: RSS from /proc/PID/smaps_rollup when available (Rss), else
// /proc/PID/status VmRSS; CPU from fields 14 and 15 of /proc/PID/stat.
func Read(pid int) (Sample, error) {
	s := Sample{At: time.Now()}
	rss, err := rssBytes(pid)
	if err != nil {
		return s, err
	}
	s.RSSBytes = rss
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("cannot read cpu of pid %d: %w", pid, err)
	}
	// comm (field 2) may contain spaces; fields after the last ')' are fixed.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("cannot parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(stat[i+1:])) // f[0] is field 3 (state)
	if len(f) < 18 {
		return s, fmt.Errorf("cannot parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	s.CPUSec = float64(ut+st) / clkTck
	s.Threads, _ = strconv.Atoi(f[17]) // field 20
	return s, nil
}

func rssBytes(pid int) (int64, error) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		if v, ok := kbField(b, "Rss:"); ok {
			return v, nil
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("cannot read memory of pid %d: %w", pid, err)
	}
	if v, ok := kbField(b, "VmRSS:"); ok {
		return v, nil
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func kbField(b []byte, key string) (int64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, key) {
			continue
		}
		f := strings.Fields(line[len(key):])
		if len(f) == 0 {
			return 0, false
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		return v * 1024, err == nil
	}
	return 0, false
}

// SelfCPU returns this process's user+system CPU seconds (getrusage).
func SelfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// TCPConnsTo counts the established TCP sockets owned by pid whose remote port
// is port (e.g. a broker's connections to Kafka on 9092). Ferry's embedded
// Kafka lives in the same process, so its own listener side is not counted:
// only sockets whose *remote* end is the port are.
func TCPConnsTo(pid, port int) (int, error) {
	inodes := map[string]bool{}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("cannot list fds of pid %d: %w", pid, err)
	}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[l[8:len(l)-1]] = true
		}
	}
	n := 0
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Scan() // header
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) < 10 || fl[3] != "01" || !inodes[fl[9]] { // 01 = ESTABLISHED
				continue
			}
			rem := fl[2]
			c := strings.LastIndexByte(rem, ':')
			p, err := strconv.ParseInt(rem[c+1:], 16, 32)
			if err == nil && int(p) == port {
				n++
			}
		}
	}
	return n, nil
}
