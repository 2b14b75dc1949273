package server

import (
	"errors"
	"unsafe"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/auth"
)

// Authentication and topic authorization: the server side of package auth.
//
// Without the Auth option every client is accepted with every privilege, and each hook below costs one nil
// check of conn.auth. With it:
//
//   - CONNECT from a user of the password file (--auth-passwords): its bcrypt hash is checked off the loop
//     (authz_password.go), the user name is the identity; a wrong password gets 0x86 / return code 4.
//   - CONNECT: the token (password or user name field) is verified on the loop; without a token, a verified
//     TLS client certificate's identity (conn.certIdentity, conn_io.go) gets the default role — a few µs of CPU for HS256,
//     tens of µs for ES256/RS256 (BenchmarkAuthVerify* in server/auth). A refused CONNECT gets v5 0x86 (bad
//     token) or 0x87 (no token, unusable identity, will topic not allowed); v3 return code 4 or 5. The
//     principal (identity + shared compiled grants, about 48 bytes plus the identity string) hangs off
//     conn.auth: one pointer per connection.
//   - PUBLISH outside the publish patterns: QoS 0 is dropped and counted; v5 QoS 1/2 get PUBACK/PUBREC 0x87;
//     v3.1.1 QoS 1/2 are acknowledged positively and dropped, which [MQTT-3.3.5-2] allows (the other choice,
//     closing the connection, makes a client with a persistent session re-send the same PUBLISH forever
//     after every reconnect). The ack keeps its place in the order of the PUBLISHes [MQTT-4.6.0-2].
//   - SUBSCRIBE: a filter is granted only if one subscribe pattern covers every topic it matches (a '#' or a
//     '+' at the identity level is refused where the pattern names the identity): v5 0x87, v3 0x80.
//   - Deny patterns (deny_publish, deny_subscribe) refuse inside what is allowed, and deny wins: a PUBLISH to
//     a denied topic gets the refusal above; a filter every topic of which is denied is refused; a wider
//     filter is granted but never delivers a denied topic (package auth, RoleRules).
//   - Delivery: every message written to the client — live, replayed, retained, re-sent — is checked against
//     the subscribe patterns (writePublish), so a subscription granted under older rules or to another
//     identity of the same client id receives nothing outside the current privileges. For a role that may
//     subscribe to '#' it is one comparison.
//
// Reloads: cmd/ferry swaps the Authority's Policy (SIGHUP). Each connection rebinds its principal to the new
// Policy at its next check (auth.Authority.Current), on its own loop; tokens are not verified again.
//
// Every function here runs on the connection's event loop.

// principal is an authenticated client (auth.Principal), kept in conn.auth; nil when authorization is off.
type principal = auth.Principal

// Auth turns on authentication and topic authorization with a's current Policy; a.Replace swaps in a new one
// at any time. Default: off, every client is accepted with every privilege.
func Auth(a *auth.Authority) Opt { return opt(func(c *cfg) { c.auth = a }) }

// Kinds of authorization denials, for ferry_auth_denied_total{what}.
const (
	deniedPublish   = iota // PUBLISH outside the publish patterns
	deniedSubscribe        // topic filter not covered by a subscribe pattern
	deniedDelivery         // message not delivered: its topic is outside the subscribe patterns
	deniedWill             // will topic outside the publish patterns (CONNECT refused)
	authDenials
)

// AuthDeniedNames are the label values of the authorization denials, by index.
var AuthDeniedNames = [authDenials]string{"publish", "subscribe", "delivery", "will"}

// authenticate checks a CONNECT's credentials and will topic, and keeps the principal in c.auth. It returns
// Success, the reason to refuse the CONNECT with, or authPending when a password is being checked off the
// loop (the CONNECT is handled again when the check is done, with c.pwDone set).
func (c *conn) authenticate(p *mqttcodec.Connect) mqttcodec.ReasonCode {
	srv := c.l.srv
	if srv.cfg.auth == nil {
		return mqttcodec.Success
	}
	pol := srv.cfg.auth.Policy()
	var pr *principal
	switch {
	case c.pwDone: // the password was checked off the loop (authz_password.go)
		if c.auth == nil {
			return mqttcodec.BadUserNameOrPassword // v3: return code 4
		}
		pr = c.auth
	case pol.IsPasswordUser(p.Username):
		return c.checkPassword(pol, p) // authPending, or 0x89 when too many wait
	default:
		var err error
		pr, err = pol.Authenticate(p.Username, p.Password, c.certIdentity())
		if err != nil {
			srv.debug("refusing CONNECT: authentication failed", "client", string(p.ClientID), "err", err)
			if errors.Is(err, auth.ErrBadCredentials) {
				return mqttcodec.BadUserNameOrPassword // v3: return code 4
			}
			return mqttcodec.NotAuthorized // v3: return code 5
		}
	}
	if p.WillFlag && !pr.MayPublish(unsafeString(p.WillTopic)) {
		srv.metrics.authDenied[deniedWill].Add(1)
		srv.debug("refusing CONNECT: will topic not authorized", "client", string(p.ClientID), "identity", pr.Identity())
		return mqttcodec.NotAuthorized
	}
	c.auth = pr
	return mqttcodec.Success
}

// current returns c's principal under the current Policy, rebinding it after a reload. c.auth is not nil.
func (c *conn) current() *principal {
	pr := c.l.srv.cfg.auth.Current(c.auth)
	c.auth = pr
	return pr
}

// mayPublish reports whether c may publish to topic. Callers check c.auth != nil first.
func (c *conn) mayPublish(topic []byte) bool {
	return c.current().MayPublish(unsafeString(topic))
}

// maySubscribe reports whether c may subscribe to filter, counting a refusal. Callers check c.auth != nil.
func (c *conn) maySubscribe(filter []byte) bool {
	if c.current().MaySubscribe(unsafeString(filter)) {
		return true
	}
	c.l.srv.metrics.authDenied[deniedSubscribe].Add(1)
	return false
}

// mayReceive reports whether a message on topic may be written to c, counting a refusal as a drop. Callers
// check c.auth != nil.
func (c *conn) mayReceive(topic string) bool {
	if c.current().MayReceive(topic) {
		return true
	}
	m := &c.l.srv.metrics
	m.authDenied[deniedDelivery].Add(1)
	m.dropped(dropDenied)
	return false
}

// denyPublish answers a PUBLISH c may not make (see the file comment). Its ack waits behind earlier
// publishes still on their way to Kafka, as a request in state reqDenied.
func (c *conn) denyPublish(p *mqttcodec.Publish) error {
	c.l.srv.metrics.authDenied[deniedPublish].Add(1)
	return c.refusePublish(p, mqttcodec.NotAuthorized, "not authorized") // routing.go
}

// writeDeniedAck writes the PUBACK/PUBREC of a refused publish: reason (0x87 for authorization, 0x90 for
// routing) for v5; positive for v3 [MQTT-3.3.5-2].
func (c *conn) writeDeniedAck(qos byte, id uint16, reason mqttcodec.ReasonCode, why string) {
	if c.version >= mqttcodec.Version5 {
		c.writeAck(ackFor(qos), id, reason, why)
		return
	}
	c.writeAck(ackFor(qos), id, mqttcodec.Success, "")
}

// unsafeString views b as a string for a check that keeps no reference to it.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
