package topictree

import (
	"fmt"
	"testing"
)

// Put, Get and Remove: nodes switch from a slice to a map past smallFanout children, and removal prunes the
// levels it leaves empty, back to an empty root.
func TestPutGetRemove(t *testing.T) {
	var root Node[int]
	for i := range 20 {
		root.Put(fmt.Sprintf("a/%d/c", i)).Value = i + 1
	}
	a := root.Child("a")
	if n, mapped := a.Children(); n != 20 || !mapped {
		t.Fatalf("a has %d children (mapped %v), want 20 in a map", n, mapped)
	}
	if n := root.Get("a/7/c"); n == nil || n.Value != 8 {
		t.Fatalf("Get(a/7/c) = %+v", n)
	}
	if root.Get("a/7/d") != nil || root.Get("b") != nil {
		t.Fatal("Get found a path never put")
	}
	clear := func(v *int) bool {
		if *v == 0 {
			return false
		}
		*v = 0
		return true
	}
	empty := func(v *int) bool { return *v == 0 }
	if root.Remove("a/7", clear, empty) {
		t.Fatal("Remove of a level without a value reported a removal")
	}
	for i := range 20 {
		if !root.Remove(fmt.Sprintf("a/%d/c", i), clear, empty) {
			t.Fatalf("Remove(a/%d/c) found nothing", i)
		}
	}
	if !root.Leaf() {
		t.Fatalf("root keeps children after every path was removed: %+v", root)
	}
}

// A level that keeps a value or children is not pruned with its removed child.
func TestRemoveKeepsOccupiedLevels(t *testing.T) {
	var root Node[string]
	root.Put("x").Value = "x"
	root.Put("x/y").Value = "xy"
	root.Put("x/z").Value = "xz"
	clear := func(v *string) bool { *v = ""; return true }
	empty := func(v *string) bool { return *v == "" }
	root.Remove("x/y", clear, empty)
	if root.Get("x") == nil || root.Get("x/z") == nil || root.Get("x/y") != nil {
		t.Fatal("removing x/y dropped the wrong levels")
	}
	root.Remove("x/z", clear, empty)
	if x := root.Get("x"); x == nil || x.Value != "x" || !x.Leaf() {
		t.Fatalf("x after its children went: %+v", x)
	}
}
