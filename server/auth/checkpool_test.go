package auth

import (
	"sync"
	"testing"
	"time"
)

// A CheckPool runs every job it takes, at most its bound at once, queues up to CheckQueueMax more and refuses
// the rest at once.
func TestCheckPoolBounded(t *testing.T) {
	var p CheckPool
	release := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	running, most := 0, 0
	job := func() {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		<-release
		mu.Lock()
		running--
		mu.Unlock()
		wg.Done()
	}
	taken := 0
	for range 1 + CheckQueueMax + 1000 {
		wg.Add(1)
		if !p.Submit(job) {
			wg.Done()
			break
		}
		taken++
	}
	p.mu.Lock()
	bound := p.max
	p.mu.Unlock()
	if taken != bound+CheckQueueMax {
		t.Fatalf("took %d checks, want %d running and %d queued", taken, bound, CheckQueueMax)
	}
	close(release)
	wg.Wait()
	if most > bound {
		t.Fatalf("%d checks ran at once, bound %d", most, bound)
	}
	// The last goroutine ends just after its job: wait for it (bounded, not timed).
	for i := 0; ; i++ {
		p.mu.Lock()
		n, q := p.running, len(p.queue)
		p.mu.Unlock()
		if n == 0 && q == 0 {
			break
		}
		if i == 10_000 {
			t.Fatalf("after the work: %d goroutines, %d queued", n, q)
		}
		time.Sleep(time.Millisecond)
	}
}
