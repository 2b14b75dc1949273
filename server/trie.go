package server

import (
	"strings"
	"sync"
)

// subOpts are the options one subscription of a session carries.
type subOpts struct {
	qos            byte
	noLocal        bool
	retainAsPub    bool
	retainHandling byte
	subID          uint32 // 0 = none
}

// subEntry is one subscription stored at a trie node.
type subEntry struct {
	s *session
	subOpts
}

type trieNode struct {
	kids   []*trieNode          // exact levels while there are few of them (a map costs ~200 B even for one)
	index  map[string]*trieNode // exact levels once there are many
	plus   *trieNode
	hash   *trieNode // '#' as the last level; only subs, never children
	subs   []subEntry
	parent *trieNode
	level  string
}

// trieKidsMax is how many exact children a node keeps in a slice before it switches to a map.
const trieKidsMax = 8

// child returns the exact-level child lvl, or nil.
func (n *trieNode) child(lvl string) *trieNode {
	if n.index != nil {
		return n.index[lvl]
	}
	for _, k := range n.kids {
		if k.level == lvl {
			return k
		}
	}
	return nil
}

// addChild adds an exact-level child. The trie's write lock is held.
func (n *trieNode) addChild(c *trieNode) {
	if n.index != nil {
		n.index[c.level] = c
		return
	}
	if len(n.kids) < trieKidsMax {
		n.kids = append(n.kids, c)
		return
	}
	n.index = make(map[string]*trieNode, 2*trieKidsMax)
	for _, k := range n.kids {
		n.index[k.level] = k
	}
	n.index[c.level] = c
	n.kids = nil
}

// removeChild drops an exact-level child. The trie's write lock is held.
func (n *trieNode) removeChild(c *trieNode) {
	if n.index != nil {
		delete(n.index, c.level)
		return
	}
	for i, k := range n.kids {
		if k == c {
			last := len(n.kids) - 1
			n.kids[i] = n.kids[last]
			n.kids[last] = nil
			n.kids = n.kids[:last]
			if len(n.kids) == 0 {
				n.kids = nil
			}
			return
		}
	}
}

func (n *trieNode) hasChildren() bool { return len(n.kids) > 0 || len(n.index) > 0 }

// trie is the instance-wide subscription index. Kafka reader goroutines match records against it under the read
// lock; loops add and remove subscriptions under the write lock. No I/O happens under the lock.
type trie struct {
	mu    sync.RWMutex
	root  trieNode
	count int
}

func newTrie() *trie { return &trie{} }

// add stores or replaces s's subscription to filter. It reports whether the subscription existed before.
func (t *trie) add(filter string, s *session, o subOpts) (existed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := &t.root
	for _, lvl := range strings.Split(filter, "/") {
		switch lvl {
		case "+":
			if n.plus == nil {
				n.plus = &trieNode{parent: n, level: lvl}
			}
			n = n.plus
		case "#":
			if n.hash == nil {
				n.hash = &trieNode{parent: n, level: lvl}
			}
			n = n.hash
		default:
			c := n.child(lvl)
			if c == nil {
				c = &trieNode{parent: n, level: lvl}
				n.addChild(c)
			}
			n = c
		}
	}
	for i := range n.subs {
		if n.subs[i].s == s {
			n.subs[i].subOpts = o // [MQTT-3.8.4-3] replace the existing subscription
			return true
		}
	}
	n.subs = append(n.subs, subEntry{s: s, subOpts: o})
	t.count++
	return false
}

// remove deletes s's subscription to filter and reports whether there was one.
func (t *trie) remove(filter string, s *session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := &t.root
	for _, lvl := range strings.Split(filter, "/") {
		switch lvl {
		case "+":
			n = n.plus
		case "#":
			n = n.hash
		default:
			n = n.child(lvl)
		}
		if n == nil {
			return false
		}
	}
	for i := range n.subs {
		if n.subs[i].s == s {
			last := len(n.subs) - 1
			n.subs[i] = n.subs[last]
			n.subs[last] = subEntry{}
			n.subs = n.subs[:last]
			t.count--
			t.prune(n)
			return true
		}
	}
	return false
}

// prune drops empty nodes up the tree. The write lock is held.
func (t *trie) prune(n *trieNode) {
	for n.parent != nil && len(n.subs) == 0 && !n.hasChildren() && n.plus == nil && n.hash == nil {
		p := n.parent
		switch {
		case p.plus == n:
			p.plus = nil
		case p.hash == n:
			p.hash = nil
		default:
			p.removeChild(n)
		}
		n = p
	}
}

// match appends every subscription whose filter matches topic to dst. Topics starting with '$' are not matched
// by filters starting with a wildcard [MQTT-4.7.2-1].
func (t *trie) match(topic string, dst []subEntry) []subEntry {
	t.mu.RLock()
	dst = matchLevels(&t.root, topic, strings.HasPrefix(topic, "$"), dst)
	t.mu.RUnlock()
	return dst
}

func matchLevels(n *trieNode, rest string, dollar bool, dst []subEntry) []subEntry {
	// '#' matches the parent level too: "sport/#" matches "sport" [MQTT-4.7.1-2].
	if n.hash != nil && !dollar {
		dst = append(dst, n.hash.subs...)
	}
	lvl, tail, more := strings.Cut(rest, "/")
	if c := n.child(lvl); c != nil {
		if more {
			dst = matchLevels(c, tail, false, dst)
		} else {
			dst = append(dst, c.subs...)
			if c.hash != nil {
				dst = append(dst, c.hash.subs...)
			}
		}
	}
	if n.plus != nil && !dollar {
		if more {
			dst = matchLevels(n.plus, tail, false, dst)
		} else {
			dst = append(dst, n.plus.subs...)
			if n.plus.hash != nil {
				dst = append(dst, n.plus.hash.subs...)
			}
		}
	}
	return dst
}

// size returns the number of stored subscriptions.
func (t *trie) size() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.count
}
