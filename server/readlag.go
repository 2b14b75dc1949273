package server

import (
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Read lag: how late the shared reader receives records, and what the instance does about it.
//
// Every record an instance takes in goes into Kafka and comes back through the shared reader before it reaches
// a subscriber. A record's wait, from its timestamp (for Ferry's own records, when the loop handed it to the
// producer) to the reader receiving it, spans the queues of that round trip: records in flight to Kafka, the
// broker, and the log ahead of the reader. Ingest and read-back share the instance's CPU, and the loops that
// take publishes in run whenever their clients send, while the broker and the reader get what is left: at the
// instance's limit, QoS 0 publishers (which nothing holds back: no window, no acknowledgement) fill those
// queues, and every delivery waits behind them. Their count budgets (in-flight records per loop, the session
// queue) are sized for bursts, so at full rate they are tens of milliseconds deep.
//
// So the round trip is also bounded by time, the way an active queue manager (PIE, CoDel) keeps a router's
// queue short: each loop drops a share of its QoS 0 publishes at ingest, counted as
// ferry_dropped_total{reason="read_lag"}, and moves that share every shedEvery from the reader's lag (below):
//
//   - above --read-lag-limit the share grows in proportion to how far above (the integral: it settles where the
//     lag stays near the limit, whatever share of the publishes that takes), and with how fast the lag grew
//     since the last step (the proportional part: a lag that climbs is met before it is high);
//   - below the limit it falls the same way, down to nothing.
//
// The lag is the shortest wait, from a record's timestamp to the reader receiving it, among the records the
// reader received in a window of readLagWindow, as CoDel judges a queue by its shortest sojourn over an
// interval: a burst or a pause makes some records late, a standing queue makes all of them late. At the
// instance's limit the reader's fetches grow with the backlog (it takes time to hand a fetch's records on, and
// Kafka keeps appending meanwhile), so most records wait about as long as the reader took for the fetch before
// theirs; that is the queue the shedding keeps short. A window counts only if at least one of its records had
// readLagMinRecords records or more behind it in its partition: otherwise the reader is at the end of what it
// reads, and however late a few records came (a scheduler hiccup, a garbage collection at an ordinary rate) the
// instance is not taking in more than it reads back. A lag the reader has not renewed for readLagStale counts
// as none, so a share that dropped every QoS 0 publish cannot outlive the records that set it.
//
// Turning shedding fully on past a limit and off below half of it (what Ferry did before) made the lag swing:
// the loops shed everything until the reader caught up, then let everything in, and the reader saw each change
// only a lag later. A share that moves in small steps keeps the admitted rate near what the reader reads.
//
// QoS 1 and 2 publishes are never dropped; each client's window already holds them back. Dropping late
// deliveries at the reader instead would not bound the queues: the reader still has to fetch every record, and
// while ingest outruns it the wait only grows, until every QoS 0 delivery is late.
//
// The trade-off: the reader follows every partition once any client subscribes, so an instance at its limit
// drops QoS 0 publishes whatever their topics, to keep its deliveries on time. Where QoS 0 is taken in mostly for
// Kafka consumers, --read-lag-limit 0 lets it all reach Kafka however late the read-back (the default favours
// latency). Only records Ferry wrote count (they carry the publisher's client id): a Kafka application may
// stamp its records with any time.
const readLagMinRecords = 256

// The shedding controller's constants: how often a loop moves its share, and how far per step.
const (
	shedEvery = 2 * time.Millisecond
	// shedIntegral is the share added per millisecond while the lag is one limit above the limit (so 2 % a
	// millisecond at twice the limit, −1 % a millisecond with no lag at all).
	shedIntegral = 0.01
	// shedProportional is the share added when the lag grew by one limit since the last step.
	shedProportional = 0.5
	// shedMaxStep bounds one step either way, so one odd reading cannot swing the share from one end to the
	// other.
	shedMaxStep = 0.25
)

const (
	readLagWindow = 10 * time.Millisecond
	readLagStale  = 100 * time.Millisecond
	// readLagIdle is how long the reader (or a loop, for its delivery lag) may go without noting a record before
	// holding QoS 0 publishers counts its lag as none (readLag.current).
	readLagIdle = 2 * readLagWindow
)

// wallEpoch is monoEpoch as Unix nanoseconds: a Unix time minus it is the monoNow of that instant.
var wallEpoch = monoEpoch.UnixNano()

// readLag is the instance's view of the shared reader's lag. The reader alone writes it (note); the loops read it
// (age) when they move their shedding share.
type readLag struct {
	limit int64        // --read-lag-limit in nanoseconds; 0 = off
	lag   atomic.Int64 // the last window's lag, ns; 0 when none of its records had a backlog behind it
	at    atomic.Int64 // when the reader stored lag, on monoNow's clock
	held  atomic.Int64 // tests only (HoldReadLag): a lag in nanoseconds reported instead of the reader's; 0 = none
	seen  atomic.Int64 // monoNow of the latest reading a record was noted at (once per poll, or per drain)

	// reader-owned: the window being measured
	winEnd   int64 // Unix ns at which it closes; 0 before the first record
	winMin   int64 // the shortest wait in it so far
	backlog  bool  // a record in it had readLagMinRecords or more behind it
	seenWall int64 // the reading seen holds, as Unix ns
}

// note counts one record the reader received at fetched (Unix nanoseconds, one reading per poll), after it
// waited waited since its timestamp, with after records behind it in its partition. Runs on the shared reader's
// goroutine.
func (r *readLag) note(waited time.Duration, fetched, after int64) {
	if r.limit == 0 {
		return
	}
	if fetched != r.seenWall {
		r.seenWall = fetched
		r.seen.Store(fetched - wallEpoch)
	}
	if fetched >= r.winEnd {
		if r.winEnd != 0 {
			lag := int64(0)
			if r.backlog {
				lag = max(r.winMin, 0)
			}
			r.lag.Store(lag)
			r.at.Store(fetched - wallEpoch)
		}
		r.winEnd, r.winMin, r.backlog = fetched+int64(readLagWindow), math.MaxInt64, false
	}
	r.winMin = min(r.winMin, int64(waited))
	r.backlog = r.backlog || after >= readLagMinRecords
}

// age is the lag as the loops see it at now (monoNow): the last window's, unless the reader stored it longer
// than readLagStale ago. Safe for concurrent use.
func (r *readLag) age(now int64) int64 {
	if d := r.held.Load(); d != 0 {
		return max(d, 0)
	}
	if now-r.at.Load() > int64(readLagStale) {
		return 0
	}
	return r.lag.Load()
}

// current is the lag as holding QoS 0 publishers sees it at now (monoNow): age, but none once no record was
// noted for readLagIdle. A window's lag is stored when a record of the next window arrives; while every QoS 0
// publisher is held, the records in flight run out, the last window's lag stays stored, and age would keep the
// publishers held until it went stale (readLagStale, 100 ms: the long tail of holding, measured at saturation).
// A reader that has had nothing to read for two windows has no queue in front of it. A reader that is only slow
// to run notes its next records late, and the publishers let in meanwhile are held again at the next look.
// Safe for concurrent use.
func (r *readLag) current(now int64) int64 {
	if r.held.Load() == 0 && now-r.seen.Load() > int64(readLagIdle) {
		return 0
	}
	return r.age(now)
}

// shedder is one loop's share of QoS 0 publishes to drop at ingest while the reader lags. Loop-owned, but for
// the share's copy that scrapes read.
type shedder struct {
	p      float64       // the share, 0–1
	thresh uint32        // p scaled to rand.Uint32's range: drop when a draw falls below it
	at     int64         // monoNow of the last step; 0 before the first
	due    int64         // monoNow when the next step is due
	prev   int64         // the lag at the last step
	pub    atomic.Uint64 // p's bits, for scrapes
}

// qos0 reports whether a QoS 0 publish decoded at now (monoNow) is to be dropped, moving the share first when a
// step is due. limit is --read-lag-limit (the caller's copy: r sits among the fields the reader writes for every
// record, so the loops touch it only once a step). Runs on the loop.
func (s *shedder) qos0(r *readLag, limit, now int64) bool {
	if limit == 0 {
		return false
	}
	if now >= s.due {
		s.step(r.age(now), limit, now)
	}
	return s.thresh != 0 && rand.Uint32() < s.thresh
}

// step moves the share from the lag at now (both in nanoseconds, on monoNow's clock) against the limit.
func (s *shedder) step(lag, limit, now int64) {
	s.due = now + int64(shedEvery)
	if s.at == 0 || now-s.at > int64(50*shedEvery) {
		// The first step, or the first after the loop took no QoS 0 publish for a while: nothing to compare
		// the lag with, and the time since says nothing about how long the lag lasted.
		s.at, s.prev = now-int64(shedEvery), lag
	}
	lim := float64(limit)
	over := math.Min((float64(lag)-lim)/lim, 4) // ≥ −1
	grew := math.Max(math.Min(float64(lag-s.prev)/lim, 2), -2)
	ms := float64(now-s.at) / float64(time.Millisecond)
	d := shedIntegral*over*ms + shedProportional*grew
	d = math.Max(math.Min(d, shedMaxStep), -shedMaxStep)
	s.p = math.Max(math.Min(s.p+d, 1), 0)
	s.at, s.prev = now, lag
	s.thresh = uint32(s.p * math.MaxUint32)
	s.pub.Store(math.Float64bits(s.p))
}

// share is the loop's current share, for scrapes. Safe for concurrent use.
func (s *shedder) share() float64 { return math.Float64frombits(s.pub.Load()) }
