package server

import (
	"context"
	"fmt"
	"time"

	"github.com/ferrymq/ferry/mqttcodec"
)

// Drain prepares a graceful stop: new CONNECTs are refused (CONNACK 0x88 / v3 return code 3), every v5
// client is told DISCONNECT 0x8B Server Shutting Down and every connection is closed on its loop, which writes
// the final delivery offsets of persistent sessions. It returns when no client is connected or ctx ends. Call
// Stop afterwards, then flush Kafka.
func (srv *Server) Drain(ctx context.Context) error {
	srv.draining.Store(true)
	srv.announceDraining(ctx) // with redirect: peers stop sending clients here before they are sent there
	srv.regMu.Lock()
	var conns []*conn
	for _, sess := range srv.sessions {
		sess.mu.Lock()
		if sess.c != nil {
			conns = append(conns, sess.c)
		}
		sess.mu.Unlock()
	}
	srv.regMu.Unlock()
	for _, c := range conns {
		c.shutDown()
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for srv.metrics.sessionsConnected.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot drain: %d clients still connected: %w", srv.metrics.sessionsConnected.Load(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Ready reports whether the instance should receive traffic, and if not, why.
func (srv *Server) Ready() (bool, string) {
	switch {
	case srv.draining.Load():
		return false, "draining"
	case !srv.RetainedReady():
		return false, "loading retained messages"
	case srv.cfg.payload != nil:
		return srv.cfg.payload.Ready() // a payload rule whose registry schema is not loaded (contract.go)
	}
	return true, ""
}

// shutDown ends c because the server stops: v5 clients are told 0x8B [MQTT-3.14.2-1]. The will is published,
// as for any end the client did not ask for. Runs on any goroutine; the work is done on c's loop
// (shutDownNow).
func (c *conn) shutDown() { c.l.post(task{c: c, kind: taskShutDown}) }

// shutDownNow is shutDown's work. Runs on the loop.
func (c *conn) shutDownNow() {
	if c.closed {
		return
	}
	if c.version >= mqttcodec.Version5 && c.phase == phaseConnected {
		if ref := c.drainTarget(); ref != "" {
			// With redirect, the client is sent to the instance that owns its shard now (redirect.go).
			c.sendDisconnectRef(mqttcodec.UseAnotherServer, "", ref)
			c.l.srv.metrics.limits.drainRedirects.Add(1)
		} else {
			c.sendDisconnect(mqttcodec.ServerShuttingDown, "server shutting down")
		}
	}
	c.closeWhy = closeShutdown
	c.close()
}
