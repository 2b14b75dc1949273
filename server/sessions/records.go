package sessions

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
	"github.com/ferrymq/ferry/kafkamux"
)

// SessionRec is the value of an "s:" key.
type SessionRec struct {
	V      int      `json:"v"`
	Expiry uint32   `json:"expiry"` // seconds the session outlives its connection
	Subs   []SubRec `json:"subs"`
}

type SubRec struct {
	F   string `json:"f"`
	Q   byte   `json:"q"`
	NL  bool   `json:"nl,omitempty"`
	RAP bool   `json:"rap,omitempty"`
	RH  byte   `json:"rh,omitempty"`
	ID  uint32 `json:"id,omitempty"`
}

// OwnerRec is the value of an "o:" key, written at every CONNECT and at the end of a connection.
type OwnerRec struct {
	V         int    `json:"v"`
	Instance  string `json:"instance"`
	Epoch     int64  `json:"epoch"` // unix nanoseconds of the CONNECT; orders owners
	Connected bool   `json:"connected"`
	At        int64  `json:"at"` // unix milliseconds of the write; for an end record, when the connection ended
	Expiry    uint32 `json:"expiry"`
	// End records (connected false): whether the connection's will is due, and the claim round. The first end
	// record of an epoch and round in the partition's log decides which instance publishes the will.
	Will  bool `json:"will,omitempty"`
	Round int  `json:"round,omitempty"`
	// Now: the will was due when the connection ended (Will Delay 0, or a session that ends with it); the
	// claimer wrote it as "p:<id>\x00<epoch>" before this record, and it stays there until published
	// (pending.go).
	Now bool `json:"now,omitempty"`
}

// DeliveryRec is the value of a "d:" key: where the session's delivery stands in the messages topic.
type DeliveryRec struct {
	V        int              `json:"v"`
	Epoch    int64            `json:"epoch"`   // the owner epoch the state was handed to (takeover) or written by
	Offsets  map[string]int64 `json:"offsets"` // "<partition>" (messages topic) or "<routed topic>/<partition>" → first offset not completed
	Out      []OutRec         `json:"out,omitempty"`
	Complete bool             `json:"complete"` // written when the connection ended (not a periodic save)
	Saved    int64            `json:"saved"`    // unix nanoseconds of the write: a reader keeps the newest
}

// OutRec is one outbound message the client had not completed.
type OutRec struct {
	ID       uint16 `json:"id"`
	Released bool   `json:"released,omitempty"` // QoS 2: PUBREC received, PUBREL sent
	T        string `json:"t,omitempty"`        // routed Kafka topic; absent = the messages topic
	P        int32  `json:"p"`
	O        int64  `json:"o"`
}

// versioned is a sessions-topic record value: every kind carries its format version.
type versioned interface{ version() int }

func (r *SessionRec) version() int { return r.V }

func (r *OwnerRec) version() int { return r.V }

func (r *DeliveryRec) version() int { return r.V }

func (r *HeartbeatRec) version() int { return r.V }

func (r *WillRec) version() int { return r.V }

func (r *QoS2Rec) version() int { return r.V }

func (r *ConnRec) version() int { return r.V }

// decodeRec parses a record value of a known version; a tombstone gives nil. A record of this version is
// parsed once; only one that does not decode, or names another version, is read again for its version, so
// the error says which it is.
func Decode[T any, P interface {
	*T
	versioned
}](value []byte) (*T, error) {
	if value == nil {
		return nil, nil
	}
	v := new(T)
	err := json.Unmarshal(value, v)
	if err == nil && P(v).version() == sessionkey.Version {
		return v, nil
	}
	var probe struct {
		V int `json:"v"`
	}
	if perr := json.Unmarshal(value, &probe); perr != nil {
		return nil, fmt.Errorf("cannot decode: %w", perr)
	}
	if probe.V != sessionkey.Version {
		return nil, fmt.Errorf("unknown record version %d (this instance reads version %d)", probe.V, sessionkey.Version)
	}
	return nil, fmt.Errorf("cannot decode version %d: %w", probe.V, err)
}

// EpochOf returns o's epoch, 0 for a tombstone.
func EpochOf(o *OwnerRec) int64 {
	if o == nil {
		return 0
	}
	return o.Epoch
}

// WillRec is the value of a "w:" key.
type WillRec struct {
	V             int         `json:"v"`
	Epoch         int64       `json:"epoch"`
	Topic         string      `json:"topic"`
	Payload       []byte      `json:"payload"`
	QoS           byte        `json:"qos"`
	Retain        bool        `json:"retain,omitempty"`
	Delay         uint32      `json:"delay,omitempty"` // Will Delay Interval, seconds
	PayloadFormat *byte       `json:"payload_format,omitempty"`
	ContentType   string      `json:"content_type,omitempty"`
	ResponseTopic string      `json:"response_topic,omitempty"`
	Correlation   []byte      `json:"correlation_data,omitempty"`
	Expiry        uint32      `json:"message_expiry,omitempty"` // seconds, from the will's publication
	User          [][2]string `json:"user,omitempty"`
	By            string      `json:"by,omitempty"` // a pending will ("p:"): the instance whose claim wrote it
}

// Message builds the will's message at publication time.
func (r *WillRec) Message(clientID string, now time.Time) *kafkamux.Message {
	m := &kafkamux.Message{Topic: r.Topic, Payload: r.Payload, QoS: r.QoS, Retain: r.Retain, ClientID: clientID,
		ContentType: r.ContentType, ResponseTopic: r.ResponseTopic, CorrelationData: r.Correlation}
	if r.PayloadFormat != nil {
		m.PayloadFormat, m.HasPayloadFormat = *r.PayloadFormat, true
	}
	if r.Expiry > 0 {
		m.ExpiresAt = now.Add(time.Duration(r.Expiry) * time.Second)
	}
	for _, u := range r.User {
		m.UserProps = append(m.UserProps, kafkamux.UserProp{Key: u[0], Value: u[1]})
	}
	return m
}

// HeartbeatRec is the value of an "i:" key.
type HeartbeatRec struct {
	V        int    `json:"v"`
	At       int64  `json:"at"`                 // unix milliseconds of the write
	Addr     string `json:"addr,omitempty"`     // advertised MQTT address (--advertise)
	Draining bool   `json:"draining,omitempty"` // a drain has begun: send no clients here
	Run      string `json:"run,omitempty"`      // random per process start (store.incarnation)
}

// QoS2Rec is the value of a "q:" key (written by sessionkey.QoS2Value); only its version is read.
type QoS2Rec struct {
	V int `json:"v"`
}

// ConnRec is the value of a "c:" key.
type ConnRec struct {
	V        int    `json:"v"`
	Instance string `json:"instance"`
	// Will is the connection's will while nobody has claimed its end (conns.go, "Owed wills"); a claim writes
	// the marker again without it before its end record.
	Will *WillRec `json:"will,omitempty"`
}
