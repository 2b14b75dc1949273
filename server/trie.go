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
	children map[string]*trieNode // exact levels
	plus     *trieNode
	hash     *trieNode // '#' as the last level; only subs, never children
	subs     []subEntry
	parent   *trieNode
	level    string
}

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
			c := n.children[lvl]
			if c == nil {
				if n.children == nil {
					n.children = make(map[string]*trieNode)
				}
				c = &trieNode{parent: n, level: lvl}
				n.children[lvl] = c
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
			n = n.children[lvl]
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
	for n.parent != nil && len(n.subs) == 0 && len(n.children) == 0 && n.plus == nil && n.hash == nil {
		p := n.parent
		switch {
		case p.plus == n:
			p.plus = nil
		case p.hash == n:
			p.hash = nil
		default:
			delete(p.children, n.level)
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
	if c := n.children[lvl]; c != nil {
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
