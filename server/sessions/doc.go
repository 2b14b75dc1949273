// Package sessions is the sessions topic's state machine: what each record of a client means, the instance's
// index of them, and the decisions taken on that index — a CONNECT's (read your writes, takeover, the
// hand-over waited for; consistency.go), which instance publishes a will (wills.go, pending.go), a session's
// expiry, and the connection markers a compacted view keeps (conns.go). docs/sessions.md describes the records.
//
// The server's event loops and connections stay in package server and reach this package through Store's
// methods; the store reaches them through Host, and Kafka through Writer, both small interfaces it declares.
// Nothing here runs per message: the store is touched at CONNECT, at a connection's end, on QoS 2 packet-id
// steps and by the shared reader's sessions-topic records.
//
// Goroutines and locks: Store.OnRaw runs on the shared reader goroutine and never blocks. Store.mu guards the
// index and is taken alone: no Host method, Writer call or callback runs under it, and it is never taken with
// a session's lock held (Host.HeldEpoch takes the server's registry and session locks, without it).
//
// Files:
//
//	records.go      the record values of every key kind, and their decoding (the keys: internal/sessionkey)
//	store.go        Store, the index fed by the shared reader, and its writer; Host and Writer
//	consistency.go  a CONNECT's fence (its own owner record read back) and its decision
//	conns.go        connection markers ("c:" keys)
//	qos2.go         inbound QoS 2 ids waiting for PUBREL ("q:" keys)
//	wills.go        the processor's decisions: ends of dead instances' connections, expiry, a restart's own
//	pending.go      wills due at once kept in Kafka from their claim to their publication ("p:" keys); claims
//	peers.go        the instances' heartbeats, as redirect reads them
package sessions
