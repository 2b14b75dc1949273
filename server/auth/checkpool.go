package auth

import (
	"runtime"
	"sync"
)

// CheckQueueMax bounds the password checks waiting for a goroutine of a CheckPool.
const CheckQueueMax = 4096

// CheckPool runs password checks (VerifyPassword) off the event loops: a bounded number of goroutines (one per
// two CPUs, at least one), started only while there is work, none while idle, and a queue of at most
// CheckQueueMax checks. The zero CheckPool is ready for use.
type CheckPool struct {
	mu      sync.Mutex
	running int
	max     int
	queue   []func()
}

// Submit runs job soon, or reports false when the queue is full. Safe for concurrent use; never blocks.
func (p *CheckPool) Submit(job func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.max == 0 {
		p.max = max(1, runtime.NumCPU()/2)
	}
	if p.running < p.max {
		p.running++
		go p.run(job)
		return true
	}
	if len(p.queue) >= CheckQueueMax {
		return false
	}
	p.queue = append(p.queue, job)
	return true
}

// run runs job and then the queued ones, and ends when the queue is empty. Runs on its own goroutine.
func (p *CheckPool) run(job func()) {
	for job != nil {
		job()
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.running--
			job = nil
		} else {
			job = p.queue[0]
			p.queue[0] = nil
			p.queue = p.queue[1:]
		}
		p.mu.Unlock()
	}
}
