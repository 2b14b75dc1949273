// Package mqttcodec is the MQTT 3.1, 3.1.1 and 5.0 wire format: the fixed
// header and its Variable Byte Integer, MQTT 5 properties and reason codes,
// all 15 control packets in both directions, and topic name and filter
// validation and matching. It imports only the standard library.
//
// # Framing
//
// Bytes arrive in arbitrary pieces. Frame(b, max) returns ErrIncomplete
// until b holds a whole packet, then its FixedHeader, its body and the
// number of bytes it spans; ReadFixedHeader alone refuses an oversized
// packet (PacketTooLarge) before its body is read.
//
//	fh, body, n, err := mqttcodec.Frame(buf, maxPacketSize)
//	switch {
//	case err == mqttcodec.ErrIncomplete: // read more
//	case err != nil: // mqttcodec.ReasonOf(err) is the v5 reason to answer with
//	default: // decode body according to fh.Type, then drop buf[:n]
//	}
//
// # Buffer ownership
//
// Decoders never copy: every []byte of a decoded struct (topic, payload,
// client identifier, property values, user properties, filters) is a
// sub-slice of the body passed to Decode and is valid only as long as that
// buffer is. Whatever must outlive it (a retained message, a session's
// subscriptions) must be copied by the caller. Borrowed slices have their
// capacity cut to their length, so appending to one never writes into the
// rest of the packet.
//
// Decoders reset the struct they decode into (the caller need not call
// Reset) and reuse the capacity of its
// slices, so decoding into a long-lived struct does not allocate: PUBLISH,
// the four acks and PINGREQ decode with 0 allocations (see alloc_test.go).
// Encoders are AppendX(dst, ...) and append a whole packet, fixed header
// included; with enough capacity in dst they do not allocate. Encoders do
// not validate what they are given: encoding a struct that a decoder would
// refuse produces a packet the peer will refuse.
//
// # Concurrency
//
// Every function is safe to call from any goroutine; a struct must not be
// decoded into or encoded from by two goroutines at once. Nothing blocks and
// nothing touches a socket, so all of it may run on an event loop.
//
// # Errors
//
// Every malformation is an *Error carrying the MQTT 5 reason code the
// server must answer with (MalformedPacket, ProtocolError,
// TopicFilterInvalid, PacketTooLarge...), the packet type, and a lower-case
// message saying what was wrong and where. V3ConnackCode and V3SubackCode
// map reasons for v3.1/v3.1.1 clients, which never see a v5 byte. Nothing
// in this package panics on input; the only panics are "BUG:" ones for
// encoder arguments no decoder produces: a string or binary field longer
// than 65535 bytes, or a packet whose Remaining Length would exceed
// MaxRemaining. Data that did not come from a decoder (a topic read from
// Kafka, a payload of any size) must be checked by the caller first:
// ValidTopicName, and PublishSize against the peer's maximum packet size.
//
// # Direction
//
// Decoders accept every packet in both directions (the server decodes what
// clients send, the load harness what servers send). The few rules that
// depend on who sent a packet are separate checks: CheckClientPublish
// (no Subscription Identifier from a client [MQTT-3.3.4-6]); the rest
// (which packets may come from whom, and when) belongs to the session
// state machine.
//
// # Normative statements
//
// Code that enforces a statement of the specifications carries its tag,
// e.g. [MQTT-3.3.1-4]; tests are named after them; CONFORMANCE.md lists
// every statement of chapters 1-4.7 (and 4.8.2) a codec can check and the
// test that covers it. Where 3.1.1 and 5.0 number the same rule
// differently, comments give both, marked (3.1.1) or (5.0).
package mqttcodec
