// Package topictree is the tree of MQTT topic levels under both of the server's indexes: subscriptions
// (filters stored, a topic matched against them: server/trie.go) and retained messages (topics stored, a
// filter matched against them: server/retained). It owns the shape they share — one node per level, a
// node's children kept in a slice while they are few and in a map past that, paths walked and created level
// by level, nodes left empty pruned on removal — and leaves what a node holds (V) and how a filter or topic
// is matched to its user: the two matches walk the tree in opposite directions.
//
// Levels are split on '/' and are substrings of the path that created the node, so a level costs no bytes of
// its own while that path's string is kept (both users keep it: the session's filter, the message's topic).
// '+' and '#' are levels like any other here; what they mean is the caller's business.
//
// A Node is not safe for concurrent use: its user holds its own lock (both indexes use an RWMutex).
package topictree

import "strings"

// smallFanout is how many children a node keeps in a slice before it switches to a map: scanning a few
// 24-byte entries is as fast as hashing and far smaller than a map (a map holding one entry costs about 300
// bytes).
const smallFanout = 8

// Node is one topic level. The zero Node is an empty root. On amd64 a Node costs 32 bytes plus V (48 bytes
// with a pointer, 64 with a slice, in the allocator's size classes).
type Node[V any] struct {
	Value V                   // what the user keeps at this level; the zero V means nothing (see Remove)
	kids  []kid[V]            // children while there are at most smallFanout, unordered
	big   map[string]*Node[V] // children once there are more; kids is nil then
}

type kid[V any] struct {
	level string
	n     *Node[V]
}

// Child returns the child of n at level, or nil.
func (n *Node[V]) Child(level string) *Node[V] {
	if n.big != nil {
		return n.big[level]
	}
	for i := range n.kids {
		if n.kids[i].level == level {
			return n.kids[i].n
		}
	}
	return nil
}

// Each calls fn for every child of n, in no particular order.
func (n *Node[V]) Each(fn func(level string, c *Node[V])) {
	if n.big != nil {
		for l, c := range n.big {
			fn(l, c)
		}
		return
	}
	for _, k := range n.kids {
		fn(k.level, k.n)
	}
}

// Children returns how many children n has and whether they are kept in a map (more than smallFanout were
// added since it last had none). For tests and metrics.
func (n *Node[V]) Children() (count int, mapped bool) {
	if n.big != nil {
		return len(n.big), true
	}
	return len(n.kids), false
}

// Leaf reports whether n has no children.
func (n *Node[V]) Leaf() bool { return len(n.kids) == 0 && len(n.big) == 0 }

func (n *Node[V]) addChild(level string, c *Node[V]) {
	if n.big == nil && len(n.kids) < smallFanout {
		n.kids = append(n.kids, kid[V]{level: level, n: c})
		return
	}
	if n.big == nil {
		n.big = make(map[string]*Node[V], 2*smallFanout)
		for _, k := range n.kids {
			n.big[k.level] = k.n
		}
		n.kids = nil
	}
	n.big[level] = c
}

func (n *Node[V]) removeChild(level string) {
	if n.big != nil {
		delete(n.big, level)
		if len(n.big) == 0 {
			n.big = nil
		}
		return
	}
	for i := range n.kids {
		if n.kids[i].level == level {
			last := len(n.kids) - 1
			n.kids[i] = n.kids[last]
			n.kids[last] = kid[V]{}
			n.kids = n.kids[:last]
			if last == 0 {
				n.kids = nil
			}
			return
		}
	}
}

// Put returns the node of path below n, creating the missing levels.
func (n *Node[V]) Put(path string) *Node[V] {
	for {
		level, tail, more := strings.Cut(path, "/")
		c := n.Child(level)
		if c == nil {
			c = &Node[V]{}
			n.addChild(level, c)
		}
		n = c
		if !more {
			return n
		}
		path = tail
	}
}

// Get returns the node of path below n, or nil if there is none.
func (n *Node[V]) Get(path string) *Node[V] {
	for {
		level, tail, more := strings.Cut(path, "/")
		if n = n.Child(level); n == nil || !more {
			return n
		}
		path = tail
	}
}

// Remove finds the node of path below n and calls edit with its value, which edit may change; edit reports
// whether it did. If it did, the node and then its ancestors are dropped for as long as they have no children
// and a value that empty says holds nothing (n itself, the root, never is). Remove returns what edit
// returned, or false if path has no node.
func (n *Node[V]) Remove(path string, edit func(v *V) bool, empty func(v *V) bool) bool {
	type step struct {
		n     *Node[V]
		level string
	}
	var stack [16]step // deeper paths spill to the heap
	steps := stack[:0]
	for {
		level, tail, more := strings.Cut(path, "/")
		c := n.Child(level)
		if c == nil {
			return false
		}
		steps = append(steps, step{n, level})
		n = c
		if !more {
			break
		}
		path = tail
	}
	if !edit(&n.Value) {
		return false
	}
	for i := len(steps) - 1; i >= 0 && n.Leaf() && empty(&n.Value); i-- {
		steps[i].n.removeChild(steps[i].level)
		n = steps[i].n
	}
	return true
}
