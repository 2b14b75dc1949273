package main

import (
	"fmt"
	"net/http"
	"net/http/pprof"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/server"
)

// adminHandler serves /healthz, /readyz and a first /metrics in Prometheus text format.
func adminHandler(srv *server.Server, mux *kafkamux.Mux, pprofOn bool) http.Handler {
	h := http.NewServeMux()
	if pprofOn {
		h.HandleFunc("/debug/pprof/", pprof.Index)
		h.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		h.HandleFunc("/debug/pprof/profile", pprof.Profile)
		h.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		h.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	h.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	h.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := srv.Ready(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	h.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		s := srv.Metrics().Snapshot()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "ferry_connections_current %d\n", s.ConnsCurrent)
		fmt.Fprintf(w, "ferry_connections_opened_total %d\n", s.ConnsOpened)
		fmt.Fprintf(w, "ferry_sessions_connected %d\n", s.SessionsConnected)
		fmt.Fprintf(w, "ferry_subscriptions %d\n", s.Subscriptions)
		for q := range s.PublishesIn {
			fmt.Fprintf(w, "ferry_publishes_in_total{qos=\"%d\"} %d\n", q, s.PublishesIn[q])
			fmt.Fprintf(w, "ferry_publishes_out_total{qos=\"%d\"} %d\n", q, s.PublishesOut[q])
		}
		for i, n := range server.DropReasonNames {
			fmt.Fprintf(w, "ferry_dropped_total{reason=%q} %d\n", n, s.Drops[i])
		}
		fmt.Fprintf(w, "ferry_records_in_total %d\n", s.RecordsIn)
		fmt.Fprintf(w, "ferry_kafka_errors_total %d\n", s.KafkaErrors)
		fmt.Fprintf(w, "ferry_kafka_connections %d\n", mux.Connections())
		fmt.Fprintf(w, "ferry_protocol_errors_total %d\n", s.ProtocolErrors)
	})
	return h
}
