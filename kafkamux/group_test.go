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
