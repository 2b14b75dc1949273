package offload

import (
	"context"

	"github.com/ferrymq/ferry/kafkamux"
)

// GroupSpec and GroupReader are kafkamux's consumer-group reader of the messages topic and routed topics
// (MQTT shared subscriptions), aliased so that the server imports offload only.
type (
	GroupSpec       = kafkamux.GroupSpec
	GroupReader     = kafkamux.GroupReader
	TopicPartitions = kafkamux.TopicPartitions
	TopicOffsets    = kafkamux.TopicOffsets
)

// JoinGroup makes this instance a member of the Kafka consumer group spec.Group over the messages topic and
// spec.Topics (see kafkamux.Mux.JoinGroup). It blocks for a few Kafka round trips: call it off the event loops.
func (o *Offload) JoinGroup(ctx context.Context, spec GroupSpec) (*GroupReader, error) {
	return o.mux.JoinGroup(ctx, o.topic, spec)
}

// GroupConnections returns the Kafka connections the instance's group readers hold.
func (o *Offload) GroupConnections() int { return o.mux.GroupConnections() }

// ShareSpec, ShareReader and ShareRecord are kafkamux's share-group (KIP-932) reader, aliased so that the
// server imports offload only.
type (
	ShareSpec   = kafkamux.ShareSpec
	ShareReader = kafkamux.ShareReader
	ShareRecord = kafkamux.ShareRecord
	ShareAck    = kafkamux.ShareAck

	ShareReaderStats = kafkamux.ShareReaderStats
)

// Share acknowledgement kinds (kafkamux).
const (
	ShareAccept  = kafkamux.ShareAccept
	ShareRelease = kafkamux.ShareRelease
	ShareReject  = kafkamux.ShareReject
)

// JoinShareGroup makes this instance a member of the Kafka share group spec.Group over the messages topic
// and spec.Topics (see kafkamux.Mux.JoinShareGroup). It blocks for a few Kafka round trips: call it off the
// event loops.
func (o *Offload) JoinShareGroup(ctx context.Context, spec ShareSpec) (*ShareReader, error) {
	return o.mux.JoinShareGroup(ctx, o.topic, spec)
}

// ShareGroupsSupported reports whether the Kafka cluster advertises the share group APIs (KIP-932).
func (o *Offload) ShareGroupsSupported(ctx context.Context) (bool, error) {
	return o.mux.ShareGroupsSupported(ctx)
}
