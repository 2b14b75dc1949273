package route

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeKafka is a cluster's topic list; CreateTopic adds to it unless refused.
type fakeKafka struct {
	mu      sync.Mutex
	topics  []string
	refuse  bool
	created []string
}

func (k *fakeKafka) CreateTopic(_ context.Context, name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.refuse {
		return errors.New("not allowed")
	}
	k.topics = append(k.topics, name)
	k.created = append(k.created, name)
	return nil
}

func (k *fakeKafka) ListTopicNames(context.Context) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.topics), nil
}

// fakeHost records what Topics asks the server to follow.
type fakeHost struct {
	mu       sync.Mutex
	followed []Topic
	told     []Topic
}

func (h *fakeHost) Follow(found []Topic) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.followed = append(h.followed, found...)
	return nil
}

func (h *fakeHost) Followed(found []Topic) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.told = append(h.told, found...)
}

func (h *fakeHost) Warn(string, ...any)  {}
func (h *fakeHost) Logger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newTestTopics(t *testing.T, k *fakeKafka, h *fakeHost, creatable bool, rules ...string) *Topics {
	t.Helper()
	tbl, err := NewTable(rules, "mqtt-messages", false)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := NewTopics(tbl, "mqtt-retained", "mqtt-sessions", creatable, k, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.Close)
	return ts
}

// Start creates the fixed topics that are missing and lists the templated ones that exist; Route sends an
// unrouted topic to the messages topic (""), refuses a templated topic that does not exist when topics cannot
// be created, and takes it once discovery has found and followed it.
func TestTopicsStartRouteDiscover(t *testing.T) {
	k := &fakeKafka{topics: []string{"mqtt-messages", "dev-a", "unrelated"}}
	h := &fakeHost{}
	ts := newTestTopics(t, k, h, false, "fixed/#>fixed-topic", "dev/{d}/#>dev-{d}")
	started, err := ts.Start()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(k.created, []string{"fixed-topic"}) {
		t.Fatalf("created %q, want the missing fixed topic", k.created)
	}
	if len(started) != 2 || started[0].Name != "fixed-topic" || started[1].Name != "dev-a" {
		t.Fatalf("started %+v", started)
	}
	ts.Ready(started)
	for _, s := range started {
		if i, ok := ts.Index(s.Name); !ok || i != s.Index || ts.Name(i) != s.Name {
			t.Fatalf("%+v: index %d %v", s, i, ok)
		}
	}
	if res, _, ok := ts.Route("other/x"); !ok || res.Topic != "" {
		t.Fatalf("unrouted topic: %+v %v, want the messages topic", res, ok)
	}
	if res, _, ok := ts.Route("dev/a/t"); !ok || res.Topic != "dev-a" {
		t.Fatalf("dev/a/t: %+v %v", res, ok)
	}
	if _, reason, ok := ts.Route("dev/b/t"); ok || reason != Missing {
		t.Fatalf("dev/b/t before dev-b exists: ok %v reason %d, want Missing", ok, reason)
	}
	if got := ts.ReadyFor("dev/+/t"); !slices.Equal(got, []string{"dev-a"}) {
		t.Fatalf("ReadyFor(dev/+/t) = %q", got)
	}

	k.mu.Lock()
	k.topics = append(k.topics, "dev-b")
	k.mu.Unlock()
	if pending := ts.discover(); pending {
		t.Fatal("discovery pending with nothing created here")
	}
	if len(h.followed) != 1 || h.followed[0].Name != "dev-b" || len(h.told) != 1 {
		t.Fatalf("followed %+v, told %+v", h.followed, h.told)
	}
	if res, _, ok := ts.Route("dev/b/t"); !ok || res.Topic != "dev-b" {
		t.Fatalf("dev/b/t after discovery: %+v %v", res, ok)
	}
}

// A route to one of Ferry's compacted topics is refused when the rules are read (fixed) or when a publish
// builds it (templated).
func TestTopicsOwnTopicsRefused(t *testing.T) {
	tbl, err := NewTable([]string{"r/#>mqtt-retained"}, "mqtt-messages", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewTopics(tbl, "mqtt-retained", "mqtt-sessions", true, &fakeKafka{}, &fakeHost{}); err == nil {
		t.Fatal("a fixed route to the retained topic was accepted")
	}
	ts := newTestTopics(t, &fakeKafka{}, &fakeHost{}, true, "m/{t}/#>mqtt-{t}")
	if _, reason, ok := ts.Route("m/sessions/x"); ok || reason != Illegal {
		t.Fatalf("templated route to the sessions topic: ok %v reason %d, want Illegal", ok, reason)
	}
}

// With creation on, a templated topic's first publish is taken at once and creates the topic; discovery then
// follows it. A creation that fails refuses the topic's publishes until discovery forgets the failure.
func TestTopicsCreateOnFirstUse(t *testing.T) {
	k := &fakeKafka{topics: []string{"mqtt-messages"}}
	h := &fakeHost{}
	ts := newTestTopics(t, k, h, true, "dev/{d}/#>dev-{d}")
	if _, reason, ok := ts.Route("dev/a/t"); !ok {
		t.Fatalf("first publish refused (reason %d)", reason)
	}
	waitFor(t, func() bool { v, ok := ts.state.Load("dev-a"); return ok && v.(uint32) == topicCreated })
	if pending := ts.discover(); pending || len(h.followed) != 1 || h.followed[0].Name != "dev-a" {
		t.Fatalf("after discovery: pending %v, followed %+v", pending, h.followed)
	}

	k.mu.Lock()
	k.refuse = true
	k.mu.Unlock()
	ts.Route("dev/b/t")
	waitFor(t, func() bool { v, ok := ts.state.Load("dev-b"); return ok && v.(uint32) == topicMissing })
	if _, reason, ok := ts.Route("dev/b/t"); ok || reason != Missing {
		t.Fatalf("after a failed creation: ok %v reason %d, want Missing", ok, reason)
	}
	ts.discover()
	if _, found := ts.state.Load("dev-b"); found {
		t.Fatal("discovery kept the failed creation: the next publish would not try again")
	}
}

// waitFor waits for cond, checking every millisecond for at most 10 s (a bound, not a timing assertion).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i == 10_000 {
			t.Fatal("condition not met")
		}
		time.Sleep(time.Millisecond)
	}
}
