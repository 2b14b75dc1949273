package main

import (
	"fmt"
	"net/http"
	"net/http/pprof"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server"
)

// adminHandler serves the admin HTTP endpoints:
//
//   - /healthz: 200 while the process serves HTTP (liveness).
//   - /readyz: 200 "ready", or 503 "not ready: <reason>" while draining, while retained messages load, or while
//     Kafka does not answer or refuses records (kafkamux.Mux.Healthy).
//   - /metrics: Prometheus text (metrics.go; the list is in docs/operations.md).
//   - /debug/pprof/: Go's profiler, only with --pprof.
//
// Each request runs on its own net/http goroutine and reads atomics and briefly-held locks: it never waits for
// an event loop or for Kafka.
func adminHandler(srv *server.Server, off *offload.Offload, mux *kafkamux.Mux, gc *gcTuner, pprofOn bool) http.Handler {
	in := instance{srv: srv, off: off, mux: mux, gc: gc}
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
		if ok, why := in.ready(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	h.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(in.appendMetrics(make([]byte, 0, 32<<10)))
	})
	return h
}
