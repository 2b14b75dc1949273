package server

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/ferrymq/ferry/mqttcodec"
)

// The trie agrees with mqttcodec.Match on random filters and topics, through the slice→map switch of wide
// nodes and removals that prune them.
func TestTrieMatchesMatcher(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	levels := []string{"a", "b", "c", "$sys", "d", "e", "f", "g", "h", "i", "j", "k"}
	word := func() string { return levels[rng.Intn(len(levels))] }
	tr := newTrie()
	sessions := make([]*session, 40)
	filters := map[*session][]string{}
	for i := range sessions {
		sessions[i] = &session{id: fmt.Sprint(i)}
		for j := 0; j < 5; j++ {
			f := word()
			for k := rng.Intn(3); k > 0; k-- {
				switch rng.Intn(4) {
				case 0:
					f += "/+"
				default:
					f += "/" + word()
				}
			}
			if rng.Intn(4) == 0 {
				f += "/#"
			}
			if tr.add(f, sessions[i], subOpts{qos: 1}) {
				continue // the same filter twice replaces the subscription
			}
			filters[sessions[i]] = append(filters[sessions[i]], f)
		}
	}
	check := func() {
		for n := 0; n < 2000; n++ {
			topic := word()
			for k := rng.Intn(4); k > 0; k-- {
				topic += "/" + word()
			}
			got := map[*session]bool{}
			for _, e := range tr.match(topic, nil) {
				got[e.s] = true
			}
			for s, fs := range filters {
				want := false
				for _, f := range fs {
					want = want || mqttcodec.Match([]byte(f), []byte(topic))
				}
				if got[s] != want {
					t.Fatalf("topic %q, session %s (filters %v): trie says %v, matcher %v", topic, s.id, fs, got[s], want)
				}
			}
		}
	}
	check()
	for _, s := range sessions[:30] {
		for _, f := range filters[s] {
			tr.remove(f, s)
		}
		delete(filters, s)
	}
	check()
	left := 0
	for _, fs := range filters {
		left += len(fs)
	}
	if n := tr.size(); n != left {
		t.Fatalf("size %d after removals, want %d", n, left)
	}
}
