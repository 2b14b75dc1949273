package sessions

import "github.com/ferrymq/ferry/internal/sessionkey"

// SetQoS2 records in the index that a client's inbound QoS 2 id is (or no longer is) waiting for PUBREL,
// before the reader reads the record back. The set is replaced, never changed in place: lookups hand out
// copies of stored that share it.
func (st *Store) SetQoS2(id string, pid uint16, on bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.clients[id]
	if c == nil {
		if !on {
			return
		}
		c = &Stored{}
		st.clients[id] = c
	}
	c.Q2 = withQoS2(c.Q2, pid, on)
}

// withQoS2 returns a copy of set with pid added or removed; nil when empty.
func withQoS2(set map[uint16]struct{}, pid uint16, on bool) map[uint16]struct{} {
	if _, ok := set[pid]; ok == on {
		return set
	}
	return withEntry(set, pid, struct{}{}, on)
}

// withEntry returns a copy of m with k set to v (on) or removed; nil when empty. The index's maps are shared
// by the copies lookup hands out, so they are replaced, never changed in place.
func withEntry[K comparable, V any](m map[K]V, k K, v V, on bool) map[K]V {
	out := make(map[K]V, len(m)+1)
	for key, val := range m {
		out[key] = val
	}
	if on {
		out[k] = v
	} else {
		delete(out, k)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// onQoS2Record applies a "q:" record read from the sessions topic. Runs on the reader goroutine.
func (st *Store) onQoS2Record(key string, value []byte, part int32) {
	id, pid, ok := sessionkey.ParseQoS2(key[2:])
	if !ok {
		st.host.Warn("skipping sessions record with an unknown key", "key", key)
		return
	}
	if value != nil {
		if _, err := Decode[QoS2Rec](value); err != nil {
			st.host.Warn("skipping sessions record that cannot be read", "key", key, "err", err)
			return
		}
	}
	st.update(id, part, value != nil, func(c *Stored) { c.Q2 = withQoS2(c.Q2, pid, value != nil) })
}
