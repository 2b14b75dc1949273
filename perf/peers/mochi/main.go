// Command mochi runs Mochi MQTT v2 (github.com/mochi-mqtt/server/v2) with its
// default options, an allow-all auth hook and one TCP listener: the peer the
// Ferry benchmarks compare a goroutine-per-connection Go broker against.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "TCP listen address")
	flag.Parse()

	// nil options = Mochi's defaults (e.g. MaximumInflight 1024 per client,
	// MaximumClientWritesPending 8192, no message expiry limits changed).
	server := mqtt.New(nil)
	if err := server.AddHook(new(auth.AllowHook), nil); err != nil {
		log.Fatalf("cannot add auth hook: %v", err)
	}
	if err := server.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: *addr})); err != nil {
		log.Fatalf("cannot listen on %s: %v", *addr, err)
	}
	go func() {
		if err := server.Serve(); err != nil {
			log.Fatalf("cannot serve: %v", err)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = server.Close()
}
