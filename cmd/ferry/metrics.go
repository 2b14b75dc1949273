package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server"
)

// instance is what /metrics and /readyz read. off and mux may be nil in tests of the server alone.
type instance struct {
	srv *server.Server
	off *offload.Offload
	mux *kafkamux.Mux
	gc  *gcTuner // nil in tests without the binary's tuner
}

// ready reports whether the instance should get new clients: not draining, retained messages loaded, and
// Kafka answering (kafkamux.Mux.Healthy).
func (in instance) ready() (bool, string) {
	if ok, why := in.srv.Ready(); !ok {
		return false, why
	}
	if in.mux != nil {
		if ok, why := in.mux.Healthy(); !ok {
			return false, why
		}
	}
	return true, ""
}

// appendMetrics appends every metric of the instance in Prometheus text format. The names, types and labels
// are documented in docs/operations.md ("Metrics"); keep both in step. Labels are listeners, Kafka topics,
// QoS levels, event loops and reason codes: bounded by the configuration and the protocol, never by clients.
func (in instance) appendMetrics(dst []byte) []byte {
	p := &promWriter{b: dst}
	s := in.srv.Metrics().Snapshot()
	st := in.srv.State()

	p.family("ferry_build_info", "gauge", "Always 1; the version label names the running build.")
	p.u("ferry_build_info", 1, "version", version, "go", runtime.Version())
	ready, _ := in.ready()
	p.family("ferry_ready", "gauge", "1 when /readyz answers 200: not draining, retained messages loaded, Kafka answering.")
	p.u("ferry_ready", b2u(ready))

	// Connections, per listener.
	ls := in.srv.Metrics().Listeners()
	p.family("ferry_connections_current", "gauge", "MQTT network connections open now, CONNECT received or not.")
	for _, l := range ls {
		p.i("ferry_connections_current", l.Current, "listener", l.Listener)
	}
	p.family("ferry_connections_opened_total", "counter", "MQTT network connections accepted.")
	for _, l := range ls {
		p.u("ferry_connections_opened_total", l.Opened, "listener", l.Listener)
	}
	p.family("ferry_connections_closed_total", "counter", "MQTT network connections ended, by reason.")
	for _, l := range ls {
		for r, n := range l.Closed {
			if r == 0 {
				continue // "unknown" is never counted: every end has a reason
			}
			p.u("ferry_connections_closed_total", n, "listener", l.Listener, "reason", server.CloseReasonNames[r])
		}
	}
	p.family("ferry_connects_refused_total", "counter", "CONNECTs answered with a failure CONNACK, by MQTT 5 reason code (v3 clients get the matching return code).")
	writeCodes(p, "ferry_connects_refused_total", s.Refused)
	p.family("ferry_protocol_errors_total", "counter", "Connections closed on a malformed or forbidden packet, by MQTT 5 reason code.")
	writeCodes(p, "ferry_protocol_errors_total", s.ProtocolErrorsByCode)
	p.family("ferry_transport_errors_total", "counter", "Connections closed on a TLS, WebSocket or PROXY protocol failure.")
	p.u("ferry_transport_errors_total", s.TransportErrors)
	p.family("ferry_lingering_connections", "gauge", "Sockets in a lingering close: the reason is sent, the client's bytes are read and discarded until it closes or --linger-timeout.")
	p.i("ferry_lingering_connections", s.Lingering)
	p.family("ferry_linger_skipped_total", "counter", "Closes that would have lingered but found --max-lingering sockets lingering already, and closed at once.")
	p.u("ferry_linger_skipped_total", s.LingerSkipped)
	lim := in.srv.Metrics().Limits() // rate limits and redirects; their refusals are counted by code above
	p.family("ferry_publish_throttled_total", "counter", "Times a connection was paused (not read until its loop's next tick) for exceeding --max-publish-rate.")
	p.u("ferry_publish_throttled_total", lim.PublishThrottled)
	p.family("ferry_connection_rate_evictions_total", "counter", "Source addresses still limited by --max-connection-rate that the full rate table forgot to make room for others.")
	p.u("ferry_connection_rate_evictions_total", lim.ConnectionRateEvictions)
	p.family("ferry_drain_redirects_total", "counter", "v5 clients a drain sent to another instance (DISCONNECT 0x9C with a Server Reference) instead of 0x8B.")
	p.u("ferry_drain_redirects_total", lim.DrainRedirects)

	// Sessions, subscriptions, retained messages.
	p.family("ferry_sessions_connected", "gauge", "Sessions with a connected client (CONNACK sent).")
	p.i("ferry_sessions_connected", s.SessionsConnected)
	p.family("ferry_sessions_local", "gauge", "Sessions held by this instance: connected ones and persistent ones whose client is away.")
	p.i("ferry_sessions_local", int64(st.SessionsLocal))
	p.family("ferry_sessions_known", "gauge", "Clients the sessions topic knows, connected to any instance or away.")
	p.i("ferry_sessions_known", int64(st.SessionsKnown))
	p.family("ferry_sessions_expired_total", "counter", "Persistent sessions that expired while their client was away.")
	p.u("ferry_sessions_expired_total", s.SessionsExpired)
	p.family("ferry_takeovers_total", "counter", "Connections closed because their client id connected again (0x8E), here or on another instance.")
	p.u("ferry_takeovers_total", s.Takeovers)
	p.family("ferry_connects_unrecorded_total", "counter", "CONNECTs accepted without an owner record in the sessions topic: nothing to keep (clean, no expiry, no will) and no other instance alive.")
	p.u("ferry_connects_unrecorded_total", s.Unrecorded)
	p.family("ferry_qos2_state_records_total", "counter", "Delivery records written to the sessions topic before a persistent session's QoS 2 PUBLISH or PUBREL went out (each carries every step waiting).")
	p.u("ferry_qos2_state_records_total", s.HeldSaves)
	p.family("ferry_subscriptions", "gauge", "Subscriptions in this instance's index, offline persistent sessions' included.")
	p.i("ferry_subscriptions", int64(st.Subscriptions))
	p.family("ferry_subscriptions_refused_total", "counter", "Topic filters refused by the per-session subscription limit (0x97).")
	p.u("ferry_subscriptions_refused_total", s.RefusedSubs)
	share := in.srv.ShareStats()
	p.family("ferry_shared_subscription_mode", "gauge", "1 for the mode serving shared subscriptions (--shared-subscriptions; auto resolved at start): share-group or consumer-group.")
	p.u("ferry_shared_subscription_mode", 1, "mode", share.Mode)
	p.family("ferry_share_groups", "gauge", "Share groups ($share/name/filter) with members on this instance.")
	p.i("ferry_share_groups", int64(share.Groups))
	p.family("ferry_share_kafka_connections", "gauge", "Kafka connections held by the share groups' clients (consumer or share group members).")
	p.i("ferry_share_kafka_connections", int64(share.KafkaConnections))
	p.family("ferry_share_records_total", "counter", "Share-group mode records settled other than by a member's acknowledgement: poison (rejected after --share-delivery-limit deliveries), released (member left or --share-hold passed), held_too_long (of released), ack_error (Kafka refused the acknowledgement).")
	p.u("ferry_share_records_total", share.PoisonRejected, "outcome", "poison")
	p.u("ferry_share_records_total", share.Released, "outcome", "released")
	p.u("ferry_share_records_total", share.HeldTooLong, "outcome", "held_too_long")
	p.u("ferry_share_records_total", share.AckErrors, "outcome", "ack_error")
	p.family("ferry_retained_messages", "gauge", "Retained messages in the index.")
	p.i("ferry_retained_messages", int64(st.Retained))
	p.family("ferry_wills_total", "counter", "Will messages handed to Kafka.")
	p.u("ferry_wills_total", s.WillsSent)

	// Messages.
	p.family("ferry_messages_in_total", "counter", "PUBLISH packets received from clients, by QoS.")
	for q, n := range s.PublishesIn {
		p.u("ferry_messages_in_total", n, "qos", strconv.Itoa(q))
	}
	p.family("ferry_messages_out_total", "counter", "PUBLISH packets sent to subscribers (first sends, not DUP re-sends), by QoS.")
	for q, n := range s.PublishesOut {
		p.u("ferry_messages_out_total", n, "qos", strconv.Itoa(q))
	}
	p.family("ferry_bytes_in_total", "counter", "MQTT bytes read from clients (whole packets).")
	p.u("ferry_bytes_in_total", s.BytesIn)
	p.family("ferry_bytes_out_total", "counter", "MQTT bytes written to clients.")
	p.u("ferry_bytes_out_total", s.BytesOut)
	p.family("ferry_dropped_total", "counter", "Messages dropped, by reason.")
	for i, n := range server.DropReasonNames {
		p.u("ferry_dropped_total", s.Drops[i], "reason", n)
	}
	p.family("ferry_auth_denied_total", "counter", "Authorization refusals: publishes, subscriptions, deliveries and will topics outside a client's privileges.")
	for i, n := range server.AuthDeniedNames {
		p.u("ferry_auth_denied_total", s.AuthDenied[i], "what", n)
	}
	p.family("ferry_route_refused_total", "counter", "Publishes and wills refused by the route rules (--route), by reason.")
	for i, n := range server.RouteRefusedNames {
		p.u("ferry_route_refused_total", s.RouteRefused[i], "reason", n)
	}
	p.family("ferry_route_misrouted_total", "counter", "Records read from a Kafka topic their MQTT topic does not route to, skipped.")
	p.u("ferry_route_misrouted_total", s.Misrouted)
	p.b = appendPayloadMetrics(p.b, in.srv) // payload.go

	// Where a message's time goes (server/stages.go).
	p.family("ferry_publish_stage_seconds", "histogram", "QoS 1/2 PUBLISH latency by stage: queued (decoded → handed to the Kafka producer), kafka (→ acknowledged by Kafka), ack (→ PUBACK/PUBREC written).")
	for i, h := range in.srv.Metrics().PublishStages() {
		p.histogram("ferry_publish_stage_seconds", h, "stage", server.PublishStageNames[i])
	}
	p.family("ferry_delivery_stage_seconds", "histogram", "Delivery latency by stage: read (record timestamp, in Kafka's milliseconds → received by the shared reader), write (→ PUBLISH written to the subscriber).")
	for i, h := range in.srv.Metrics().DeliveryStages() {
		p.histogram("ferry_delivery_stage_seconds", h, "stage", server.DeliveryStageNames[i])
	}
	p.family("ferry_gomaxprocs", "gauge", "GOMAXPROCS: the runtime's default plus one P per event loop, so Go's network poller always has one (docs/architecture.md).")
	p.f("ferry_gomaxprocs", float64(runtime.GOMAXPROCS(0)))

	// Event loops and their Kafka lanes.
	p.family("ferry_event_loop_lag_seconds", "histogram", "How late an event loop ran its one-second tick: time queued behind the loop's other work.")
	p.histogram("ferry_event_loop_lag_seconds", in.srv.Metrics().LoopLag())
	p.family("ferry_event_loop_lag_max_seconds", "gauge", "Longest tick lag of each event loop over the current and the previous minute.")
	for i, d := range in.srv.LoopLagMax() {
		p.f("ferry_event_loop_lag_max_seconds", d.Seconds(), "loop", strconv.Itoa(i))
	}
	p.family("ferry_read_lag_seconds", "gauge", "The shared reader's lag: the shortest wait from a record's timestamp to the reader among the records it received in the last 10 ms, while it has a backlog (0 at the end of what it reads, or with --read-lag-limit 0).")
	p.f("ferry_read_lag_seconds", in.srv.ReadLag().Seconds())
	p.family("ferry_read_lag_shed_ratio", "gauge", "Share of QoS 0 publishes each event loop drops at ingest while the shared reader lags past --read-lag-limit (counted as ferry_dropped_total{reason=\"read_lag\"}).")
	for i, r := range in.srv.ReadLagShed() {
		p.f("ferry_read_lag_shed_ratio", r, "loop", strconv.Itoa(i))
	}
	p.family("ferry_delivery_lag_seconds", "gauge", "The longest delivery lag of an event loop: the shortest wait, from the shared reader receiving a record to the loop writing it to a subscriber, among the deliveries it wrote in the last 10 ms, while one of them had at least 256 deliveries queued behind it in its session (0 otherwise, or with --read-lag-limit 0 or --qos0-hold off, which measure nothing). With ferry_read_lag_seconds it is what --qos0-hold holds QoS 0 publishers for.")
	p.f("ferry_delivery_lag_seconds", in.srv.DeliveryLag().Seconds())
	p.family("ferry_qos0_holds_total", "counter", "Times an event loop stopped reading a connection whose next QoS 0 PUBLISH would be late (--qos0-hold), by reason: lane_delay (records wait for Kafka past --inflight-qos0-delay), read_lag (the shared reader's lag plus the event loops' delivery lag is past --read-lag-limit).")
	for i, n := range server.HoldReasonNames {
		p.u("ferry_qos0_holds_total", s.QoS0Holds[i], "reason", n)
	}
	if in.off != nil {
		lanes := make([]offload.Stats, in.off.Lanes())
		for i := range lanes {
			lanes[i] = in.off.Lane(i).Stats()
		}
		p.family("ferry_inflight_records", "gauge", "Records an event loop has handed to Kafka and not yet seen acknowledged (--inflight-records bounds it).")
		for i, l := range lanes {
			p.i("ferry_inflight_records", int64(l.InFlightRecords), "loop", strconv.Itoa(i))
		}
		p.family("ferry_inflight_limit_records", "gauge", "The record limit in force per event loop: --inflight-records, or lower while Kafka falls behind (--inflight-delay).")
		for i, l := range lanes {
			p.i("ferry_inflight_limit_records", int64(l.LimitRecords), "loop", strconv.Itoa(i))
		}
		p.family("ferry_inflight_qos0_limit_records", "gauge", "Records in flight per event loop above which a QoS 0 publish is dropped: --inflight-records, or lower while records wait for Kafka longer than --inflight-qos0-delay.")
		for i, l := range lanes {
			p.i("ferry_inflight_qos0_limit_records", int64(l.LimitQoS0), "loop", strconv.Itoa(i))
		}
		p.family("ferry_inflight_bytes", "gauge", "Bytes an event loop has in flight to Kafka (--inflight-bytes bounds it).")
		for i, l := range lanes {
			p.i("ferry_inflight_bytes", int64(l.InFlightBytes), "loop", strconv.Itoa(i))
		}
		p.family("ferry_inflight_full_total", "counter", "Publishes an event loop could not hand to Kafka at once because its in-flight budget was spent.")
		for i, l := range lanes {
			p.u("ferry_inflight_full_total", l.Full, "loop", strconv.Itoa(i))
		}
	}

	// Kafka.
	if in.mux != nil {
		ts := in.mux.TopicStats()
		p.family("ferry_kafka_records_produced_total", "counter", "Records Kafka acknowledged (acks=all), by topic.")
		for _, t := range ts {
			p.u("ferry_kafka_records_produced_total", t.Produced, "topic", t.Topic)
		}
		p.family("ferry_kafka_produce_errors_total", "counter", "Records Kafka did not take (after franz-go's retries, or refused), by topic.")
		for _, t := range ts {
			p.u("ferry_kafka_produce_errors_total", t.ProduceErrors, "topic", t.Topic)
		}
		p.family("ferry_kafka_produce_seconds", "histogram", "Time from handing a record to the producer until Kafka acknowledged or failed it, by topic.")
		for _, t := range ts {
			p.histogram("ferry_kafka_produce_seconds", t.ProduceLatency, "topic", t.Topic)
		}
		p.family("ferry_kafka_records_read_total", "counter", "Records the shared reader fetched, by topic.")
		for _, t := range ts {
			p.u("ferry_kafka_records_read_total", t.Read, "topic", t.Topic)
		}
		p.family("ferry_kafka_records_skipped_total", "counter", "Records read that are not MQTT messages (bad key or reserved header) and were skipped.")
		p.u("ferry_kafka_records_skipped_total", uint64(in.mux.Skipped()))
		p.family("ferry_kafka_connections", "gauge", "Open TCP connections to Kafka brokers (a constant of the configuration: at most 3 per broker).")
		p.i("ferry_kafka_connections", int64(in.mux.Connections()))
		up, _ := in.mux.Healthy()
		p.family("ferry_kafka_up", "gauge", "1 when Kafka answers and takes records (see /readyz), else 0.")
		p.u("ferry_kafka_up", b2u(up))
		p.family("ferry_kafka_last_response_seconds", "gauge", "Seconds since a Kafka broker last answered a request.")
		if age := in.mux.LastResponseAge(); age < 1<<62 {
			p.f("ferry_kafka_last_response_seconds", age.Seconds())
		}
	}

	if in.mux != nil {
		appendEmbeddedMetrics(p, in.mux)
	}

	// Process.
	p.family("go_goroutines", "gauge", "Goroutines that currently exist.")
	p.i("go_goroutines", int64(runtime.NumGoroutine()))
	sample := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/limiter/last-enabled:gc-cycle"}}
	metrics.Read(sample)
	p.family("go_memory_mapped_bytes", "gauge", "Memory mapped by the Go runtime (runtime/metrics /memory/classes/total:bytes).")
	p.u("go_memory_mapped_bytes", sampleUint(sample[0]))
	p.family("go_heap_objects_bytes", "gauge", "Bytes of live and not yet swept heap objects.")
	p.u("go_heap_objects_bytes", sampleUint(sample[1]))
	p.family("go_heap_live_bytes", "gauge", "Bytes of heap objects marked live by the last garbage collection.")
	p.u("go_heap_live_bytes", sampleUint(sample[2]))
	p.family("go_gc_cycles_total", "counter", "Garbage collections completed.")
	p.u("go_gc_cycles_total", sampleUint(sample[3]))
	p.family("go_gc_limiter_last_enabled_cycle", "gauge", "The last garbage collection during which the runtime capped the collector's CPU (about half) because the memory limit made it run back to back; 0 = never.")
	p.u("go_gc_limiter_last_enabled_cycle", sampleUint(sample[4]))
	p.family("ferry_memory_limit_bytes", "gauge", "Soft memory limit of the process (Go's memory limit; 0 = none): --memory-limit, GOMEMLIMIT, or derived from the retention bounds and byte budgets in standalone mode.")
	p.i("ferry_memory_limit_bytes", limitInForce(debug.SetMemoryLimit))
	if in.gc != nil {
		if ml := in.gc.plan.Load(); ml != nil {
			p.family("ferry_memory_limit_info", "gauge", "Always 1; source names where the memory limit comes from: flag, GOMEMLIMIT, derived or none.")
			p.u("ferry_memory_limit_info", 1, "source", ml.source)
		}
	}
	if rss, ok := residentBytes(); ok {
		p.family("process_resident_memory_bytes", "gauge", "Resident set size of the process.")
		p.u("process_resident_memory_bytes", rss)
	}
	return p.b
}

