package server

// wheel is a one-second timing wheel owned by an event loop. Every open connection sits in exactly one slot,
// at a time no later than its deadline (CONNECT timeout, or 1.5 × keep-alive after the last packet). When its
// slot comes round the connection checks its real deadline and either times out or goes back into the wheel:
// re-arming on every packet would cost more than this lazy check once per keep-alive period.
type wheel struct {
	slots [wheelSlots][]*conn
	at    int64 // the second whose slot is processed next
}

const wheelSlots = 512

func (w *wheel) init(now int64) { w.at = now }

// schedule puts c into the slot for the second when, clamped to the wheel's horizon. An earlier entry of c
// becomes stale and is skipped when its slot comes round.
func (w *wheel) schedule(c *conn, when int64) {
	if when < w.at {
		when = w.at
	}
	if when >= w.at+wheelSlots {
		when = w.at + wheelSlots - 1
	}
	c.wheelAt = when
	i := when % wheelSlots
	w.slots[i] = append(w.slots[i], c)
}

// advance processes every slot up to and including now.
func (w *wheel) advance(now int64, check func(*conn)) {
	for ; w.at <= now; w.at++ {
		i := w.at % wheelSlots
		due := w.slots[i]
		if len(due) == 0 {
			continue
		}
		w.slots[i] = nil
		for j, c := range due {
			due[j] = nil
			if (!c.closed || c.phase == phaseLinger) && c.wheelAt == w.at {
				check(c)
			}
		}
		if w.slots[i] == nil && cap(due) <= 1024 {
			w.slots[i] = due[:0] // reuse the slice next time round
		}
	}
}
