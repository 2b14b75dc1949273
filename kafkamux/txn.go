package kafkamux

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// With a transactional id (option Transactions), every record the Mux produces is written inside a Kafka
// transaction, on the same client and connections as without one. Records handed over together
// ([Mux.ProduceTogether]: an MQTT message with its retained copy and the session's QoS 2 packet-id record)
// commit or abort together, so a crash can never leave one without the other: this is how a QoS 2 message is
// stored exactly once. The readers use read_committed, so no reader ever sees a record of an aborted
// transaction.
//
// One transaction is open at a time. The pump takes every record handed over since the last transaction
// began, produces them, flushes, and commits; records handed over meanwhile wait for the next one. Under load
// a transaction therefore carries everything that arrived during the previous commit: the cost of a commit
// (an AddPartitionsToTxn and an EndTxn round trip) is shared by every client of the instance. A record's done
// runs after its transaction committed (err nil) or failed for good.
//
// A transaction that aborts — a record Kafka refused, an EndTxn error, or records not acknowledged within half
// the transaction timeout (Kafka unreachable) — is retried: the records that did not fail on their own go into
// the next transaction, in their order, until they are older than RecordDeliveryTimeout; then they fail, as
// they would without transactions.
//
// franz-go v1.22.2 can commit nothing while reporting success. EndTransaction(TryCommit) looks for the
// partitions a produce marked as added to the transaction in the producer's topic metadata; a topic this
// client produces to for the first time gets its partitions there only after its first records were handed
// to them (kgo storePartitionsUpdate stores them last, deferred). Scheduled out in between — under load —
// the records are produced and acknowledged, EndTransaction finds no partition marked, decides no produce
// succeeded, sends EndTxn with abort, and returns nil: the records are aborted, every read_committed reader
// skips them, and their QoS 1 PUBACKs were already sent. The pump therefore commits only once every
// partition of the transaction is in the producer's metadata (producerSees), and treats the commit as failed
// when franz-go logged that it aborted instead (kgoSilentAbort, log.go): its records go into the next
// transaction.
//
// An open transaction holds back every read_committed reader of the partitions it wrote to, on every instance.
// If an instance dies with one open, Kafka aborts it after the transaction timeout (TransactionTimeout, 10 s by
// default: the bound on how long a dead instance can stall deliveries) — or at once when the instance restarts,
// since its transactional id must be unique per instance and stable across restarts: the restarted instance
// fences its previous incarnation.

type txnItem struct {
	r     *kgo.Record
	done  func(*kgo.Record, error)
	err   error     // the record's own produce error in the current attempt
	first time.Time // when the record was first put in a transaction
}

type txnPump struct {
	m *Mux

	mu      sync.Mutex
	pending []txnItem
	closing bool
	wake    chan struct{} // capacity 1: something is pending
	stopped chan struct{} // closed when the pump has returned

	// open is held from BeginTransaction until the transaction has ended. The embedded Kafka's cleaner takes it
	// to compact (cleaner.go): kfake compacts records of an open transaction like committed ones, so a
	// committed value superseded by the open transaction's would be gone if that transaction then aborted.
	open sync.Mutex

	// pump-owned
	batch []txnItem
	txns  atomic.Uint64 // transactions committed, for tests and metrics
	busy  atomic.Bool   // a transaction is being written or ended
}

