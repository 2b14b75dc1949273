package kafkamux

import (
	"slices"
	"testing"
)

// apportion splits partitions in proportion to the members' weights (an instance's number of local members
// of a share group).
func TestApportion(t *testing.T) {
	cases := []struct {
		n       int
		weights []int
		want    []int
	}{
		{3, []int{2, 1}, []int{2, 1}},
		{6, []int{2, 1}, []int{4, 2}},
		{6, []int{1, 1, 1}, []int{2, 2, 2}},
		{3, []int{1, 1}, []int{2, 1}},
		{2, []int{1, 1, 1}, []int{1, 1, 0}},
		{7, []int{5, 1, 1}, []int{5, 1, 1}},
		{1, []int{1}, []int{1}},
		{0, []int{3, 1}, []int{0, 0}},
	}
	for _, c := range cases {
		got := apportion(c.n, c.weights)
		if !slices.Equal(got, c.want) {
			t.Errorf("apportion(%d, %v) = %v, want %v", c.n, c.weights, got, c.want)
		}
		sum := 0
		for _, q := range got {
			sum += q
		}
		if sum != c.n {
			t.Errorf("apportion(%d, %v) hands out %d", c.n, c.weights, sum)
		}
	}
}

// splitTopics splits each topic between the members that read it, and spreads the remainders of several topics
// so that no member is favoured over all of them; with one topic it is apportion.
func TestSplitTopics(t *testing.T) {
	all := map[string]bool{"a": true, "b": true, "c": true}
	cases := []struct {
		counts  map[string]int32
		weights []int
		reads   []map[string]bool
		want    map[string][]int
	}{
		{ // one topic: as apportion
			map[string]int32{"a": 3}, []int{1, 1}, []map[string]bool{all, all},
			map[string][]int{"a": {2, 1}},
		},
		{ // ties alternate between topics: 3+3 partitions, equal weights, 3 each
			map[string]int32{"a": 3, "b": 3}, []int{1, 1}, []map[string]bool{all, all},
			map[string][]int{"a": {2, 1}, "b": {1, 2}},
		},
		{ // three topics of 3, equal weights: 9 partitions, 5 and 4
			map[string]int32{"a": 3, "b": 3, "c": 3}, []int{1, 1}, []map[string]bool{all, all},
			map[string][]int{"a": {2, 1}, "b": {1, 2}, "c": {2, 1}},
		},
		{ // weights 2:1 split every topic of 3 exactly
			map[string]int32{"a": 3, "b": 3}, []int{2, 1}, []map[string]bool{all, all},
			map[string][]int{"a": {2, 1}, "b": {2, 1}},
		},
		{ // a member that does not read a topic gets none of it
			map[string]int32{"a": 3, "b": 3}, []int{1, 1}, []map[string]bool{all, {"a": true}},
			map[string][]int{"a": {2, 1}, "b": {3, 0}},
		},
		{ // a topic nobody reads is left alone
			map[string]int32{"a": 2}, []int{1}, []map[string]bool{{"b": true}},
			map[string][]int{"a": {0}},
		},
	}
	for i, c := range cases {
		names := make([]string, 0, len(c.counts))
		for n := range c.counts {
			names = append(names, n)
		}
		got := splitTopics(names, c.counts, c.weights, c.reads)
		for topic, want := range c.want {
			if !slices.Equal(got[topic], want) {
				t.Errorf("case %d topic %s: %v, want %v", i, topic, got[topic], want)
			}
		}
	}
}
