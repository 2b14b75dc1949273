package payload

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// deliverNow asks DeliverJSON once; a *Pending answer is returned as is (the caller did not wait).
func deliverNow(s *Set, topic string, v []byte) ([]byte, *Pending, error) {
	js, err := s.DeliverJSON(topic, v)
	var p *Pending
	if errors.As(err, &p) {
		return nil, p, nil
	}
	return js, nil, err
}

// An unknown schema id is fetched off the caller's goroutine: DeliverJSON answers Pending at once, and the
// record decodes once Done closes. An id the registry does not have is given up at its first answer, and
// its records are then refused at once, without a new fetch, for a while. An id met while the registry is
// down is given up at the hold bound.
func TestDeliverUnknownID(t *testing.T) {
	reg := srfake.New()
	defer reg.Close()
	reg.SeedSchema("t-value", 1, 11, sr.Schema{Schema: avroText, Type: sr.TypeAvro})
	reg.SeedSchema("x-value", 1, 13, sr.Schema{Schema: avroText, Type: sr.TypeAvro})
	reg.SeedSchema("y-value", 1, 14, sr.Schema{Schema: avroText, Type: sr.TypeAvro})
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	s := mustNew(t, []string{"t/#=avro:registry:t-value;deliver=json"}, Registry(cl), FetchTimeout(time.Second), Hold(300*time.Millisecond))
	s.Start()
	defer s.Close()
	waitFor(t, func() bool { return s.rules[0].cur.Load() != nil })
	rec, _, err := s.Ingest(0, nil, []byte(`{"device":"d","temp":1}`))
	if err != nil {
		t.Fatal(err)
	}
	withID := func(id byte) []byte { return append([]byte{0, 0, 0, 0, id}, rec[5:]...) }

	_, p, err := deliverNow(s, "t/x", withID(13))
	if p == nil || p.ID != 13 {
		t.Fatalf("id 13: want Pending, got %v", err)
	}
	<-p.Done
	if js, p, err := deliverNow(s, "t/x", withID(13)); p != nil || err != nil || string(js) != `{"device":"d","temp":1}` {
		t.Fatalf("id 13 fetched: %s %v %v", js, p, err)
	}

	_, p, _ = deliverNow(s, "t/x", withID(99))
	if p == nil {
		t.Fatal("id 99: want Pending")
	}
	<-p.Done
	for range 2 { // given up: refused at once, the second time without asking the registry
		if _, p, err := deliverNow(s, "t/x", withID(99)); p != nil || err == nil || !strings.Contains(err.Error(), "99") {
			t.Fatalf("id 99 given up: %v %v", p, err)
		}
	}

	reg.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return true
	})
	_, p, _ = deliverNow(s, "t/x", withID(14))
	if p == nil {
		t.Fatal("id 14: want Pending")
	}
	<-p.Done // the hold bound
	if _, p, err := deliverNow(s, "t/x", withID(14)); p != nil || err == nil {
		t.Fatalf("id 14 past the hold: %v %v", p, err)
	}
	st, _ := s.Stats()
	if st[0].DeliveredJSON != 1 || st[0].DeliverErrors != 3 {
		t.Fatalf("stats %+v", st[0])
	}
}
