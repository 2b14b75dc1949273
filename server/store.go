package server

import (
	"strconv"
	"strings"

	"github.com/ferrymq/ferry/server/sessions"
)

// The sessions topic (compacted) holds every per-client record, keyed "<kind>:<client id>" so a Kafka tool
// can read it and the kind never clashes with an id (documented in docs/sessions.md). All keys of one client
// share a partition: they are partitioned by the client id alone. The key format is internal/sessionkey's,
// shared with kafkamux's partitioner.

// storeHost is the server as the sessions store's host (sessions.Host): what reading the sessions topic tells
// it. Every method runs on the reader goroutine unless said otherwise.
type storeHost struct{ srv *Server }

func (h storeHost) Warn(msg string, args ...any)  { h.srv.warn(msg, args...) }
func (h storeHost) Debug(msg string, args ...any) { h.srv.debug(msg, args...) }
func (h storeHost) Error(msg string, args ...any) { h.srv.cfg.log.Error(msg, args...) }
func (h storeHost) WriteFailed()                  { h.srv.metrics.kafkaErrors.Add(1) }
func (h storeHost) NoteForeign()                  { h.srv.noteForeign() }

func (h storeHost) OwnerChanged(id string, o *sessions.OwnerRec)      { h.srv.ownerChanged(id, o) }
func (h storeHost) ConnectionEnded(id string, end *sessions.OwnerRec) { h.srv.connectionEnded(id, end) }
func (h storeHost) ReassertOwner(id string, o *sessions.OwnerRec)     { h.srv.reassertOwner(id, o) }

// HeldEpoch is the epoch of the connection of client id this instance holds, 0 if none. Takes regMu, then the
// session's lock.
func (h storeHost) HeldEpoch(id string) int64 {
	srv := h.srv
	srv.regMu.Lock()
	defer srv.regMu.Unlock()
	s := srv.sessions[id]
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return 0
	}
	return s.c.epoch
}

// offsetsJSON encodes delivery positions: the plain partition number for the messages topic (as before routes
// existed, so older records read the same), "<topic>/<partition>" for a routed topic (Kafka topic names have
// no '/').
func (srv *Server) offsetsJSON(m map[tp]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, o := range m {
		key := strconv.Itoa(int(k.p))
		if k.t != 0 {
			key = srv.routedName(k.t) + "/" + key
		}
		out[key] = o
	}
	return out
}

// offsetsFromJSON decodes delivery positions; those of routed topics this instance does not follow (yet) are
// left out (docs/sessions.md).
func (srv *Server) offsetsFromJSON(m map[string]int64) map[tp]int64 {
	out := make(map[tp]int64, len(m))
	for k, o := range m {
		topic, part := "", k
		if i := strings.LastIndexByte(k, '/'); i >= 0 {
			topic, part = k[:i], k[i+1:]
		}
		p, err := strconv.Atoi(part)
		if err != nil {
			continue
		}
		t, ok := srv.topicIndex(topic)
		if !ok {
			continue
		}
		out[tp{t, int32(p)}] = o
	}
	return out
}
