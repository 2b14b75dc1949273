package mqttcodec

import (
	"bytes"
	"strconv"
)

// Topic rules (MQTT 5.0 section 4.7, 3.1.1 section 4.7).
//
// A topic name or filter is a UTF-8 Encoded String, so it follows the UTF-8
// rules of strings.go: well-formed, no surrogates, no U+0000; the
// discouraged code points (controls, non-characters) are accepted. It is at
// least one byte long [MQTT-4.7.3-1] and, being a string, at most 65535.

// maxTopicLen is the longest UTF-8 Encoded String.
const maxTopicLen = 0xFFFF

// topicNameProblem checks a topic name: non-empty [MQTT-4.7.3-1], no
// wildcard characters [MQTT-4.7.0-1] [MQTT-3.3.2-2], UTF-8 [MQTT-4.7.3-2]
// [MQTT-1.5.4-1] [MQTT-1.5.4-2], at most 65535 bytes [MQTT-4.7.3-3]. It
// returns the offset of the problem (0 for a length problem) and what it is,
// or (-1, "").
func topicNameProblem(t []byte) (int, string) {
	if len(t) == 0 {
		return 0, "is empty"
	}
	if len(t) > maxTopicLen {
		return 0, "is longer than 65535 bytes"
	}
	for i, c := range t {
		if c == '+' || c == '#' {
			return i, "contains the wildcard '" + string(rune(c)) + "' at byte " + itoa(i)
		}
	}
	if i, what := utf8Problem(t); i >= 0 {
		return i, what + " at byte " + itoa(i)
	}
	return -1, ""
}

// ValidTopicName checks a topic name as PUBLISH carries it (and as a will
// topic): non-empty, no '+' or '#', well-formed UTF-8 without U+0000 or
// surrogates, at most 65535 bytes. A topic beginning with '$' is a valid
// name (the server decides whether clients may publish to it). It returns
// nil or an *Error with reason TopicNameInvalid (0x90).
func ValidTopicName(t []byte) error {
	if _, msg := topicNameProblem(t); msg != "" {
		return &Error{Reason: TopicNameInvalid, Msg: "topic name: " + msg}
	}
	return nil
}

// topicFilterProblem checks a topic filter: non-empty [MQTT-4.7.3-1], '+'
// occupies a whole level [MQTT-4.7.1-3 v3.1.1: MQTT-4.7.1-2 of 5.0], '#' is
// a whole level and the last one [MQTT-4.7.1-2 v3.1.1: MQTT-4.7.1-1 of
// 5.0], UTF-8 and length as for names.
func topicFilterProblem(f []byte) (int, string) {
	if len(f) == 0 {
		return 0, "is empty"
	}
	if len(f) > maxTopicLen {
		return 0, "is longer than 65535 bytes"
	}
	for i, c := range f {
		switch c {
		case '#':
			if i > 0 && f[i-1] != '/' {
				return i, "'#' at byte " + itoa(i) + " must occupy a whole level"
			}
			if i != len(f)-1 {
				return i, "'#' at byte " + itoa(i) + " must be the last level"
			}
		case '+':
			if (i > 0 && f[i-1] != '/') || (i < len(f)-1 && f[i+1] != '/') {
				return i, "'+' at byte " + itoa(i) + " must occupy a whole level"
			}
		}
	}
	if i, what := utf8Problem(f); i >= 0 {
		return i, what + " at byte " + itoa(i)
	}
	return -1, ""
}

// ValidTopicFilter checks a topic filter as SUBSCRIBE and UNSUBSCRIBE carry
// it: non-empty; '+' is a whole level; '#' is a whole level and the last;
// UTF-8 as for names; at most 65535 bytes. It does not interpret "$share/":
// use ParseShared for that. It returns nil or an *Error with reason
// TopicFilterInvalid (0x8F).
func ValidTopicFilter(f []byte) error {
	if _, msg := topicFilterProblem(f); msg != "" {
		return &Error{Reason: TopicFilterInvalid, Msg: "topic filter: " + msg}
	}
	return nil
}

var sharePrefix = []byte("$share/")

