// Package kafkamux is Ferry's only door to Kafka: one franz-go client per
// instance for producing, reading and admin, the embedded Kafka (kfake), and
// the Kafka data model of MQTT messages (message.go, README.md).
//
// Threading: [Mux.Produce] never blocks and may be called from any goroutine,
// including gnet event loops; its callbacks run serially on franz-go's promise
// goroutine. [Handler]s of followed topics run on the single reader goroutine.
// Neither kind of callback may block. No lock of this package is held while a
// callback runs.
//
// Locks: Mux.followMu guards Follow and partition refresh (it is held across
// the ListOffsets/Metadata request of a Follow, never on a hot path);
// connTracker.mu guards the connection sets and is taken only in franz-go
// hooks and the Connections accessors. They never nest.
package kafkamux
