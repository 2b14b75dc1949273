package server

import (
	"testing"
	"unsafe"
)

// The topic index of a delivery lives in what was padding: a queued or in-flight message costs what it did
// before routing existed.
func TestDeliverySize(t *testing.T) {
	if n := unsafe.Sizeof(delivery{}); n != 64 {
		t.Fatalf("delivery is %d bytes, want 64", n)
	}
}
