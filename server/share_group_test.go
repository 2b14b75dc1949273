package server_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/server"
)

// Shared subscriptions served by Kafka share groups (server/share_group.go), on kfake's share groups.

var shareGroupMode = server.SharedSubscriptionMode(server.ShareModeShareGroup)

// One instance, three members, 3,000 QoS 1 messages: each delivered exactly once in total.
func TestShareGroupSingleInstance(t *testing.T) {
	f := startFerry(t, shareGroupMode)
	const n, members = 3000, 3
	ms := make([]*v5, members)
	for i := range ms {
		ms[i] = shareMember(t, f.addr, fmt.Sprintf("worker-%d", i), 1)
	}
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "boss", CleanStart: true})
	tl := newTally(members)
	tl.srvs = []*server.Server{f.srv}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go tl.collect(i, m, stop, &wg)
	}
	publishAll(t, pub, spreadTopics(3), n, 8, 1)
	tl.waitUnique(t, n, 60*time.Second)
	close(stop)
	wg.Wait()
	if d := tl.duplicates(); len(d) > 0 {
		t.Errorf("%d messages delivered more than once, e.g. %v", len(d), d[:min(len(d), 5)])
	}
	if tl.total != n {
		t.Errorf("%d deliveries for %d messages", tl.total, n)
	}
	st := f.srv.ShareStats()
	if st.Mode != server.ShareModeShareGroup || st.Groups != 1 || st.Members != members {
		t.Errorf("ShareStats %+v, want share-group mode, 1 group of %d members", st, members)
	}
	t.Logf("messages per member %v; %+v", tl.counts(), st)
}
