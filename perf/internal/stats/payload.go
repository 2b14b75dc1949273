// Package stats holds the harness's measurement primitives: the payload
// stamp (timestamp, publisher, sequence), per-(subscriber, publisher) sequence
// accounting for loss/duplicates/reordering, latency histograms and summaries.
package stats

import (
	"encoding/binary"
	"strconv"
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

// JSONStampSize is the least payload size PutJSONStamp needs.
const JSONStampSize = len(`{"device":"bench-4294967295","temp":21.5,"seq":18446744073709551615,"sent":-9223372036854775808}`)

// PutJSONStamp writes s into b as the JSON object {"device":"bench-<pub>","temp":21.5,"seq":<seq>,"sent":<ns>},
// padded with spaces (JSON whitespace) to len(b), which must be at least JSONStampSize. It is a device-like
// document for brokers that check or convert JSON payloads; ReadStamp does not read it.
func PutJSONStamp(b []byte, s Stamp) {
	out := append(b[:0], `{"device":"bench-`...)
	out = strconv.AppendUint(out, uint64(s.Pub), 10)
	out = append(out, `","temp":21.5,"seq":`...)
	out = strconv.AppendUint(out, s.Seq, 10)
	out = append(out, `,"sent":`...)
	out = strconv.AppendInt(out, s.SentNs, 10)
	out = append(out, '}')
	for i := len(out); i < len(b); i++ {
		b[i] = ' '
	}
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
