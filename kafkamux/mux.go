package kafkamux

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferrymq/ferry/internal/throttle"
)

// Mux owns the whole instance's Kafka traffic: one franz-go client that
// produces, reads the followed topics and runs admin requests, plus the
// embedded cluster when no brokers are configured.
//
// The number of TCP connections is a constant of the configuration: per
// broker at most three, one for produce requests, one for fetches and one
// for metadata, ListOffsets and admin, whatever the number of MQTT clients
// (see connTracker for the two franz-go behaviours that would open a fourth
// and how they are avoided). Admin requests that carry a timeout
// (CreateTopics, DeleteTopics, CreatePartitions…) sent through [Mux.Admin]
// open a fourth connection, reaped after 30s idle.
//
// All methods are safe for concurrent use.
type Mux struct {
	cfg     cfg
	log     *slog.Logger
	cluster *kfake.Cluster  // nil with external brokers
	inproc  *inprocListener // the embedded cluster's listener, for in-process connections (inproc.go); nil with external brokers
	dirLock *dirLock        // the embedded cluster's data dir, held until Close; nil without one
	cleaner *cleaner        // the embedded cluster's retention and compaction; nil with external brokers
	storage *storage        // whether the embedded cluster's data dir is full; nil without one
	addr    string
	cl      *kgo.Client
	cl0     *kgo.Client // QoS 0 records at their own acks level (QoS0Acks); nil: they use cl
	txn     *txnPump    // nil without a transactional id
	adm     *kadm.Client
	conns   *connTracker
	rl      throttle.Limiter // reader and consumer-group warnings: one line per kind per minute

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	followMu  sync.Mutex
	followers atomic.Pointer[map[string]*follower] // copy on write under followMu
	readerWG  sync.WaitGroup
	started   bool

	skipped         atomic.Int64
	txnSilentAborts atomic.Uint64 // commits franz-go turned into aborts without an error (txn.go)
	closeOnce       sync.Once
	stats           kstats // per-topic counters and what Healthy needs (health.go)

	recentMsgs *recent // recent records of the messages topic, for resumes

	seeds        []string                  // bootstrap addresses, for GroupReaders (group.go)
	groupsMu     sync.Mutex                // guards groups
	groups       map[*GroupReader]struct{} // open GroupReaders, closed by Close
	shareReaders map[*ShareReader]struct{} // open ShareReaders (share.go), closed by Close
}

