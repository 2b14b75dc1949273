// Package offload is the bounded, non-blocking path of MQTT messages from the server's event loops into
// Kafka, and the one owner of its back-pressure.
//
// It owns four things, and nothing else:
//
//   - Lanes. Each event loop owns one [Lane]; [Lane.TryPublish] (TryPublishWith, TryPublishRouted,
//     TryPublishPub) never blocks: it hands the message to the Kafka producer, or returns [ErrFull] and
//     produces nothing.
//   - Budgets. A lane bounds what it has in flight to Kafka in records, in bytes ([LaneRecords],
//     [LaneBytes]) and in time ([LaneDelay]: the record limit follows how fast Kafka completes). A QoS 0
//     message has a tighter time budget of its own ([LaneQoS0Delay]): while the lane's records wait longer
//     than it, a QoS 0 message past what Kafka completes in it is refused with [ErrLate] (an ErrFull that
//     does not pause the lane), and the server drops it.
//   - Back-pressure. The lane alone decides "full", under its own mutex, and alone says "room again": it
//     calls its [Lane.OnSpace] function once per refusal episode, after the refusal, when completions have
//     brought it down to its resume mark ([ResumeAt]). The server keeps a refused QoS 1/2 publish in its
//     connection's queue (bounded by Receive Maximum), drops a refused QoS 0 one, and retries on OnSpace;
//     it keeps no "full" flag of its own and never polls the lane. A caller that would rather hold QoS 0
//     back than drop it asks [Lane.HoldQoS0] before it reads the message, and is told "room again" by the
//     same OnSpace once the lane is back under its QoS 0 budget.
//   - Completions. Each publish's done function runs on a franz-go producer callback goroutine, after the
//     lane's budget was released, in the order Kafka acknowledged the records (per partition in produce
//     order; across partitions in any order). It must not block: the server marks the publish done and
//     hands its connection back to the owning loop with one non-blocking notify (server/loop.go), and the
//     loop writes the acks in PUBLISH order.
//
// Everything else the server needs of Kafka — following topics, reading ranges back, session records,
// consumer and share groups, topic admin — it asks of kafkamux directly, through small interfaces it
// declares itself (server/kafka.go). Offload forwards none of it.
//
// A lane is safe for concurrent use: besides its loop, other goroutines publish on it too (the server
// publishes wills on lane 0 from timers and readers).
package offload
