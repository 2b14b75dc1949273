package server

import (
	"errors"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/payload"
)

// Payload contracts (--payload rules, server/payload): a PUBLISH whose topic a rule matches is checked, and
// possibly converted, on the loop before it is handed to Kafka (onPublish); records of rules with deliver=json
// are turned back into JSON once per record before fan-out (deliverRecord), before the retained index stores
// them (onRetained), on a session's replay (replayOne) and on a shared subscription's group reader, by the
// server's payload.Held (srv.held), which holds a record whose schema id is being fetched meanwhile, and the
// later records of its partition (server/payload/hold.go). Without rules cfg.payload and srv.held are nil
// and each path costs one nil check.
//
// Refusals. A payload that breaks its contract gets PUBACK/PUBREC 0x99 Payload Format Invalid with the first
// validation error as reason string (v5 QoS 1/2); a v5 QoS 0 one is dropped. A v3 client cannot be told: with
// PayloadV3Disconnect the connection closes (counted as a protocol error), at any QoS; else the PUBLISH is
// acknowledged and dropped, as for an authorization denial (authz.go). A rule whose registry schema is not
// loaded yet refuses v5 QoS 1/2 with 0x83 Implementation Specific Error ("the PUBLISH is valid but the receiver
// is not willing to accept it") and a reason string saying which subject and why; a v3 QoS 1/2 client is
// disconnected without its ack, so it sends again (as when Kafka fails a write); QoS 0 is dropped. Every
// refusal is counted per rule and reason (payload.Set.Stats) and logged, rate-limited, with the client id and
// the error.

// Payload sets the payload contracts and what happens to a v3 client's invalid payload: disconnect (true) or
// acknowledge and drop (false, the default). Default: no contracts. The caller starts and closes the Set.
func Payload(set *payload.Set, v3Disconnect bool) Opt {
	return opt(func(c *cfg) { c.payload, c.payloadV3Disconnect = set, v3Disconnect })
}

// checkPayload runs rule's contract on p's payload and appends what goes to Kafka to r.buf. It reports false
// when the publish was refused (and answered); r is then still the caller's to release. Runs on the loop.
func (c *conn) checkPayload(p *mqttcodec.Publish, rule int, r *pubReq) (ok bool, err error) {
	if p.Retain && len(p.Payload) == 0 {
		return true, nil // clears the topic's retained message [MQTT-3.3.1-6]: no payload to check
	}
	set := c.l.srv.cfg.payload
	var vs *kafkamux.ValueSchema
	r.buf, vs, err = set.Ingest(rule, r.buf, p.Payload)
	if err == nil {
		r.pub.Msg.Schema = vs
		return true, nil
	}
	srv := c.l.srv
	srv.warn("publish refused by its payload rule", "client", c.clientID(), "rule", set.Filter(rule), "err", err)
	var un *payload.Unavailable
	unavailable := errors.As(err, &un)
	why := err.Error()
	v3 := c.version < mqttcodec.Version5
	switch {
	case v3 && !unavailable && srv.cfg.payloadV3Disconnect:
		c.closeWhy = closeProtocolError // the configured action, at any QoS
		c.close()
		return false, nil
	case p.QoS == 0:
		return false, nil // dropped; counted by the Set
	case v3 && unavailable:
		c.closeWhy = closeKafkaError // not acknowledged: the client sends it again
		c.close()
		return false, nil
	case unavailable:
		return false, c.queueDenied(p, mqttcodec.ImplementationSpecificError, why)
	default:
		return false, c.queueDenied(p, mqttcodec.PayloadFormatInvalid, why) // v3: a positive ack
	}
}

// queueDenied answers a refused QoS 1/2 PUBLISH in order with the others [MQTT-4.6.0-2]. Runs on the loop.
func (c *conn) queueDenied(p *mqttcodec.Publish, reason mqttcodec.ReasonCode, why string) error {
	if len(why) > 256 {
		why = why[:256] // a reason string is for people; the log has the rest
	}
	if c.toKafka() == 0 {
		c.writeDeniedAck(p.QoS, p.PacketID, reason, why)
		return nil
	}
	d := acquirePub()
	d.c, d.id, d.qos = c, p.PacketID, p.QoS
	d.deny, d.denyWhy = reason, why
	d.state.Store(reqDenied)
	c.pushPub(d)
	c.pauseIfFull()
	return nil
}

// holdHost is the server as its payload.Held (srv.held) sees it: deliver=json records, held while their
// schema id is fetched, are fanned out (deliver.go) and retained messages replaced (retained.go) through it.
type holdHost struct{ srv *Server }

func (h holdHost) FanOut(k tp, off int64, m *kafkamux.Message, skip bool) {
	h.srv.fanOut(k, off, m, skip)
}
func (h holdHost) ReplaceRetained(old, m *kafkamux.Message) { h.srv.retained.Replace(old, m) }
func (h holdHost) Warn(msg string, args ...any)             { h.srv.warn(msg, args...) }

// checkWill runs a will message's payload through its topic's contract: it returns the message to publish (a
// converted copy when the rule converts) or false when the will breaks the contract or its schema is not
// loaded, in which case it is not published (counted and logged). Runs on any goroutine.
func (srv *Server) checkWill(m *kafkamux.Message) (*kafkamux.Message, bool) {
	set := srv.cfg.payload
	rule := set.Match(m.Topic)
	if rule < 0 {
		return m, true
	}
	out, vs, err := set.Ingest(rule, nil, m.Payload)
	if err != nil {
		srv.warn("will message not published: its payload breaks its payload rule", "client", m.ClientID, "rule", set.Filter(rule), "err", err)
		return nil, false
	}
	cp := *m
	cp.Payload, cp.Schema = out, vs
	if vs != nil && vs.Binary {
		cp.HasPayloadFormat = false
	}
	return &cp, true
}

// PayloadHeld returns the records held for their schema now, ever, and released unchanged because their
// partition held too many (payload.Held).
func (srv *Server) PayloadHeld() (now int64, total, lost uint64) {
	if srv.held == nil {
		return 0, 0, 0
	}
	return srv.held.Stats()
}

// PayloadStats returns the counters of the payload rules and of failed schema registry requests (nil, 0
// without rules).
func (srv *Server) PayloadStats() ([]payload.RuleStats, uint64) {
	if srv.cfg.payload == nil {
		return nil, 0
	}
	return srv.cfg.payload.Stats()
}
