//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server"
)

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// When the embedded Kafka's filesystem fills up (a 16 MiB tmpfs; needs root), a v5 QoS 1 publish gets PUBACK
// 0x97 Quota exceeded, /readyz says which file could not be written, one log line names it, and Ferry
// recovers by itself once space returns; what was acknowledged is in Kafka.
func TestDataDirFull(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16m"); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mux, err := kafkamux.New(ctx, kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir(filepath.Join(dir, "data")),
		kafkamux.Partitions(1), kafkamux.HealthTimeout(time.Second), kafkamux.Logger(log))
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	off, err := offload.New(mux, 1)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	srv, err := server.New(off, mux, server.Listen("tcp://"+addr), server.EventLoops(1), server.Logger(log))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
	}()
	hs := httptest.NewServer(adminHandler(srv, off, mux, nil, false))
	defer hs.Close()
	waitReady(t, hs.URL, 200, "")

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pub := paho.NewClient(paho.ClientConfig{Conn: conn})
	if _, err := pub.Connect(ctx, &paho.Connect{ClientID: "full-pub", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer pub.Disconnect(&paho.Disconnect{})
	publish := func(payload []byte) byte {
		t.Helper()
		r, err := pub.Publish(ctx, &paho.Publish{Topic: "full/t", QoS: 1, Payload: payload})
		if r == nil {
			t.Fatalf("publish: no PUBACK: %v", err)
		}
		return r.ReasonCode
	}
	big := bytes.Repeat([]byte("x"), 64<<10)
	if code := publish([]byte("before")); code != 0 {
		t.Fatalf("publish before the disk is full: reason %#x", code)
	}

	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(big); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()
	for i := range 3 {
		if code := publish(big); code != byte(mqttcodec.QuotaExceeded) {
			t.Fatalf("publish %d on a full disk: reason %#x, want 0x97", i, code)
		}
	}
	why := waitReady(t, hs.URL, 503, "data dir is full")
	if !strings.Contains(why, filepath.Join(dir, "data")) {
		t.Errorf("/readyz %q does not name the file", why)
	}
	if n := strings.Count(logs.String(), "data dir is full"); n != 1 {
		t.Errorf("%d log lines say the data dir is full, want 1:\n%s", n, logs.String())
	}

	os.Remove(filler)
	waitReady(t, hs.URL, 200, "")
	if code := publish([]byte("after")); code != 0 {
		t.Fatalf("publish after space returned: reason %#x", code)
	}
	if !strings.Contains(logs.String(), "has space again") {
		t.Errorf("no log line says space returned:\n%s", logs.String())
	}

	// Both acknowledged messages are in Kafka, and none of the refused ones.
	cl, err := kgo.NewClient(kgo.SeedBrokers(mux.Addr()), kgo.ConsumeTopics(mux.MessagesTopic()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []string
	for len(got) < 2 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			m, err := kafkamux.MessageFromRecord(r)
			if err == nil {
				if len(m.Payload) > 100 {
					got = append(got, "big")
				} else {
					got = append(got, string(m.Payload))
				}
			}
		})
	}
	if strings.Join(got, ",") != "before,after" {
		t.Errorf("messages topic holds %q, want the two acknowledged messages", got)
	}
}
