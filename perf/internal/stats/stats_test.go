package stats

import (
	"math"
	"testing"
)

func TestStampRoundTrip(t *testing.T) {
	b := make([]byte, 64)
	in := Stamp{SentNs: 1_700_000_000_123_456_789, Pub: 99, Seq: 1 << 40}
	PutStamp(b, in)
	out, ok := ReadStamp(b)
	if !ok || out != in {
		t.Fatalf("got %+v %v", out, ok)
	}
	if _, ok := ReadStamp([]byte("hello, this is not a stamped payload")); ok {
		t.Fatal("foreign payload accepted")
	}
	if _, ok := ReadStamp(b[:PayloadHeader-1]); ok {
		t.Fatal("short payload accepted")
	}
}

func TestSeqTracker(t *testing.T) {
	var tr SeqTracker
	for _, s := range []uint64{0, 1, 2, 4, 3, 3, 70, 5} {
		tr.Add(s)
	}
	if tr.Unique() != 7 || tr.Dups() != 1 || tr.Reordered() != 2 {
		t.Fatalf("unique %d dups %d reordered %d", tr.Unique(), tr.Dups(), tr.Reordered())
	}
	if !tr.Has(70) || tr.Has(69) || tr.Has(1000) {
		t.Fatal("Has")
	}
	if got := tr.UniqueBelow(6); got != 6 {
		t.Fatalf("UniqueBelow(6) = %d", got)
	}
	if got := tr.UniqueBelow(64); got != 6 {
		t.Fatalf("UniqueBelow(64) = %d", got)
	}
	if got := tr.UniqueBelow(71); got != 7 {
		t.Fatalf("UniqueBelow(71) = %d", got)
	}
	if got := tr.UniqueBelow(10_000); got != 7 {
		t.Fatalf("UniqueBelow(10000) = %d", got)
	}

	// acked prefix 10: 0..5 arrived (6), 6..9 lost (4); 70 arrived unacked.
	var l Loss
	l.Account(&tr, 10)
	want := Loss{Expected: 10, Lost: 4, Duplicates: 1, Reordered: 2, Unacked: 1}
	if l != want {
		t.Fatalf("loss %+v want %+v", l, want)
	}
	l.Merge(want)
	if l.Expected != 20 || l.Lost != 8 {
		t.Fatalf("merge %+v", l)
	}
}

func TestPopcount(t *testing.T) {
	for _, x := range []uint64{0, 1, 0xff, math.MaxUint64, 0x8000000000000001} {
		n := 0
		for y := x; y != 0; y &= y - 1 {
			n++
		}
		if popcount(x) != n {
			t.Fatalf("popcount(%x) = %d want %d", x, popcount(x), n)
		}
	}
}

func TestHistogramSummary(t *testing.T) {
	h := NewHist()
	for i := 1; i <= 1000; i++ {
		RecordNs(h, int64(i)*1_000_000) // 1..1000 ms
	}
	RecordNs(h, -5) // clock step: counted as the minimum
	p := Summarize(h)
	if p.Count != 1001 {
		t.Fatalf("count %d", p.Count)
	}
	near := func(got, want float64) bool { return math.Abs(got-want) <= want*0.002+0.002 }
	if !near(p.P50, 500) || !near(p.P99, 990) || !near(p.P999, 999) || !near(p.Max, 1000) {
		t.Fatalf("percentiles %+v", p)
	}
	if p.Min != 0.001 {
		t.Fatalf("min %v", p.Min)
	}
	// Round trip through a snapshot, as workers do.
	h2 := NewHist()
	MergeSnapshot(h2, Export(h))
	MergeSnapshot(h2, Export(h))
	if h2.TotalCount() != 2002 || Summarize(h2).P50 != p.P50 {
		t.Fatalf("merged %+v", Summarize(h2))
	}
	if Summarize(NewHist()).Count != 0 {
		t.Fatal("empty")
	}
}

func TestMedian(t *testing.T) {
	m, lo, hi := Median([]float64{5, 1, 3})
	if m != 3 || lo != 1 || hi != 5 {
		t.Fatal(m, lo, hi)
	}
	m, _, _ = Median([]float64{4, 1, 3, 2})
	if m != 2.5 {
		t.Fatal(m)
	}
	if m, _, _ := Median(nil); !math.IsNaN(m) {
		t.Fatal(m)
	}
}

func TestFmtMs(t *testing.T) {
	for in, want := range map[float64]string{0.25: "250 µs", 4.94: "4.94 ms", 346: "346 ms", 1560: "1.56 s"} {
		if got := FmtMs(in); got != want {
			t.Errorf("FmtMs(%v) = %q want %q", in, got, want)
		}
	}
}

func TestPrefix(t *testing.T) {
	var tr SeqTracker
	if tr.Prefix() != 0 {
		t.Fatal("empty")
	}
	for i := uint64(0); i < 130; i++ {
		if i != 100 {
			tr.Add(i)
		}
	}
	if got := tr.Prefix(); got != 100 {
		t.Fatalf("prefix %d", got)
	}
	tr.Add(100)
	if got := tr.Prefix(); got != 130 {
		t.Fatalf("prefix %d", got)
	}
}
