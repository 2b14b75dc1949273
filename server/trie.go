package server

import (
	"strings"
	"sync"

	"github.com/ferrymq/ferry/server/topictree"
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

// subNode is one level of the subscription trie: the subscriptions whose filter ends there. '+' and '#'
// levels are children named "+" and "#".
type subNode = topictree.Node[[]subEntry]

// trie is the instance-wide subscription index. Kafka reader goroutines match records against it under the read
// lock; loops add and remove subscriptions under the write lock. No I/O happens under the lock.
type trie struct {
	mu    sync.RWMutex
	root  subNode
	count int
}

func newTrie() *trie { return &trie{} }

// add stores or replaces s's subscription to filter. It reports whether the subscription existed before.
func (t *trie) add(filter string, s *session, o subOpts) (existed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.root.Put(filter)
	for i := range n.Value {
		if n.Value[i].s == s {
			n.Value[i].subOpts = o // [MQTT-3.8.4-3] replace the existing subscription
			return true
		}
	}
	n.Value = append(n.Value, subEntry{s: s, subOpts: o})
	t.count++
	return false
}

// remove deletes s's subscription to filter and reports whether there was one. Levels left without
// subscriptions and children are dropped.
func (t *trie) remove(filter string, s *session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	removed := t.root.Remove(filter, func(subs *[]subEntry) bool {
		v := *subs
		for i := range v {
			if v[i].s == s {
				last := len(v) - 1
				v[i] = v[last]
				v[last] = subEntry{}
				*subs = v[:last]
				return true
			}
		}
		return false
	}, noSubs)
	if removed {
		t.count--
	}
	return removed
}

func noSubs(subs *[]subEntry) bool { return len(*subs) == 0 }

// match appends every subscription whose filter matches topic to dst. Topics starting with '$' are not matched
// by filters starting with a wildcard [MQTT-4.7.2-1].
func (t *trie) match(topic string, dst []subEntry) []subEntry {
	t.mu.RLock()
	dst = matchLevels(&t.root, topic, strings.HasPrefix(topic, "$"), dst)
	t.mu.RUnlock()
	return dst
}

func matchLevels(n *subNode, rest string, dollar bool, dst []subEntry) []subEntry {
	// '#' matches the parent level too: "sport/#" matches "sport" [MQTT-4.7.1-2].
	if !dollar {
		if h := n.Child("#"); h != nil {
			dst = append(dst, h.Value...)
		}
	}
	lvl, tail, more := strings.Cut(rest, "/")
	// A topic level "+" or "#" (a Kafka key no MQTT client could publish) is not the wildcard child's name.
	if !wildcard(lvl) {
		if c := n.Child(lvl); c != nil {
			dst = matchBelow(c, tail, more, dst)
		}
	}
	if !dollar {
		if p := n.Child("+"); p != nil {
			dst = matchBelow(p, tail, more, dst)
		}
	}
	return dst
}

// matchBelow matches the rest of a topic below c, the node that matched its level.
func matchBelow(c *subNode, tail string, more bool, dst []subEntry) []subEntry {
	if more {
		return matchLevels(c, tail, false, dst)
	}
	dst = append(dst, c.Value...)
	if h := c.Child("#"); h != nil {
		dst = append(dst, h.Value...)
	}
	return dst
}

func wildcard(level string) bool { return level == "+" || level == "#" }

// size returns the number of stored subscriptions.
func (t *trie) size() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.count
}
