// Package retained is an instance's index of retained messages: the retained message of each topic, found by
// the filter of a new subscription. The server feeds it from the retained topic and answers SUBSCRIBEs from it
// (server/retained.go: reading the topic, readiness, the subscriptions that wait while it loads).
//
// Index: a trie of topic levels. A filter walks only the branches it can match: a literal level is one
// lookup, '+' visits the children of one node, '#' the subtree below one node; a SUBSCRIBE costs the matching
// part of the index, not all of it. The tree is server/topictree's, shared with the subscription trie: nodes
// keep up to eight children in a slice and switch to a map past that, and a node's level string is a substring
// of the topic of the message that created it, so levels cost no bytes of their own.
//
// Memory per retained message, on amd64, measured by TestRetainedIndexMemory (100,000 topics
// "site/<n>/dev/<m>/state", 16-byte payloads): about 405 bytes in all. 248 are the message itself (the
// 200-byte kafkamux.Message, its topic string, its payload); about 157 are the index: the nodes of the levels
// only this topic has (48 bytes each), its slot in its parent (a 24-byte slice entry, or about 40 bytes in a
// map), and its share of the levels it has in common with other topics. Stored payload and correlation data
// are copied into one allocation of their own (Detach): the decoded record points into a Kafka fetch buffer,
// which must not be pinned for as long as the message stays retained.
//
// Expiry: a retained message past its Message Expiry deadline is not stored (the caller checks Expired), and
// one that expires while stored is skipped by the Match that finds it and then removed [MQTT-3.3.2-5].
//
// Locks: Index.mu (RW) guards the trie: the retained reader writes, loops read (and write to drop expired
// messages). No other lock is taken while it is held.
package retained

import (
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/server/topictree"
)

// Index is the retained messages by topic. The zero Index is empty and ready for use; it is safe for
// concurrent use.
type Index struct {
	mu    sync.RWMutex
	root  node
	count int
}

// node is one topic level of the index: the retained message of the topic that ends there, if any.
type node = topictree.Node[*kafkamux.Message]

// Count returns the number of retained messages in the index, expired ones not yet removed included.
func (r *Index) Count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.count
}

// Set stores m as the retained message of m.Topic, replacing any. Runs on the reader goroutine.
func (r *Index) Set(m *kafkamux.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.root.Put(m.Topic)
	if n.Value == nil {
		r.count++
	}
	n.Value = m
}

// Replace stores m as the retained message of its topic if old still is. Runs on any goroutine.
func (r *Index) Replace(old, m *kafkamux.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.root.Get(m.Topic); n != nil && n.Value == old {
		n.Value = m
	}
}

// Remove clears the retained message of topic, if it is only (when only is not nil), and drops the nodes left
// empty. Runs on the reader goroutine, and on a loop for expired messages.
func (r *Index) Remove(topic string, only *kafkamux.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.root.Remove(topic, func(m **kafkamux.Message) bool {
		if *m == nil || (only != nil && *m != only) {
			return false
		}
		*m = nil
		return true
	}, noMessage) {
		r.count--
	}
}

func noMessage(m **kafkamux.Message) bool { return *m == nil }

// Match appends the retained messages whose topic matches filter (a valid topic filter) and that have not
// expired; expired ones it finds are removed. Runs on a loop, or on the reader goroutine for waiting
// subscriptions. filter is only read during the call.
func (r *Index) Match(filter []byte, dst []*kafkamux.Message) []*kafkamux.Message {
	w := matcher{now: time.Now(), dst: dst}
	// The view of filter is used only during the walk: no level of it is stored.
	f := unsafe.String(unsafe.SliceData(filter), len(filter))
	r.mu.RLock()
	w.walk(&r.root, f, true)
	r.mu.RUnlock()
	for _, m := range w.expired {
		r.Remove(m.Topic, m)
	}
	return w.dst
}

// Expired reports whether m's Message Expiry deadline has passed.
func Expired(m *kafkamux.Message, now time.Time) bool {
	return !m.ExpiresAt.IsZero() && !now.Before(m.ExpiresAt)
}

// Detach copies m's payload and correlation data, which point into a Kafka fetch buffer, into one allocation
// of their own, so the stored message does not pin the buffer.
func Detach(m *kafkamux.Message) {
	np, nc := len(m.Payload), len(m.CorrelationData)
	buf := make([]byte, np+nc)
	copy(buf, m.Payload)
	m.Payload = buf[:np:np]
	if m.CorrelationData != nil {
		copy(buf[np:], m.CorrelationData)
		m.CorrelationData = buf[np:]
	}
}

// matcher walks the trie for one filter. The read lock is held.
type matcher struct {
	now     time.Time
	dst     []*kafkamux.Message
	expired []*kafkamux.Message
}

func (w *matcher) take(m *kafkamux.Message) {
	switch {
	case m == nil:
	case Expired(m, w.now):
		w.expired = append(w.expired, m)
	default:
		w.dst = append(w.dst, m)
	}
}

// walk matches the filter levels in filter against the subtree of n. At the root, a wildcard level does not
// match topics that start with '$' [MQTT-4.7.2-1].
func (w *matcher) walk(n *node, filter string, root bool) {
	level, tail, more := strings.Cut(filter, "/")
	switch level {
	case "#":
		// "sport/#" matches "sport" too [MQTT-4.7.1-2]; the root never holds a message.
		w.take(n.Value)
		n.Each(func(l string, c *node) {
			if !root || !strings.HasPrefix(l, "$") {
				w.all(c)
			}
		})
	case "+":
		n.Each(func(l string, c *node) {
			if !root || !strings.HasPrefix(l, "$") {
				w.next(c, tail, more)
			}
		})
	default:
		if c := n.Child(level); c != nil {
			w.next(c, tail, more)
		}
	}
}

func (w *matcher) next(c *node, tail string, more bool) {
	if more {
		w.walk(c, tail, false)
	} else {
		w.take(c.Value)
	}
}

// all takes every message in the subtree of n.
func (w *matcher) all(n *node) {
	w.take(n.Value)
	n.Each(func(_ string, c *node) { w.all(c) })
}
