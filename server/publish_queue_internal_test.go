package server

import "testing"

// An idle connection holds no publish queue, however much it published: a drained queue goes back to the
// loop, and the next connection that publishes at QoS>0 takes it from there.
func TestPubQueueReturnsToLoop(t *testing.T) {
	l := &loop{}
	a, b := &conn{l: l}, &conn{l: l}
	if a.toKafka() != 0 || a.inKafka(1) {
		t.Fatal("a connection that never published has publishes in flight")
	}
	for i := range 3 {
		a.pushPub(&pubReq{id: uint16(i + 1), qos: 2})
	}
	if a.pq == nil || a.toKafka() != 3 || !a.inKafka(2) {
		t.Fatalf("after 3 publishes: queue %v, %d in flight", a.pq, a.toKafka())
	}
	q := a.pq
	a.pq.head = 3 // all three acked and written
	a.dropPubQueue()
	if a.pq != nil || a.toKafka() != 0 {
		t.Fatal("a drained connection still holds its publish queue")
	}
	if len(l.freePQ) != 1 || l.freePQ[0] != q || len(q.reqs) != 0 || q.head != 0 || q.reqs[:cap(q.reqs)][0] != nil {
		t.Fatal("the drained queue did not go back to the loop empty, without references to its publishes")
	}
	b.pushPub(&pubReq{id: 9, qos: 1})
	if b.pq != q || len(l.freePQ) != 0 {
		t.Fatal("the next publishing connection did not reuse the loop's queue")
	}
}

// A queue that grew past pubQueueKeep entries does not keep its array on the loop's free list.
func TestPubQueueLargeArrayDropped(t *testing.T) {
	l := &loop{}
	c := &conn{l: l}
	for range pubQueueKeep + 1 {
		c.pushPub(&pubReq{})
	}
	c.pq.head = int32(len(c.pq.reqs))
	c.dropPubQueue()
	if len(l.freePQ) != 1 || l.freePQ[0].reqs != nil {
		t.Fatal("a large drained queue kept its array")
	}
}
