package stats

// SeqTracker accounts for the messages one receiver got from one publisher.
// It keeps one bit per sequence number up to the highest seen, so memory is
// (highest seq)/8 bytes: 125 KB for a million messages. Not safe for
// concurrent use; each subscriber connection owns its trackers.
type SeqTracker struct {
	bits      []uint64
	unique    uint64
	dups      uint64
	reordered uint64 // arrived after a higher sequence number had arrived
	next      uint64 // highest seq seen + 1
}

// Add records the arrival of seq.
func (t *SeqTracker) Add(seq uint64) {
	w := seq >> 6
	for uint64(len(t.bits)) <= w {
		if cap(t.bits) > len(t.bits) {
			t.bits = t.bits[:len(t.bits)+1]
		} else {
			t.bits = append(t.bits, 0)
		}
	}
	m := uint64(1) << (seq & 63)
	if t.bits[w]&m != 0 {
		t.dups++
		return
	}
	t.bits[w] |= m
	t.unique++
	if seq+1 < t.next {
		t.reordered++
	} else {
		t.next = seq + 1
	}
}

// Has reports whether seq has arrived.
func (t *SeqTracker) Has(seq uint64) bool {
	w := seq >> 6
	return w < uint64(len(t.bits)) && t.bits[w]&(1<<(seq&63)) != 0
}

// UniqueBelow counts distinct sequence numbers < n that arrived.
func (t *SeqTracker) UniqueBelow(n uint64) uint64 {
	var c uint64
	full := n >> 6
	for i := uint64(0); i < full && i < uint64(len(t.bits)); i++ {
		c += uint64(popcount(t.bits[i]))
	}
	if rem := n & 63; rem != 0 && full < uint64(len(t.bits)) {
		c += uint64(popcount(t.bits[full] & (1<<rem - 1)))
	}
	return c
}

// Unique, Dups and Reordered report the counters.
func (t *SeqTracker) Unique() uint64    { return t.unique }
func (t *SeqTracker) Dups() uint64      { return t.dups }
func (t *SeqTracker) Reordered() uint64 { return t.reordered }

func popcount(x uint64) int {
	// math/bits would do; kept local so the hot loop inlines.
	x -= (x >> 1) & 0x5555555555555555
	x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0f
	return int((x * 0x0101010101010101) >> 56)
}

// Loss is the accounting of one run over all (receiver, publisher) pairs.
type Loss struct {
	// Expected: messages the publishers had acknowledged (QoS >= 1) before
	// they stopped, times the receivers that subscribed to them.
	Expected uint64 `json:"expected"`
	// Lost: of those, how many never arrived.
	Lost       uint64 `json:"lost"`
	Duplicates uint64 `json:"duplicates"`
	Reordered  uint64 `json:"reordered"`
	// Unacked: messages that arrived although their publisher never saw the
	// acknowledgement (in flight at stop); they are neither loss nor duplicate.
	Unacked uint64 `json:"arrived_unacked"`
}

// Account adds one receiver's view of one publisher, given that publisher's
// acknowledged prefix (all seq < acked were acknowledged).
func (l *Loss) Account(t *SeqTracker, acked uint64) {
	got := t.UniqueBelow(acked)
	l.Expected += acked
	l.Lost += acked - got
	l.Duplicates += t.dups
	l.Reordered += t.reordered
	l.Unacked += t.unique - got
}

// Merge adds o into l.
func (l *Loss) Merge(o Loss) {
	l.Expected += o.Expected
	l.Lost += o.Lost
	l.Duplicates += o.Duplicates
	l.Reordered += o.Reordered
	l.Unacked += o.Unacked
}

// Prefix returns the length of the longest run 0, 1, … n-1 that all arrived.
func (t *SeqTracker) Prefix() uint64 {
	for i, w := range t.bits {
		if w != ^uint64(0) {
			n := uint64(i) * 64
			for w&1 == 1 {
				w >>= 1
				n++
			}
			return n
		}
	}
	return uint64(len(t.bits)) * 64
}
