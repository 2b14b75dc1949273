package server

import (
	"sync/atomic"

	"github.com/ferrymq/ferry/mqttcodec"
)

// Metrics are the server's low-cardinality counters: per QoS, per reason, never per client.
type Metrics struct {
	connsOpened       atomic.Uint64
	connsCurrent      atomic.Int64
	sessionsConnected atomic.Int64
	sessionsExpired   atomic.Uint64
	takeovers         atomic.Uint64
	protocolErrors    atomic.Uint64
	connectTimeouts   atomic.Uint64
	keepAliveTimeouts atomic.Uint64
	refused           [256]atomic.Uint64 // CONNECTs refused, by v5 reason code
	publishesIn       [3]atomic.Uint64
	publishesOut      [3]atomic.Uint64
	recordsIn         atomic.Uint64
	bytesOut          atomic.Uint64
	kafkaErrors       atomic.Uint64
	drops             [dropReasons]atomic.Uint64
	subscriptions     atomic.Int64
	refusedSubs       atomic.Uint64 // subscriptions refused by the per-session quota
	willsSent         atomic.Uint64
}

// Reasons a message is dropped.
const (
	dropLaneFull  = iota // QoS 0 publish while Kafka's in-flight budget is exhausted
	dropQueueFull        // session queue full
	dropExpired          // message expiry passed before delivery
	dropTooLarge         // larger than the client's Maximum Packet Size
	dropReasons
)

// DropReasonNames names the drop counters for metrics output.
var DropReasonNames = [dropReasons]string{"lane_full", "queue_full", "expired", "too_large"}

func (m *Metrics) dropped(reason int) { m.drops[reason].Add(1) }

func (m *Metrics) connectRefused(r mqttcodec.ReasonCode) { m.refused[r].Add(1) }

// Snapshot is a copy of the counters.
type Snapshot struct {
	ConnsOpened, SessionsExpired, Takeovers, ProtocolErrors, ConnectTimeouts, KeepAliveTimeouts uint64
	ConnsCurrent, SessionsConnected, Subscriptions                                              int64
	PublishesIn, PublishesOut                                                                   [3]uint64
	RecordsIn, BytesOut, KafkaErrors, WillsSent                                                 uint64
	Drops                                                                                       [dropReasons]uint64
	Refused                                                                                     map[mqttcodec.ReasonCode]uint64
}

// Snapshot copies the counters.
func (m *Metrics) Snapshot() Snapshot {
	s := Snapshot{
		ConnsOpened: m.connsOpened.Load(), SessionsExpired: m.sessionsExpired.Load(), Takeovers: m.takeovers.Load(),
		ProtocolErrors: m.protocolErrors.Load(), ConnectTimeouts: m.connectTimeouts.Load(),
		KeepAliveTimeouts: m.keepAliveTimeouts.Load(), ConnsCurrent: m.connsCurrent.Load(),
		SessionsConnected: m.sessionsConnected.Load(), Subscriptions: m.subscriptions.Load(),
		RecordsIn: m.recordsIn.Load(), BytesOut: m.bytesOut.Load(), KafkaErrors: m.kafkaErrors.Load(),
		WillsSent: m.willsSent.Load(), Refused: map[mqttcodec.ReasonCode]uint64{},
	}
	for i := range s.PublishesIn {
		s.PublishesIn[i], s.PublishesOut[i] = m.publishesIn[i].Load(), m.publishesOut[i].Load()
	}
	for i := range s.Drops {
		s.Drops[i] = m.drops[i].Load()
	}
	for i := range m.refused {
		if v := m.refused[i].Load(); v != 0 {
			s.Refused[mqttcodec.ReasonCode(i)] = v
		}
	}
	return s
}
