package load

import "testing"

func TestCountersAddSub(t *testing.T) {
	a := Counters{ConnOK: 3, Published: 10, Delivered: 7, Disconnected: 1}
	b := Counters{ConnOK: 1, Published: 4, Acked: 2}
	s := a.Add(b)
	if s.ConnOK != 4 || s.Published != 14 || s.Acked != 2 || s.Delivered != 7 || s.Disconnected != 1 {
		t.Fatalf("add %+v", s)
	}
	if d := s.Sub(b); d != a {
		t.Fatalf("sub %+v", d)
	}
}

func TestPidMapping(t *testing.T) {
	if pid(0) != 1 || pid(65534) != 65535 || pid(65535) != 1 {
		t.Fatal("packet ids must stay in 1..65535")
	}
}