// New connects to Kafka (starting the embedded cluster when no brokers are
// configured), creates missing topics and checks their cleanup policy.
//
// The producer is idempotent with acks=all. New fails within about
// [DialTimeout] when the cluster cannot be reached, with an error naming the
// brokers.
func New(ctx context.Context, opts ...Opt) (*Mux, error) {
	c := defaults()
	for _, o := range opts {
		o.apply(&c)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("invalid Kafka configuration: %w", err)
	}
	m := &Mux{cfg: c, log: c.logger, conns: newConnTracker(), recentMsgs: newRecent(c.recentBytes)}
	m.rl.Window = time.Minute
	m.stats.topics = [roleOther]string{c.topicMessages, c.topicRetained, c.topicSessions}
	empty := map[string]*follower{}
	m.followers.Store(&empty)

	brokers := c.brokers
	m.cfg.embedded = len(brokers) == 0
	if len(brokers) == 0 {
		if c.dataDir != "" {
			lk, err := lockDataDir(c.dataDir) // before kfake reads (and rewrites) a file of it
			if err != nil {
				return nil, fmt.Errorf("cannot start embedded Kafka: %w", err)
			}
			m.dirLock = lk
			txns, err := checkDataDir(c.dataDir) // before kfake drops what it cannot read
			if err != nil {
				lk.release()
				return nil, fmt.Errorf("cannot start embedded Kafka: %w", err)
			}
			completeTransactions(c.dataDir, txns, m.log) // before kfake takes them as aborted
			m.storage = &storage{dir: c.dataDir, log: m.log}
		}
		cluster, inproc, addr, err := startEmbedded(&m.cfg, m.storage)
		if err != nil {
			m.dirLock.release()
			return nil, err
		}
		m.cluster, m.inproc, m.addr = cluster, inproc, addr
		brokers = []string{addr}
		m.log.Info("embedded Kafka started", "addr", addr, "data_dir", c.dataDir)
	} else {
		m.addr = brokers[0]
	}
	ok := false
	defer func() {
		if !ok && m.cluster != nil {
			m.cluster.Close()
			m.dirLock.release()
		}
	}()

	if err := m.setup(ctx, brokers); err != nil {
		return nil, err
	}

	cl, err := kgo.NewClient(m.kgoOpts(brokers, true)...)
	if err != nil {
		return nil, fmt.Errorf("cannot create Kafka client: %w", err)
	}
	m.cl = cl
	m.seeds = brokers
	if c.txnID != "" {
		if err := m.fence(ctx); err != nil {
			cl.Close()
			return nil, err
		}
		m.txn = newTxnPump(m)
	}
	if c.qos0Acks != -1 {
		acks := kgo.LeaderAck()
		if c.qos0Acks == 0 {
			acks = kgo.NoAck()
		}
		// Not watched by the connection tracker, which retires the main client's seed connections.
		o := append(m.kgoOpts(brokers, false), kgo.ClientID(c.clientID+"-qos0"), kgo.RequiredAcks(acks),
			kgo.DisableIdempotentWrite())
		if m.cl0, err = kgo.NewClient(o...); err != nil {
			cl.Close()
			return nil, fmt.Errorf("cannot create the Kafka client of QoS 0 records: %w", err)
		}
	}
	m.adm = kadm.NewClient(cl)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.retireBootstrapSeed(ctx, brokers)
	if m.cluster != nil {
		m.startCleaner()
	}
	ok = true
	return m, nil
}

// retireBootstrapSeed closes the connection the client opened to a seed
// address to discover the cluster, once a discovered broker has answered:
// from then on the tracker parks seed connections (see connTracker).
// Failing here is harmless: the seed connection stays until idle.
func (m *Mux) retireBootstrapSeed(ctx context.Context, brokers []string) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.dialTimeout)
	defer cancel()
	if len(m.cl.DiscoveredBrokers()) == 0 {
		if _, err := m.adm.BrokerMetadata(ctx); err != nil { // bootstraps through a seed
			m.log.Warn("cannot load Kafka metadata", "err", err)
			return
		}
	}
	for _, b := range m.cl.DiscoveredBrokers() {
		if _, err := b.Request(ctx, kmsg.NewPtrApiVersionsRequest()); err == nil {
			break
		}
	}
	if m.conns.lastGoodRead.Load() != 0 {
		if err := m.cl.UpdateSeedBrokers(brokers...); err != nil {
			panic("BUG: seed brokers accepted once are refused: " + err.Error())
		}
	}
}

