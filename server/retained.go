package server

import (
	"sync"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
)

// retainedStore is the instance's index of retained messages, fed by the records it reads.
type retainedStore struct {
	mu   sync.RWMutex
	msgs map[string]*offload.Message
}

// set stores m as the retained message of its topic; an empty payload clears it [MQTT-3.3.1-6].
// Runs on the reader goroutine.
func (r *retainedStore) set(m *offload.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(m.Payload) == 0 {
		delete(r.msgs, m.Topic)
		return
	}
	if r.msgs == nil {
		r.msgs = make(map[string]*offload.Message)
	}
	r.msgs[m.Topic] = m
}

// match appends the retained messages whose topic matches filter.
func (r *retainedStore) match(filter []byte, dst []*offload.Message) []*offload.Message {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for t, m := range r.msgs {
		if mqttcodec.Match(filter, bytesOf(t)) {
			dst = append(dst, m)
		}
	}
	return dst
}

func (r *retainedStore) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.msgs)
}
