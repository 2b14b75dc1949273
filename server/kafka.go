package server

import (
	"context"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/server/sessions"
)

// Kafka is everything the server asks of Kafka apart from publishing MQTT messages, which goes through the
// loops' lanes (offload) alone because the lanes own back-pressure. It is declared here, by its user, in the
// small parts below so that a reader sees what each concern needs; *kafkamux.Mux satisfies it, and cmd/ferry
// passes New the same Mux it built the lanes over. The record types (kafkamux.Message, Record, FollowSpec…)
// are kafkamux's data model, imported as they are.
type Kafka interface {
	Topics
	Reader
	SessionWriter
	Groups
	Admin
}

// Topics names the topics of Ferry's data model (DESIGN §3).
type Topics interface {
	MessagesTopic() string
	RetainedTopic() string
	SessionsTopic() string
}

// Reader is the shared reader's side of Kafka: the topics the instance follows and the ranges a resume reads
// back.
type Reader interface {
	// FollowAll starts following every topic of specs with one fetch; handlers run on the reader goroutine.
	FollowAll(specs ...kafkamux.FollowSpec) error
	// ReadRange calls fn for each message of topic's partition with from ≤ offset < to, from the recent-records
	// cache or Kafka. It blocks: never on an event loop.
	ReadRange(ctx context.Context, topic string, partition int32, from, to int64, fn func(off int64, m *kafkamux.Message) error) error
	// ReadUpTo waits until every record topic held when it was called has been handed to its follower. It
	// blocks: never on an event loop.
	ReadUpTo(ctx context.Context, topic string) error
}

// SessionWriter writes the sessions topic's records: sessions.Writer (server/sessions writes them all but the
// QoS 2 ids of qos2.go), and whether a message and its session record can be committed as one (QoS 2).
type SessionWriter interface {
	sessions.Writer
	Transactional() bool
}

// Groups joins the Kafka consumer and share groups of shared subscriptions (server/share).
// The joins block for a few Kafka round trips: never on an event loop.
type Groups interface {
	JoinGroup(ctx context.Context, topic string, spec kafkamux.GroupSpec) (*kafkamux.GroupReader, error)
	JoinShareGroup(ctx context.Context, topic string, spec kafkamux.ShareSpec) (*kafkamux.ShareReader, error)
	ShareGroupsSupported(ctx context.Context) (bool, error)
	// GroupConnections is the number of Kafka connections the group readers hold (a gauge).
	GroupConnections() int
}

// Admin creates and lists routed topics (routing.go) and says whether the embedded Kafka's disk is full.
type Admin interface {
	CreatesTopics() bool
	// CreateTopic and ListTopicNames block: never on an event loop.
	CreateTopic(ctx context.Context, name string) error
	ListTopicNames(ctx context.Context) ([]string, error)
	// StorageFull is an atomic load: callable from an event loop.
	StorageFull() bool
}

var _ Kafka = (*kafkamux.Mux)(nil)