// setup checks the cluster is reachable and prepares the topics with a
// short-lived client, so the long-lived one never holds the extra
// connection franz-go uses for requests with timeouts (CreateTopics).
func (m *Mux) setup(ctx context.Context, brokers []string) error {
	var authFail saslWatch
	cl, err := kgo.NewClient(append(m.kgoOpts(brokers, false), kgo.WithHooks(&authFail))...)
	if err != nil {
		return fmt.Errorf("cannot create Kafka client: %w", err)
	}
	defer cl.Close()
	// franz-go does not bound a connection's first ApiVersions exchange by
	// the request context (a listener that accepts and stays silent holds
	// Ping for its 10s request overhead), so wait for Ping ourselves.
	pctx, cancel := context.WithTimeout(ctx, m.cfg.dialTimeout)
	defer cancel()
	pinged := make(chan error, 1)
	go func() { pinged <- cl.Ping(pctx) }()
	select {
	case err = <-pinged:
	case <-pctx.Done():
		err = fmt.Errorf("no answer within %v", m.cfg.dialTimeout)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		if s := m.cfg.sasl; s != nil && (authFail.failed.Load() || errors.Is(err, kerr.SaslAuthenticationFailed)) {
			return fmt.Errorf("cannot reach Kafka at %s: SASL %s authentication as user %q failed "+
				"(wrong user or password, or a mechanism the brokers do not enable): %w",
				strings.Join(brokers, ","), s.mechanism, s.user, err)
		}
		return fmt.Errorf("cannot reach Kafka at %s: %w", strings.Join(brokers, ","), err)
	}
	actx, cancel := context.WithTimeout(ctx, m.cfg.dialTimeout+30*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	parts, err := ensureTopics(actx, adm, &m.cfg)
	if err != nil {
		return err
	}
	if m.cluster != nil {
		return applyEmbeddedRetention(actx, adm, &m.cfg, parts)
	}
	return nil
}

func (m *Mux) kgoOpts(brokers []string, main bool) []kgo.Opt {
	c := &m.cfg
	logger := kgoLogger{l: m.log}
	if main && c.txnID != "" {
		logger.silentAborts = &m.txnSilentAborts // txn.go
	}
	o := []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ClientID(c.clientID),
		kgo.WithLogger(logger),
		kgo.DialTimeout(c.dialTimeout),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotence is franz-go's default
		kgo.ProducerLinger(c.linger),
		kgo.MaxBufferedBytes(c.maxBufBytes),
		kgo.MaxBufferedRecords(c.maxBufRecords),
		kgo.RecordDeliveryTimeout(c.deliveryTimeout),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // transaction markers tell FollowFrom a partition is read up to its end
		kgo.FetchMaxWait(c.fetchMaxWait),
		// After a retryable error (leader moved, not enough replicas)
		// franz-go waits for fresh metadata, at most once per min age:
		// its 5s default would add up to 5s to a produce and let a
		// record outlive RecordDeliveryTimeout by as much.
		kgo.MetadataMinAge(500 * time.Millisecond),
		// A followed partition whose offset fell out of range (retention
		// deleted it while we lagged) restarts at its oldest record.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RecordPartitioner(partitioner{sessions: c.topicSessions}),
	}
	if c.batchBytes != 0 {
		o = append(o, kgo.ProducerBatchMaxBytes(c.batchBytes))
	}
	o = append(o, c.securityOpts()...)
	if m.inproc != nil && c.tls == nil {
		o = append(o, kgo.Dialer(m.inproc.dialer(m.addr, c.dialTimeout)))
	}
	switch {
	case c.compression != nil:
		o = append(o, kgo.ProducerBatchCompression(c.compression...))
	case len(c.brokers) == 0:
		o = append(o, kgo.ProducerBatchCompression(kgo.NoCompression()))
	}
	if main {
		o = append(o, kgo.WithHooks(m.conns, &m.stats), kgo.RetryBackoffFn(retryBackoff))
		if c.txnID != "" {
			// The pump aborts a transaction itself after half of this (txn.go).
			o = append(o, kgo.TransactionalID(c.txnID), kgo.TransactionTimeout(c.txnTimeout))
		}
	}
	return append(o, c.extra...)
}

// Addr returns the embedded broker's host:port, or the first configured
// broker.
func (m *Mux) Addr() string { return m.addr }

// Client returns the franz-go client, for tests and admin requests. Do not
// close it, change its consuming or produce to it outside [Mux.Produce]
// without knowing what that does to the connection budget.
func (m *Mux) Client() *kgo.Client { return m.cl }

// Admin returns a kadm client over [Mux.Client].
func (m *Mux) Admin() *kadm.Client { return m.adm }

// Cluster returns the embedded cluster, nil with external brokers. Tests use
// it to inject faults.
func (m *Mux) Cluster() *kfake.Cluster { return m.cluster }

// Topic names of the three roles.
func (m *Mux) MessagesTopic() string { return m.cfg.topicMessages }
func (m *Mux) RetainedTopic() string { return m.cfg.topicRetained }
func (m *Mux) SessionsTopic() string { return m.cfg.topicSessions }

