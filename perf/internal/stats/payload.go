// Package stats holds the harness's measurement primitives: the payload
// stamp (timestamp, publisher, sequence), per-(subscriber, publisher) sequence
// accounting for loss/duplicates/reordering, latency histograms and summaries.
package stats

import (
	"encoding/binary"
	"time"
)

// Payload layout (big endian), padded with zeros to the requested size:
//
//	[0:2]   magic 0xFB 0x01 (lets a Kafka reader skip foreign records)
//	[2:10]  send time, nanoseconds since Unix epoch (wall clock: every worker
//	        process on the host shares it, monotonic clocks are per process)
//	[10:14] publisher id (global, 0..P-1)
//	[14:22] sequence number, per publisher, from 0
const (
	PayloadHeader = 22
	magic0        = 0xFB
	magic1        = 0x01
)

// Stamp is what a payload carries.
type Stamp struct {
	SentNs int64
	Pub    uint32
	Seq    uint64
}

// PutStamp writes s into the first PayloadHeader bytes of b (len(b) must be >= PayloadHeader).
func PutStamp(b []byte, s Stamp) {
	_ = b[PayloadHeader-1]
	b[0], b[1] = magic0, magic1
	binary.BigEndian.PutUint64(b[2:], uint64(s.SentNs))
	binary.BigEndian.PutUint32(b[10:], s.Pub)
	binary.BigEndian.PutUint64(b[14:], s.Seq)
}

// ReadStamp decodes a stamp; ok is false for payloads the harness did not write.
func ReadStamp(b []byte) (Stamp, bool) {
	if len(b) < PayloadHeader || b[0] != magic0 || b[1] != magic1 {
		return Stamp{}, false
	}
	return Stamp{
		SentNs: int64(binary.BigEndian.Uint64(b[2:])),
		Pub:    binary.BigEndian.Uint32(b[10:]),
		Seq:    binary.BigEndian.Uint64(b[14:]),
	}, true
}

// NowNs is the clock every stamp and every receive time use.
func NowNs() int64 { return time.Now().UnixNano() }
