// Package sessionkey is the one definition of the sessions topic's record keys, and of the value of the
// records whose value the key says all of ("q:"), for the server that writes and reads them and for kafkamux,
// which partitions them by client id. The JSON values of the other kinds are server/sessions's (records.go);
// docs/sessions.md documents them all for Kafka users.
//
// A key is "<kind>:<id>": a one-letter kind, a colon, and the client id (the instance id for "i:"). An inbound
// QoS 2 packet id adds U+0000 and the packet id in decimal after the client id ("q:<id>\x00<pid>"); a client
// id never contains U+0000 [MQTT-1.5.4-2], so the key parses back unambiguously. All keys of one client share
// a partition: they are partitioned by the client id alone (ClientID). A pending will ("p:") adds U+0000 and
// the connection's epoch the same way.
package sessionkey

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// Kinds of sessions-topic records.
const (
	Session  = "s" // subscriptions and expiry of a persistent session
	Owner    = "o" // which instance holds the client now: the takeover signal
	Delivery = "d" // delivery offsets, outbound packet ids in flight
	Will     = "w" // the will of the current connection
	Instance = "i" // an instance's heartbeat (key i:<instance id>)
	QoS2     = "q" // an inbound QoS 2 packet id waiting for PUBREL (key q:<client id>\x00<packet id>)
	Pending  = "p" // a will due at once, claimed and not yet published (key p:<client id>\x00<epoch>)
	Conn     = "c" // a persistent session's connection, until it ended (key c:<client id>\x00<epoch>)
)

// EpochHeader is the record header that carries, in decimal, the epoch of the connection an "o:" tombstone
// ends: a tombstone has no value to say it, and without it a late tombstone of an older connection could not
// be told from the end of the newest one.
const EpochHeader = "ferry-epoch"

// ParseEpoch parses an EpochHeader value; ok is false for anything but a decimal integer.
func ParseEpoch(v []byte) (epoch int64, ok bool) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

// Version is the version every record value carries ("v").
const Version = 1

// Key is the key of the record of kind for id.
func Key(kind, id string) string { return kind + ":" + id }

// Split splits a key into its kind and what follows the colon; ok is false for a key of no known shape.
func Split(key string) (kind, rest string, ok bool) {
	if len(key) < 3 || key[1] != ':' {
		return "", "", false
	}
	return key[:1], key[2:], true
}

// QoS2Key is the key recording inbound QoS 2 packet id pid of client id.
func QoS2Key(id string, pid uint16) string {
	return QoS2 + ":" + id + "\x00" + strconv.Itoa(int(pid))
}

// PendingKey is the key of the will of client id's connection epoch, due at once and claimed, until it is
// published.
func PendingKey(id string, epoch int64) string {
	return Pending + ":" + id + "\x00" + strconv.FormatInt(epoch, 10)
}

// ConnKey is the key marking client id's connection epoch of a persistent session while it may be open.
func ConnKey(id string, epoch int64) string {
	return Conn + ":" + id + "\x00" + strconv.FormatInt(epoch, 10)
}

// ParsePending splits the part of a "p:" or "c:" key after the kind into the client id and the epoch.
func ParsePending(rest string) (id string, epoch int64, ok bool) {
	i := strings.LastIndexByte(rest, 0)
	if i < 0 {
		return "", 0, false
	}
	n, err := strconv.ParseInt(rest[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return rest[:i], n, true
}

// ParseQoS2 splits the part of a "q:" key after the kind into the client id and the packet id.
func ParseQoS2(rest string) (id string, pid uint16, ok bool) {
	i := strings.LastIndexByte(rest, 0)
	if i < 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(rest[i+1:], 10, 16)
	if err != nil || n == 0 {
		return "", 0, false
	}
	return rest[:i], uint16(n), true
}

// QoS2Value is the value of a "q:" key: the version and when it was written, for people reading the topic.
func QoS2Value(at time.Time) []byte {
	return []byte(`{"v":` + strconv.Itoa(Version) + `,"at":` + strconv.FormatInt(at.UnixMilli(), 10) + `}`)
}

// ClientID returns the client id part of a key, by which all of a client's keys are partitioned; a key of no
// known shape is returned whole.
func ClientID(key []byte) []byte {
	if len(key) >= 2 && key[1] == ':' {
		if key[0] == QoS2[0] || key[0] == Pending[0] || key[0] == Conn[0] {
			if i := bytes.LastIndexByte(key, 0); i >= 2 {
				return key[2:i]
			}
		}
		return key[2:]
	}
	return key
}
