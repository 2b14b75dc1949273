package server_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
)

// A running Server keeps one P per event loop above the runtime's default, whatever --event-loops says, and
// gives them back when it stops (internal/procs).
func TestEventLoopsLeaveThePollerAP(t *testing.T) {
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	for _, loops := range []int{1, 3} {
		f := buildFerryLoops(t, loops, []kafkamux.Opt{kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir("")}, nil)
		if got := runtime.GOMAXPROCS(0); got != def+loops {
			t.Errorf("%d loops: GOMAXPROCS %d while running, want the default %d + %d", loops, got, def, loops)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := f.srv.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		f.mux.Close()
		if got := runtime.GOMAXPROCS(0); got != def {
			t.Errorf("%d loops: GOMAXPROCS %d after stop, want the default %d", loops, got, def)
		}
	}
}
