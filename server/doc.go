// Package server is Ferry's MQTT front end: gnet event loops own every plain TCP connection, decode packets in
// place with mqttcodec, run the session state machine, hand MQTT messages to Kafka through offload's lanes,
// and reach the rest of Kafka through the interfaces of kafka.go. No goroutine is started per connection, and
// no loop ever waits for Kafka.
//
// # File map
//
// The server and its loops:
//
//	server.go       Server, New, Start/Stop, the gnet engine; will publishing; logging helpers
//	options.go      Opt and every option, with defaults and validation
//	loop.go         one event loop's state and service, the one way back onto it: notify (completions and
//	                deliveries; the urgent list before a fan-out's), lane back-pressure (block/unblock), the
//	                one-second tick
//	task.go         one-off work handed back to a connection's loop (post, runOnLoop)
//	kafka.go        Kafka: the small interfaces the server reaches Kafka through, besides the lanes
//	keepalive.go    the loop's timing wheel: CONNECT timeouts and keep-alive
//	metrics.go      counters and histograms; stages.go: the per-stage latency of publishes and deliveries
//	drain.go        graceful drain before a stop
//
// One connection, from its bytes to its packets:
//
//	conn.go         conn, OnOpen/OnTraffic/OnClose, packet dispatch, protocol errors, the write step
//	conn_io.go      reading and writing through the listener's transport (server/transport)
//	refuse.go       refuse: the one constructor of a refused packet's error and reason code
//	linger.go       lingering close, so a client can read the DISCONNECT that ends it
//	limits.go       connection rate per address (the table: server/ratelimit), publish rate per connection
//	authz.go        authentication and topic authorization (package auth); authz_password.go: a CONNECT parked
//	                while its bcrypt check runs off the loop (on auth.CheckPool)
//	redirect.go     redirect and sharding over the live instances (their heartbeats: server/sessions)
//
// Inbound messages, MQTT → Kafka:
//
//	publish.go      PUBLISH: checks, the copy into a pooled request, the hand-off to the loop's lane, acks in order
//	qos2.go         the QoS 2 handshake and its packet-id records (key format: internal/sessionkey)
//	routing.go      --route: which Kafka topic a message goes to, a refused one answered, the routed topics
//	                followed (rules, routed topics' creation and discovery: server/route)
//	contract.go     --payload: a PUBLISH checked or converted before the hand-off, a record turned back into JSON
//	                (records held while their schema id is fetched: payload.Held, in server/payload)
//
// Outbound messages, Kafka → MQTT:
//
//	deliver.go      a record from the shared reader matched (trie.go) and queued on the matching sessions
//	trie.go         the subscription index (on server/topictree)
//	retained.go     retained messages: the retained topic read into the index (server/retained), SUBSCRIBEs
//	                held while it loads
//	alias_out.go    outbound topic aliases on a connection's PUBLISHes (the table: server/topicalias)
//	share.go        shared subscriptions, the MQTT side: SUBSCRIBE, a session as a share group
//	                member, the server as the groups' host (the groups and their Kafka side: server/share)
//	readlag.go      how late the shared reader receives records; QoS 0 shed at ingest while it lags
//
// Sessions (state in the sessions topic, docs/sessions.md; what its records mean and the decisions taken on
// them — the index, a CONNECT's fence and decision, hand-offs, wills, expiry, connection markers — are
// server/sessions's; what acts on a connection or a session stays here):
//
//	connect.go      CONNECT and DISCONNECT: session present, takeover, resume
//	consistency.go  a CONNECT parked until its own owner record is read back, then acted on as decided
//	newest.go       the CONNECTs not answered yet: an older one a newer CONNECT superseded is refused
//	subscribe.go    SUBSCRIBE and UNSUBSCRIBE
//	session.go      a session and its delivery queue; flight.go: its packet-id state
//	store.go        the server as sessions.Store's host; delivery positions as the records hold them
//	persist.go      what a session saves (its records), a hand-over, a resume
//	wills.go        a connection's claims, the wills this instance won published; heartbeats, the processor
//	wills_pending.go  wills due at once published from their pending record; an owner record written again
//	                after a late record of an older connection
//	alone.go        unrecorded connections while the instance is alone on its sessions topic
//
// Sub-packages, each behind small interfaces of its own: sessions (the sessions topic's state machine, above),
// transport (the TCP/TLS/WebSocket/PROXY layer stack;
// which listener accepted a connection; SO_REUSEPORT kept exclusive), topictree (the tree of topic levels under
// both indexes), retained (the retained-message index), topicalias (a connection's outbound topic aliases),
// share (shared subscriptions' groups and their Kafka consumer or share groups), auth (identities, roles, topic
// patterns; the pool of password checks), route (--route rules and the Kafka topics they write to), payload
// (--payload rules, and the records held while their schema id is fetched), ratelimit (the connection-rate
// table). The Ps reserved for the loops (GOMAXPROCS) are internal/procs's.
package server