// writeCodes writes one sample per reason code that has been counted, labelled with the code and its name.
func writeCodes(p *promWriter, name string, m map[mqttcodec.ReasonCode]uint64) {
	for c := range 256 {
		if n, ok := m[mqttcodec.ReasonCode(c)]; ok {
			code := mqttcodec.ReasonCode(c)
			p.u(name, n, "code", "0x"+strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]),
				"reason", strings.ReplaceAll(code.String(), " ", "_"))
		}
	}
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func sampleUint(s metrics.Sample) uint64 {
	if s.Value.Kind() == metrics.KindUint64 {
		return s.Value.Uint64()
	}
	return 0
}

// residentBytes reads the resident set size from /proc (Linux only).
func residentBytes() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * uint64(os.Getpagesize()), true
}

// appendEmbeddedMetrics writes the embedded Kafka's disk, index and cleaning figures, as its cleaner measured
// them after its last pass (kafkamux.Mux.EmbeddedStats); nothing with --kafka-brokers. topic is the messages,
// retained or sessions topic, or "other" for routed topics together.
func appendEmbeddedMetrics(p *promWriter, mux *kafkamux.Mux) {
	es, ok := mux.EmbeddedStats()
	if !ok {
		return
	}
	p.family("ferry_embedded_kafka_disk_bytes", "gauge", "Bytes of the embedded Kafka's segment and index files, by topic (routed topics together as other).")
	for _, t := range es.Topics {
		p.i("ferry_embedded_kafka_disk_bytes", t.DiskBytes, "topic", t.Topic)
	}
	p.family("ferry_embedded_kafka_index_entries", "gauge", "Record batches the embedded Kafka holds, by topic: one in-memory index entry of "+
		strconv.Itoa(kafkamux.EmbeddedIndexEntryBytes)+" bytes each.")
	var entries int64
	for _, t := range es.Topics {
		p.i("ferry_embedded_kafka_index_entries", t.IndexEntries, "topic", t.Topic)
		entries += t.IndexEntries
	}
	p.family("ferry_embedded_kafka_index_memory_bytes", "gauge", "Estimated memory of the embedded Kafka's batch index, all topics.")
	p.i("ferry_embedded_kafka_index_memory_bytes", entries*kafkamux.EmbeddedIndexEntryBytes)
	p.family("ferry_embedded_kafka_records_deleted_total", "counter", "Records retention and compaction removed from the start of the embedded Kafka's logs since start, by topic.")
	for _, t := range es.Topics {
		p.u("ferry_embedded_kafka_records_deleted_total", t.RecordsDeleted, "topic", t.Topic)
	}
	p.family("ferry_embedded_kafka_clean_passes_total", "counter", "Retention and compaction passes of the embedded Kafka (--embedded-clean-interval).")
	p.u("ferry_embedded_kafka_clean_passes_total", es.Passes)
	p.family("ferry_embedded_kafka_clean_seconds", "histogram", "How long each retention or compaction pass held the embedded Kafka (produce and fetch wait meanwhile), by kind.")
	p.histogram("ferry_embedded_kafka_clean_seconds", es.Retention, "kind", "retention")
	p.histogram("ferry_embedded_kafka_clean_seconds", es.Compaction, "kind", "compaction")
	if !es.LastPass.IsZero() {
		p.family("ferry_embedded_kafka_last_clean_timestamp_seconds", "gauge", "Unix time the last retention and compaction pass ended.")
		p.f("ferry_embedded_kafka_last_clean_timestamp_seconds", float64(es.LastPass.UnixMilli())/1000)
		p.family("ferry_embedded_kafka_last_clean_duration_seconds", "gauge", "How long the last pass held the embedded Kafka (produce and fetch wait meanwhile).")
		p.f("ferry_embedded_kafka_last_clean_duration_seconds", es.LastDuration.Seconds())
	}
}
