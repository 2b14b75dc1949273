package kafkamux

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Handler receives every record of a followed topic, decoded once and
// shared: it runs on the reader goroutine, one record at a time, in offset
// order per partition, and must not block. msg is read-only and may be
// shared by many subscribers; Ferry never mutates it after the call.
type Handler func(partition int32, offset int64, msg *Message)

// follower is one followed topic.
type follower struct {
	topic string
	h     Handler
	parts map[int32]struct{} // partitions being read; guarded by Mux.followMu
}

// Follow starts reading every partition of topic from its current end, with
// one reader for the whole instance (the Mux's client, direct partition
// consumption, no consumer group, read_committed): every record produced
// after Follow returns reaches h, once. Partitions added to the topic later
// are found within [PartitionRefresh] and read from their start.
//
// Records whose key is not a valid MQTT topic name, or whose reserved
// headers are invalid, are skipped and counted ([Mux.Skipped]).
//
// A topic can be followed once; Follow fails if the topic does not exist.
func (m *Mux) Follow(topic string, h Handler) error {
	if h == nil {
		return fmt.Errorf("cannot follow topic %q: nil handler", topic)
	}
	m.followMu.Lock()
	defer m.followMu.Unlock()
	if m.ctx.Err() != nil {
		return fmt.Errorf("cannot follow topic %q: %w", topic, ErrClosed)
	}
	if _, ok := (*m.followers.Load())[topic]; ok {
		return fmt.Errorf("cannot follow topic %q: already followed", topic)
	}

	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.dialTimeout+10*time.Second)
	defer cancel()
	// The last stable offset: with read_committed, nothing at or after it
	// has been delivered to anyone yet.
	listed, err := m.adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return fmt.Errorf("cannot follow topic %q: cannot list its end offsets: %w", topic, err)
	}
	start := make(map[int32]kgo.Offset, len(listed[topic]))
	f := &follower{topic: topic, h: h, parts: make(map[int32]struct{}, len(listed[topic]))}
	for p, lo := range listed[topic] {
		start[p] = kgo.NewOffset().At(lo.Offset)
		f.parts[p] = struct{}{}
	}
	if len(start) == 0 {
		return fmt.Errorf("cannot follow topic %q: %w", topic, kerr.UnknownTopicOrPartition)
	}

	next := maps.Clone(*m.followers.Load())
	next[topic] = f
	m.followers.Store(&next) // before the partitions are added: the reader must know the topic
	m.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: start})

	if !m.started {
		m.started = true
		m.readerWG.Add(2)
		go m.read()
		go m.refreshPartitions()
	}
	return nil
}

// read is the one reader goroutine: it polls the client and hands each
// record to its topic's handler.
func (m *Mux) read() {
	defer m.readerWG.Done()
	for {
		fetches := m.cl.PollRecords(m.ctx, 4096)
		if m.ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			if ok, n := m.rl.allow("fetch:" + err.Error()); ok {
				m.log.Warn("cannot read from Kafka", "topic", t, "partition", p, "err", err, "suppressed", n)
			}
		})
		fs := *m.followers.Load()
		fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
			f := fs[ftp.Topic]
			if f == nil {
				return
			}
			for _, r := range ftp.Records {
				msg, err := MessageFromRecord(r)
				if err != nil {
					m.skipped.Add(1)
					if ok, n := m.rl.allow("decode:" + ftp.Topic); ok {
						m.log.Warn("skipping Kafka record that is not an MQTT message", "topic", ftp.Topic,
							"partition", r.Partition, "offset", r.Offset, "err", err, "suppressed", n)
					}
					continue
				}
				f.h(r.Partition, r.Offset, msg)
			}
		})
	}
}

// refreshPartitions periodically looks for partitions added to followed
// topics and starts reading them from their start.
func (m *Mux) refreshPartitions() {
	defer m.readerWG.Done()
	t := time.NewTicker(m.cfg.partRefresh)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			m.addNewPartitions()
		}
	}
}

func (m *Mux) addNewPartitions() {
	m.followMu.Lock()
	defer m.followMu.Unlock()
	fs := *m.followers.Load()
	topics := make([]string, 0, len(fs))
	for t := range fs {
		topics = append(topics, t)
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.partRefresh)
	defer cancel()
	details, err := m.adm.ListTopics(ctx, topics...)
	if err != nil {
		if ok, n := m.rl.allow("refresh"); ok && m.ctx.Err() == nil {
			m.log.Warn("cannot refresh partitions of followed topics", "err", err, "suppressed", n)
		}
		return
	}
	add := make(map[string]map[int32]kgo.Offset)
	for _, d := range details {
		f := fs[d.Topic]
		if f == nil || d.Err != nil {
			continue
		}
		for p := range d.Partitions {
			if _, ok := f.parts[p]; ok {
				continue
			}
			f.parts[p] = struct{}{}
			if add[d.Topic] == nil {
				add[d.Topic] = make(map[int32]kgo.Offset)
			}
			add[d.Topic][p] = kgo.NewOffset().AtStart()
			m.log.Info("following new Kafka partition", "topic", d.Topic, "partition", p)
		}
	}
	if len(add) > 0 {
		m.cl.AddConsumePartitions(add)
	}
}
