package server

import (
	"fmt"
	"testing"
)

// BenchmarkTrieMatch matches a topic against 10,000 sessions' subscriptions: exact filters on wide levels
// (the slice→map switch), '+' and '#' filters, as a fleet subscribes.
func BenchmarkTrieMatch(b *testing.B) {
	tr := newTrie()
	for i := range 10000 {
		s := &session{id: fmt.Sprint(i)}
		tr.add(fmt.Sprintf("site/%d/dev/%d/state", i%100, i), s, subOpts{qos: 1})
		if i%10 == 0 {
			tr.add(fmt.Sprintf("site/%d/+/+/state", i%100), s, subOpts{qos: 1})
		}
		if i%100 == 0 {
			tr.add(fmt.Sprintf("site/%d/#", i%100), s, subOpts{qos: 1})
		}
	}
	topics := make([]string, 10000)
	for i := range topics {
		topics[i] = fmt.Sprintf("site/%d/dev/%d/state", i%100, i)
	}
	dst := make([]subEntry, 0, 64)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		dst = tr.match(topics[i%len(topics)], dst[:0])
	}
}