// Produce buffers r for sending and returns at once (franz-go TryProduce): it
// never blocks. done runs on a franz-go goroutine once Kafka acknowledged the
// record (err == nil, r.Partition and r.Offset set) or it failed: after
// retries and at most [RecordDeliveryTimeout], at once with
// kgo.ErrMaxBuffered when the producer buffer is full, or with
// kgo.ErrClientClosed after Close. done is called exactly once, serially
// with other callbacks, and must not block. ctx cancels the record while it
// is buffered; pass context.Background() unless that is wanted.
func (m *Mux) Produce(ctx context.Context, r *kgo.Record, done func(*kgo.Record, error)) {
	if m.txn != nil {
		m.txn.add(txnItem{r: r, done: done}) // ctx: a record in the transaction pump is not cancelled
		return
	}
	m.cl.TryProduce(ctx, r, done)
}

// ProduceQoS0 is Produce for the records of a QoS 0 message: on the client with the QoS 0 acks level when
// QoS0Acks set one (outside transactions: a QoS 0 message is written at most once anyway), else Produce.
func (m *Mux) ProduceQoS0(ctx context.Context, r *kgo.Record, done func(*kgo.Record, error)) {
	if m.cl0 == nil {
		m.Produce(ctx, r, done)
		return
	}
	m.cl0.TryProduce(ctx, r, done)
}

// Flush waits until every buffered record is acknowledged or failed, or ctx
// is done.
func (m *Mux) Flush(ctx context.Context) error {
	if m.txn != nil {
		if err := m.txn.flush(ctx); err != nil {
			return fmt.Errorf("cannot flush Kafka transactions: %w", err)
		}
	}
	if m.cl0 != nil {
		if err := m.cl0.Flush(ctx); err != nil {
			return fmt.Errorf("cannot flush the QoS 0 producer: %w", err)
		}
	}
	if err := m.cl.Flush(ctx); err != nil {
		return fmt.Errorf("cannot flush Kafka producer: %w", err)
	}
	return nil
}

// Connections returns the number of open TCP connections to Kafka brokers.
func (m *Mux) Connections() int { return m.conns.count() }

// ConnectionsByBroker returns the open TCP connections per broker host:port.
func (m *Mux) ConnectionsByBroker() map[string]int { return m.conns.byBroker() }

// Skipped returns how many followed records were skipped because they could
// not be decoded (bad key, bad reserved header).
func (m *Mux) Skipped() int64 { return m.skipped.Load() }

// ErrClosed is returned by Follow after Close.
var ErrClosed = errors.New("kafkamux: closed")

// Close stops the readers (handlers have returned when Close returns),
// flushes buffered records for up to [CloseTimeout] (those still pending
// fail with kgo.ErrClientClosed), closes the client and stops the embedded
// cluster, which persists its state to the data dir. Close is idempotent.
func (m *Mux) Close() {
	m.closeOnce.Do(func() {
		m.followMu.Lock()
		m.cancel()
		m.followMu.Unlock()
		m.readerWG.Wait()
		m.closeGroups()
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.closeTimeout)
		if m.txn != nil {
			m.txn.close(ctx) // commits what is pending
		}
		if m.cl0 != nil {
			if err := m.cl0.Flush(ctx); err != nil {
				m.log.Warn("QoS 0 records not flushed at close", "err", err)
			}
			m.cl0.Close()
		}
		if err := m.cl.Flush(ctx); err != nil {
			m.log.Warn("Kafka producer not flushed at close; failing buffered records", "err", err)
		}
		cancel()
		if m.cleaner != nil {
			<-m.cleaner.done // its pass needs the cluster and the client
		}
		m.cl.Close()
		if m.cluster != nil {
			m.cluster.Close()
			m.dirLock.release() // after the cluster has written its last file
			m.log.Info("embedded Kafka stopped", "data_dir", m.cfg.dataDir)
		}
	})
}

// ProducerLimits returns the producer buffer bounds ([MaxBufferedRecords],
// [MaxBufferedBytes]); offload checks its lane budgets fit in them.
func (m *Mux) ProducerLimits() (records, bytes int) { return m.cfg.maxBufRecords, m.cfg.maxBufBytes }

// Logger returns the Mux's logger.
func (m *Mux) Logger() *slog.Logger { return m.log }
