package server

import (
	"time"

	"github.com/ferrymq/ferry/kafkamux"
)

// Latency stages: where the time of a QoS 1/2 PUBLISH and of a delivery goes, as histograms an operator can
// read next to each other (ferry_publish_stage_seconds, ferry_delivery_stage_seconds; docs/operations.md).
//
// Publish, per QoS 1/2 PUBLISH:
//   - queued: decoded on the loop → handed to the Kafka producer (non-zero only when the lane was full)
//   - kafka:  handed to the producer → Kafka acknowledged it (acks=all, and with transactions the commit)
//   - ack:    Kafka's acknowledgement → the PUBACK/PUBREC written by the loop (the hop back onto the loop,
//     and waiting for earlier publishes of the connection, as acks go out in order [MQTT-4.6.0-2])
//
// Delivery, per message written live to a subscriber (not replays of a resumed session):
//   - read:  the record's timestamp (when its producer created it; for Ferry's own records, when the loop handed
//     it to the producer) → received by the shared reader
//   - write: received by the shared reader → the PUBLISH written to the subscriber's socket
//
// The clock is monotonic for the publish stages; the read stage compares two wall clocks (the producer's and
// this host's, the same for records Ferry produced itself) and Kafka keeps record timestamps in milliseconds,
// so a read stage reads up to 1 ms long.
const (
	stageQueued = iota
	stageKafka
	stageAck
	pubStages
)

const (
	stageRead = iota
	stageWrite
	deliveryStages
)

// PublishStageNames and DeliveryStageNames are the label values of the stage histograms, by index.
var (
	PublishStageNames  = [pubStages]string{"queued", "kafka", "ack"}
	DeliveryStageNames = [deliveryStages]string{"read", "write"}
)

// monoEpoch is the reference of monoNow: the process's monotonic clock, as nanoseconds that fit an int64 field.
var monoEpoch = time.Now()

// monoNow is a monotonic timestamp in nanoseconds (a vDSO clock read, no allocation).
func monoNow() int64 { return int64(time.Since(monoEpoch)) }

// PublishStages returns the publish stage histograms, by the index of PublishStageNames.
func (m *Metrics) PublishStages() [pubStages]kafkamux.HistogramSnapshot {
	var out [pubStages]kafkamux.HistogramSnapshot
	for i := range out {
		out[i] = m.pubStage[i].Snapshot()
	}
	return out
}

// DeliveryStages returns the delivery stage histograms, by the index of DeliveryStageNames.
func (m *Metrics) DeliveryStages() [deliveryStages]kafkamux.HistogramSnapshot {
	var out [deliveryStages]kafkamux.HistogramSnapshot
	for i := range out {
		out[i] = m.delStage[i].Snapshot()
	}
	return out
}
