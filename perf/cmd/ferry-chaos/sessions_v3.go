package main

import (
	"fmt"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/ferrymq/ferry/perf/internal/wire"
)

// MQTT 3.1.1 hoppers (--v3-every): the same operations as the MQTT 5 ones, over the harness's own v3.1.1
// client (mqtt.go), checked with the same register model:
//
//   - every CONNECT has CleanSession 0 — the first one too, on a client id never used, so its session does not
//     exist: a v3.1.1 CleanSession 1 session ends with its connection [MQTT-3.1.2-6], which the register does
//     not model. Session Present must be 1 exactly when the session existed [MQTT-3.2.2-2], 0 for the first;
//   - a SUBACK return code 0x80 is a failure (the outcome stays unknown, as a v5 refusal does);
//   - a v3.1.1 UNSUBACK carries no reason code, so an UNSUBSCRIBE's output is done: the model applies it and
//     checks nothing. What a v3.1.1 client's history can show is a session lost or resurrected (Session
//     Present), not a filter lost (deliveries to v3.1.1 clients are not checked yet).
//
// The old connection of a move is closed by the client once the new CONNACK is in (no one reads it), so the
// server sees the takeover or the close, whichever it handles first.
const v3Timeout = 15 * time.Second

func (h *hopper) connectV3(addr string) error {
	in := sessionOp{kind: 'c', addr: addr, after: h.after, v3: true}
	call := h.now()
	nc, err := dial(addr, "", 5*time.Second)
	if err != nil {
		return err
	}
	m, present, err := handshake(nc, wire.Connect{ClientID: h.id, KeepAlive: 60}, v3Timeout)
	h.after = ""
	if err != nil {
		h.recordUnknown(in, call)
		return fmt.Errorf("connect (v3.1.1) to %s: %w", addr, err)
	}
	h.record(in, call, present)
	if h.m != nil {
		h.m.close()
	}
	h.m, h.nc, h.addr = m, m.nc, addr
	return nil
}

// requestV3 sends pkt and reads frames until the ack of type want with h.pid; it answers any PUBLISH or PUBREL
// on the way.
func (h *hopper) requestV3(pkt []byte, want byte) (wire.Frame, error) {
	if err := h.m.write(pkt); err != nil {
		return wire.Frame{}, err
	}
	_ = h.m.nc.SetReadDeadline(time.Now().Add(v3Timeout))
	defer h.m.nc.SetReadDeadline(time.Time{})
	for {
		f, err := h.m.next()
		if err != nil {
			return f, err
		}
		switch f.Type {
		case want:
			if pid, err := wire.AckPID(f); err == nil && pid == h.pid {
				return f, nil
			}
		case wire.PUBLISH:
			if p, err := wire.ParsePublish(f); err == nil && p.QoS > 0 {
				_ = h.m.write(wire.AppendAck(nil, map[byte]byte{1: wire.PUBACK, 2: wire.PUBREC}[p.QoS], p.PID))
			}
		case wire.PUBREL:
			if pid, err := wire.AckPID(f); err == nil {
				_ = h.m.write(wire.AppendAck(nil, wire.PUBCOMP, pid))
			}
		}
	}
}

func (h *hopper) nextPID() uint16 {
	h.pid++
	if h.pid == 0 {
		h.pid = 1
	}
	return h.pid
}

func (h *hopper) subscribeV3(f int) error {
	in := sessionOp{kind: 's', f: f, addr: h.addr, v3: true}
	call := h.now()
	fr, err := h.requestV3(wire.AppendSubscribe(nil, h.nextPID(), 1, h.filter(f)), wire.SUBACK)
	if err != nil {
		h.recordUnknown(in, call)
		return fmt.Errorf("subscribe (v3.1.1) on %s: %w", h.addr, err)
	}
	if codes, err := wire.SubackCodes(fr); err != nil || len(codes) != 1 || codes[0] > 2 {
		h.recordUnknown(in, call)
		return fmt.Errorf("subscribe (v3.1.1) refused on %s: %v %v", h.addr, codes, err)
	}
	h.record(in, call, true)
	return nil
}

func (h *hopper) unsubscribeV3(f int) error {
	in := sessionOp{kind: 'u', f: f, addr: h.addr, v3: true}
	call := h.now()
	if _, err := h.requestV3(wire.AppendUnsubscribe(nil, h.nextPID(), h.filter(f)), wire.UNSUBACK); err != nil {
		h.recordUnknown(in, call)
		return fmt.Errorf("unsubscribe (v3.1.1) on %s: %w", h.addr, err)
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: h.n, Input: in, Call: call, Output: done{}, Return: h.now()})
	return nil
}

// done is the output of a v3.1.1 UNSUBSCRIBE: acknowledged, saying nothing about what was there.
type done struct{}