// flush waits until every record handed over so far is committed or failed, or ctx ends.
func (p *txnPump) flush(ctx context.Context) error {
	for p.buffered() > 0 || p.busy.Load() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

func newTxnPump(m *Mux) *txnPump {
	p := &txnPump{m: m, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go p.run()
	return p
}

// add queues records that must commit together. It never blocks.
func (p *txnPump) add(items ...txnItem) {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		for _, it := range items {
			if it.done != nil {
				it.done(it.r, kgo.ErrClientClosed)
			}
		}
		return
	}
	p.pending = append(p.pending, items...)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// buffered counts the records waiting for a transaction.
func (p *txnPump) buffered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// close lets the pump commit what is pending, waiting at most until ctx ends, then stops it.
func (p *txnPump) close(ctx context.Context) {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	select {
	case <-p.stopped:
	case <-ctx.Done():
	}
}

func (p *txnPump) run() {
	defer close(p.stopped)
	for {
		<-p.wake
		for {
			p.mu.Lock()
			closing := p.closing
			n := len(p.pending)
			if n == 0 {
				p.mu.Unlock()
				if closing {
					return
				}
				break
			}
			if max := p.m.cfg.maxBufRecords; n > max {
				n = max // the producer buffers no more than this: the rest waits for the next transaction
			}
			p.busy.Store(true) // under mu with the swap: flush never sees neither pending nor busy
			p.batch = append(p.batch[:0], p.pending[:n]...)
			rest := copy(p.pending, p.pending[n:])
			clear(p.pending[rest:])
			p.pending = p.pending[:rest]
			p.mu.Unlock()
			p.transact()
			p.busy.Store(false)
		}
	}
}

// transact writes p.batch in one transaction and completes its records, or queues them again.
func (p *txnPump) transact() {
	cl, m := p.m.cl, p.m
	ctx := context.Background()
	batch := p.batch
	now := time.Now()
	for i := range batch {
		batch[i].err = nil
		if batch[i].first.IsZero() {
			batch[i].first = now
		}
	}
	p.open.Lock()
	committed := false
	err := cl.BeginTransaction()
	if err == nil {
		var wg sync.WaitGroup
		wg.Add(len(batch))
		for i := range batch {
			it := &batch[i]
			cl.TryProduce(ctx, it.r, func(_ *kgo.Record, err error) {
				it.err = err
				wg.Done()
			})
		}
		p.wait(&wg) // every record acked or failed: the transaction holds exactly the acked ones
		commit := kgo.TryCommit
		for i := range batch {
			if batch[i].err != nil {
				commit = kgo.TryAbort
				err = batch[i].err
				break
			}
		}
		if commit == kgo.TryCommit {
			p.producerSees(batch)
		}
		if endErr := p.end(ctx, commit); endErr != nil {
			err = endErr
		} else {
			committed = commit == kgo.TryCommit
		}
	}
	p.open.Unlock()
	if committed {
		p.txns.Add(1)
		for i := range batch {
			if it := &batch[i]; it.done != nil {
				it.done(it.r, nil)
			}
		}
		clear(p.batch)
		return
	}
	// Nothing of the batch is committed. Records that failed on their own, or too often, fail; the others go
	// first into the next transaction.
	m.log.Warn("Kafka transaction aborted; retrying its records", "records", len(batch), "err", err)
	var retry []txnItem
	for i := range batch {
		it := batch[i]
		switch {
		case it.err != nil && !retriable(it.err), time.Since(it.first) > m.cfg.deliveryTimeout, errors.Is(err, kgo.ErrClientClosed):
			e := it.err
			if e == nil || retriable(e) {
				e = fmt.Errorf("not stored in a Kafka transaction within %v: %w", m.cfg.deliveryTimeout, err)
			}
			if it.done != nil {
				it.done(it.r, e)
			}
		default:
			retry = append(retry, it)
		}
	}
	clear(p.batch)
	if len(retry) > 0 {
		p.mu.Lock()
		p.pending = append(retry, p.pending...)
		p.mu.Unlock()
		time.Sleep(50 * time.Millisecond) // a broker that just refused a transaction gets a moment
	}
}

// wait waits for every record of the transaction to be acked or failed. Records still unacknowledged after
// half the transaction timeout are failed (kgo.AbortBufferedRecords), so the transaction is aborted by this
// instance before Kafka would abort it.
func (p *txnPump) wait(wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(p.m.cfg.txnTimeout / 2)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	p.m.log.Warn("Kafka did not acknowledge a transaction's records in time; aborting it", "after", p.m.cfg.txnTimeout/2)
	ctx, cancel := context.WithTimeout(context.Background(), p.m.cfg.txnTimeout/2)
	defer cancel()
	if err := p.m.cl.AbortBufferedRecords(ctx); err != nil {
		p.m.log.Warn("cannot abort buffered Kafka records", "err", err)
	}
	<-done
}

// end ends the open transaction. A commit whose outcome is unknown, or that Kafka refused as abortable, is
// aborted, as franz-go documents; the abort fences whatever may still be open broker-side.
func (p *txnPump) end(ctx context.Context, commit kgo.TransactionEndTry) error {
	cl := p.m.cl
	if commit == kgo.TryAbort {
		_ = cl.AbortBufferedRecords(ctx)
	}
	silent := p.m.txnSilentAborts.Load()
	err := cl.EndTransaction(ctx, commit)
	if err == nil {
		if commit == kgo.TryAbort {
			return errors.New("transaction aborted")
		}
		if p.m.txnSilentAborts.Load() != silent {
			return errSilentAbort
		}
		return nil
	}
	if commit == kgo.TryCommit {
		if aerr := cl.EndTransaction(ctx, kgo.TryAbort); aerr != nil {
			p.m.log.Error("cannot abort a failed Kafka transaction", "err", aerr)
		}
	}
	return err
}

// errSilentAbort: franz-go aborted a transaction it was asked to commit, and said nothing (see above).
var errSilentAbort = errors.New("the Kafka client aborted the transaction instead of committing it")

// producerSees waits until the producer's topic metadata holds every partition a record of the batch was
// produced to, so that EndTransaction finds them (see above). The wait ends as soon as franz-go's metadata
// goroutine is scheduled again: at most a few milliseconds even under load; it gives up after 2s,
// leaving it to the kgoSilentAbort check. Runs on the pump.
func (p *txnPump) producerSees(batch []txnItem) {
	var deadline time.Time
	for i := 0; i < len(batch); {
		r := batch[i].r
		if i > 0 && r.Topic == batch[i-1].r.Topic && r.Partition == batch[i-1].r.Partition {
			i++
			continue
		}
		if leader, _, _ := p.m.cl.PartitionLeader(r.Topic, r.Partition); leader >= 0 {
			i++
			continue
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(2 * time.Second)
		} else if time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// retriable reports whether a record that failed in an aborted transaction may be written again in the next.
func retriable(err error) bool {
	switch {
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge),
		errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.TopicAuthorizationFailed),
		errors.Is(err, kgo.ErrRecordTimeout), errors.Is(err, kgo.ErrClientClosed), errors.Is(err, kgo.ErrMaxBuffered):
		return false
	}
	return true
}

// fence claims the transactional id before anything is read: Kafka bumps the id's epoch and aborts the
// transaction a previous incarnation of this instance left open (killed while committing), which would
// otherwise hold back every read_committed reader — this instance's own sessions loader included — until the
// transaction timeout; an embedded Kafka restarted from its data dir may never time it out at all. franz-go
// initialises its producer id only at the first produce, which comes after the sessions are loaded.
func (m *Mux) fence(ctx context.Context) error {
	id := m.cfg.txnID
	for {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = &id
		req.TransactionTimeoutMillis = int32(m.cfg.txnTimeout / time.Millisecond)
		req.ProducerID, req.ProducerEpoch = -1, -1
		resp, err := req.RequestWith(ctx, m.cl)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		if err == nil {
			return nil
		}
		if !kerr.IsRetriable(err) && !errors.Is(err, kerr.ConcurrentTransactions) {
			return fmt.Errorf("cannot claim Kafka transactional id %q: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot claim Kafka transactional id %q: %w (last: %v)", id, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ProduceTogether hands records over that Kafka must store together: with transactions, they commit or
// abort in one transaction; without, they are produced one after the other (each is still idempotent). done
// runs once per record, like [Mux.Produce]'s. It never blocks.
func (m *Mux) ProduceTogether(rs []*kgo.Record, done func(*kgo.Record, error)) {
	if m.txn == nil {
		for _, r := range rs {
			m.cl.TryProduce(context.Background(), r, done)
		}
		return
	}
	var items [4]txnItem
	its := items[:0]
	for _, r := range rs {
		its = append(its, txnItem{r: r, done: done})
	}
	m.txn.add(its...)
}

// Transactional reports whether the Mux writes in transactions.
func (m *Mux) Transactional() bool { return m.txn != nil }

// Transactions returns how many Kafka transactions the Mux committed (0 without a transactional id).
func (m *Mux) Transactions() uint64 {
	if m.txn == nil {
		return 0
	}
	return m.txn.txns.Load()
}
