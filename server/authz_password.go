package server

import (
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/auth"
)

// User name / password CONNECTs (auth/passwords.go) off the event loop.
//
// A bcrypt comparison takes tens of milliseconds of CPU: done on the loop it would stall every connection of
// the loop. So a CONNECT from a user of the password file is parked (phaseLoading: its later packets stay
// unread), its bytes are copied, and the comparison runs on a small pool (auth.CheckPool): at most one
// goroutine per two CPUs at once, started only while there is work, with up to auth.CheckQueueMax CONNECTs
// waiting. Past that the CONNECT is refused with 0x89 Server Busy (v3: return code 3) at once: a reconnect
// storm costs a bounded queue, not a goroutine per client. The result goes back to the connection's loop
// (runOnLoop), which decodes the copied CONNECT again and goes on as for any CONNECT, with the principal
// already known.

// authPending is what authenticate returns for a CONNECT whose password is being checked off the loop. It is
// not a reason code of the protocol: it never reaches the wire.
const authPending mqttcodec.ReasonCode = 0xFF

// checkPassword parks c's CONNECT while the pool checks its password, and returns authPending, or 0x89 when
// the pool's queue is full. Runs on the loop, within handle: l.connFH and l.connBody are the CONNECT's bytes.
func (c *conn) checkPassword(pol *auth.Policy, p *mqttcodec.Connect) mqttcodec.ReasonCode {
	l := c.l
	fh, raw := l.connFH, append([]byte(nil), l.connBody...)
	user, pass := append([]byte(nil), p.Username...), append([]byte(nil), p.Password...)
	ok := l.srv.pw.Submit(func() {
		pr, err := pol.VerifyPassword(user, pass) // bcrypt: this is why it is not on the loop
		c.runOnLoop(func() {
			if c.closed || c.phase != phaseLoading {
				return
			}
			if err != nil {
				l.srv.debug("refusing CONNECT: authentication failed", "err", err)
			}
			c.phase = phaseAwaitConnect
			c.pwDone, c.auth = true, pr // nil when refused: authenticate answers 0x86
			l.conn.Reset()
			if err := l.conn.Decode(fh, raw); err != nil {
				c.protocolError(err) // it decoded once: cannot happen
			} else if err := c.onConnect(&l.conn); err != nil {
				c.protocolError(err)
			}
			if !c.closed {
				c.service() // the packets that came behind the CONNECT
			}
		})
	})
	if !ok {
		l.srv.warn("refusing CONNECT: too many password checks waiting", "queued", auth.CheckQueueMax)
		return mqttcodec.ServerBusy // v3: return code 3
	}
	c.phase = phaseLoading // no packet is read until the check is done
	return authPending
}
