package throttle

import (
	"testing"
	"time"
)

// One line per window with Burst 0, the held-back count on the next one, kinds apart, and the zero Window
// letting everything through.
func TestLimiter(t *testing.T) {
	l := Limiter{Window: time.Minute}
	t0 := time.Unix(1000, 0)
	if ok, _ := l.AllowAt("a", t0); !ok {
		t.Fatal("first line held back")
	}
	for i := 1; i <= 3; i++ {
		if ok, _ := l.AllowAt("a", t0.Add(time.Duration(i)*time.Second)); ok {
			t.Fatal("second line in the window let through")
		}
	}
	if ok, _ := l.AllowAt("b", t0.Add(time.Second)); !ok {
		t.Fatal("another kind held back")
	}
	if ok, n := l.AllowAt("a", t0.Add(time.Minute)); !ok || n != 3 {
		t.Fatalf("next window: %v, %d held back; want true, 3", ok, n)
	}
	var zero Limiter
	for range 5 {
		if ok, _ := zero.Allow("x"); !ok {
			t.Fatal("zero Limiter held a line back")
		}
	}
}