// IsShared reports whether f starts with "$share/".
func IsShared(f []byte) bool { return bytes.HasPrefix(f, sharePrefix) }

// ParseShared splits a shared subscription filter "$share/{group}/{filter}"
// [MQTT 5.0 4.8.2]. For a filter that does not start with "$share/" it
// returns (nil, f, false, ValidTopicFilter(f)). For a shared one, group and
// filter borrow from f, and err is an *Error with reason TopicFilterInvalid
// (0x8F) if the group is empty [MQTT-4.8.2-1], contains '+', '#' (or '/',
// which ends it) [MQTT-4.8.2-2], is not valid UTF-8, or if no valid topic
// filter follows it.
func ParseShared(f []byte) (group, filter []byte, shared bool, err error) {
	if !IsShared(f) {
		return nil, f, false, ValidTopicFilter(f)
	}
	rest := f[len(sharePrefix):]
	slash := bytes.IndexByte(rest, '/')
	if slash < 0 {
		return nil, nil, true, &Error{Reason: TopicFilterInvalid, Msg: "shared subscription " + quoteTrunc(f) + " has no topic filter after the share name"}
	}
	group, filter = rest[:slash:slash], rest[slash+1:]
	if len(group) == 0 { // [MQTT-4.8.2-1]
		return nil, nil, true, &Error{Reason: TopicFilterInvalid, Msg: "shared subscription has an empty share name"}
	}
	if i := bytes.IndexAny(group, "+#"); i >= 0 { // [MQTT-4.8.2-2]
		return nil, nil, true, &Error{Reason: TopicFilterInvalid, Msg: "shared subscription share name contains '" + string(rune(group[i])) + "'"}
	}
	if i, what := utf8Problem(group); i >= 0 {
		return nil, nil, true, &Error{Reason: TopicFilterInvalid, Msg: "shared subscription share name " + what + " at byte " + itoa(i)}
	}
	if _, msg := topicFilterProblem(filter); msg != "" {
		return nil, nil, true, &Error{Reason: TopicFilterInvalid, Msg: "shared subscription topic filter: " + msg}
	}
	return group, filter, true, nil
}

// quoteTrunc quotes at most 64 bytes of s for an error message, escaping
// what is not printable so peer data cannot forge log lines.
func quoteTrunc(s []byte) string {
	if len(s) > 64 {
		return strconv.Quote(string(s[:64])) + "..."
	}
	return strconv.Quote(string(s))
}

// Match reports whether topic name topic matches topic filter filter
// [MQTT 4.7]. Both must be valid (see ValidTopicName, ValidTopicFilter);
// for a shared subscription pass the filter part from ParseShared.
//   - '+' matches exactly one level, which may be empty;
//   - '#' matches the parent level and any number of child levels, so
//     "sport/#" matches "sport" [MQTT 4.7.1.2];
//   - a filter starting with a wildcard does not match a topic starting
//     with '$' [MQTT-4.7.2-1];
//   - matching is byte for byte: no case folding or normalisation [MQTT-4.7.3-4].
//
// Match does not allocate.
func Match(filter, topic []byte) bool {
	if len(filter) == 0 || len(topic) == 0 {
		return false
	}
	if topic[0] == '$' && (filter[0] == '+' || filter[0] == '#') { // [MQTT-4.7.2-1]
		return false
	}
	fi, ti := 0, 0
	for {
		// Next filter level: filter[fi:fe].
		fe := fi
		for fe < len(filter) && filter[fe] != '/' {
			fe++
		}
		if fe-fi == 1 && filter[fi] == '#' {
			return true
		}
		te := ti
		for te < len(topic) && topic[te] != '/' {
			te++
		}
		if !(fe-fi == 1 && filter[fi] == '+') && !bytes.Equal(filter[fi:fe], topic[ti:te]) {
			return false
		}
		fdone, tdone := fe == len(filter), te == len(topic)
		switch {
		case fdone && tdone:
			return true
		case tdone:
			// The topic has no more levels: only a trailing "/#" matches.
			return len(filter)-fe == 2 && filter[fe+1] == '#'
		case fdone:
			return false
		}
		fi, ti = fe+1, te+1
	}
}
