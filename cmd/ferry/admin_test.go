package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server"
)

// The admin handler over a real instance (gnet loops, offload, kafkamux on in-process kfake) and real MQTT
// clients (paho.golang v5 subscribing, paho.mqtt.golang v3.1.1 publishing): /metrics counts exactly what the
// clients did, /readyz fails while Kafka is unreachable and comes back after, and fails during a drain.
func TestAdminEndToEnd(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 1}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mux, err := kafkamux.New(ctx, kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir(""), kafkamux.Partitions(3),
		kafkamux.HealthTimeout(time.Second), kafkamux.Logger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	off, err := offload.New(mux, 2)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	listener := "tcp://" + addr
	srv, err := server.New(off, mux, server.Listen(listener), server.EventLoops(2), server.Logger(quiet))
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
	before := scrape(t, hs.URL)

	// A v5 subscriber at QoS 1, a v3.1.1 publisher: N0 messages at QoS 0, N1 at QoS 1.
	const n0, n1 = 40, 60
	var got atomic.Int64
	subConn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	sub := paho.NewClient(paho.ClientConfig{Conn: subConn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(paho.PublishReceived) (bool, error) {
			got.Add(1)
			return true, nil
		}}})
	if _, err := sub.Connect(ctx, &paho.Connect{ClientID: "metrics-sub", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer sub.Disconnect(&paho.Disconnect{})
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "metrics/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(listener).SetClientID("metrics-pub").
		SetProtocolVersion(4).SetAutoReconnect(false).SetKeepAlive(30 * time.Second))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 connect: %v", tok.Error())
	}
	var toks []mqtt.Token
	for i := range n0 + n1 {
		q := byte(0)
		if i >= n0 {
			q = 1
		}
		toks = append(toks, pub.Publish("metrics/t", q, false, fmt.Sprint(i)))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	waitFor(t, 10*time.Second, "every message delivered", func() bool { return got.Load() == n0+n1 })
	pub.Disconnect(100) // a normal end: DISCONNECT

	// A takeover, a refused CONNECT (protocol level 7) and a protocol error (PINGREQ before CONNECT).
	twin := func() *paho.Client {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		cl := paho.NewClient(paho.ClientConfig{Conn: c})
		if _, err := cl.Connect(ctx, &paho.Connect{ClientID: "metrics-twin", CleanStart: true, KeepAlive: 30}); err != nil {
			t.Fatal(err)
		}
		return cl
	}
	twin()
	defer twin().Disconnect(&paho.Disconnect{})
	rawExchange(t, addr, []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 7, 2, 0, 60, 0, 1, 'x'})
	rawExchange(t, addr, []byte{0xC0, 0})

	m := waitMetrics(t, hs.URL, before, map[string]float64{
		`ferry_messages_in_total{qos="0"}`:                                                     n0,
		`ferry_messages_in_total{qos="1"}`:                                                     n1,
		`ferry_messages_in_total{qos="2"}`:                                                     0,
		`ferry_messages_out_total{qos="0"}`:                                                    n0,
		`ferry_messages_out_total{qos="1"}`:                                                    n1,
		`ferry_subscriptions`:                                                                  1,
		`ferry_sessions_connected`:                                                             2, // the subscriber and the second twin
		`ferry_connections_current{listener="` + listener + `"}`:                               2,
		`ferry_connections_opened_total{listener="` + listener + `"}`:                          6,
		`ferry_connections_closed_total{listener="` + listener + `",reason="normal"}`:          1,
		`ferry_connections_closed_total{listener="` + listener + `",reason="takeover"}`:        1,
		`ferry_connections_closed_total{listener="` + listener + `",reason="connect_refused"}`: 1,
		`ferry_connections_closed_total{listener="` + listener + `",reason="protocol_error"}`:  1,
		`ferry_connections_closed_total{listener="` + listener + `",reason="client_gone"}`:     0,
		`ferry_connects_refused_total{code="0x84",reason="unsupported_protocol_version"}`:      1,
		`ferry_protocol_errors_total{code="0x82",reason="protocol_error"}`:                     1,
		`ferry_takeovers_total`:                                                                1,
		`ferry_kafka_records_produced_total{topic="mqtt-messages"}`:                            n0 + n1,
		`ferry_kafka_records_read_total{topic="mqtt-messages"}`:                                n0 + n1,
		`ferry_kafka_produce_seconds_count{topic="mqtt-messages"}`:                             n0 + n1,
		`ferry_kafka_produce_errors_total{topic="mqtt-messages"}`:                              0,
		`ferry_kafka_records_skipped_total`:                                                    0,
		`ferry_dropped_total{reason="lane_full"}`:                                              0,
		`ferry_publish_stage_seconds_count{stage="queued"}`:                                    n1,
		`ferry_publish_stage_seconds_count{stage="kafka"}`:                                     n1,
		`ferry_publish_stage_seconds_count{stage="ack"}`:                                       n1,
		`ferry_delivery_stage_seconds_count{stage="read"}`:                                     n0 + n1,
		`ferry_delivery_stage_seconds_count{stage="write"}`:                                    n0 + n1,
	})
	if d := m[`ferry_bytes_in_total`] - before[`ferry_bytes_in_total`]; d < (n0+n1)*10 {
		t.Errorf("ferry_bytes_in_total moved by %v for %d publishes", d, n0+n1)
	}
	if d := m[`ferry_bytes_out_total`] - before[`ferry_bytes_out_total`]; d < (n0+n1)*10 {
		t.Errorf("ferry_bytes_out_total moved by %v for %d deliveries", d, n0+n1)
	}
	if c := m[`ferry_kafka_connections`]; c < 1 || c > 3 {
		t.Errorf("ferry_kafka_connections = %v, want 1 to 3 for one broker", c)
	}
	if m[`ferry_kafka_up`] != 1 || m[`ferry_ready`] != 1 {
		t.Errorf("ferry_kafka_up %v, ferry_ready %v before any outage", m[`ferry_kafka_up`], m[`ferry_ready`])
	}

	// Kafka becomes unreachable: every request's connection is closed. /readyz fails, then recovers.
	start := time.Now()
	restore := kafkaOutage(mux.Cluster())
	body := waitReady(t, hs.URL, http.StatusServiceUnavailable, "no Kafka broker answered")
	t.Logf("not ready %v into the outage: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(body))
	if m := scrape(t, hs.URL); m[`ferry_kafka_up`] != 0 || m[`ferry_ready`] != 0 {
		t.Errorf("during the outage: ferry_kafka_up %v, ferry_ready %v", m[`ferry_kafka_up`], m[`ferry_ready`])
	}
	restore()
	start = time.Now()
	waitReady(t, hs.URL, http.StatusOK, "ready")
	t.Logf("ready again %v after the outage", time.Since(start).Round(time.Millisecond))

	// Each loop that served a connection measures its one-second tick.
	waitFor(t, 5*time.Second, "event-loop lag measured", func() bool {
		m := scrape(t, hs.URL)
		_, ok := m[`ferry_event_loop_lag_max_seconds{loop="0"}`]
		return ok && m[`ferry_event_loop_lag_seconds_count`] >= 1
	})

	// A drain: not ready, with the reason, and the subscriber's connection ends as a server shutdown.
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer dcancel()
	if err := srv.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	waitReady(t, hs.URL, http.StatusServiceUnavailable, "not ready: draining")
	waitMetrics(t, hs.URL, before, map[string]float64{
		`ferry_connections_closed_total{listener="` + listener + `",reason="server_shutdown"}`: 2,
		`ferry_connections_current{listener="` + listener + `"}`:                               0,
		`ferry_sessions_connected`: 0,
	})
}

// kafkaOutage makes kfake close the connection of every request, as an unreachable broker would, until the
// returned function is called.
func kafkaOutage(c *kfake.Cluster) (restore func()) {
	var on atomic.Bool
	on.Store(true)
	c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		if !on.Load() {
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		return nil, errors.New("injected outage"), true
	})
	return func() { on.Store(false) }
}

// rawExchange sends b on a new connection and reads until the server closes it.
func rawExchange(t *testing.T, addr string, b []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("the server did not close the connection: %v", err)
	}
}

// scrape reads /metrics into a map from `name{labels}` to value, checking the exposition on the way: every
// sample belongs to a family declared by a TYPE line before it, and no series appears twice.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("/metrics: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	out := map[string]float64{}
	types := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(f, " ")
			if _, dup := types[name]; dup {
				t.Fatalf("family %s declared twice", name)
			}
			types[name] = typ
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		key, val := line[:i], line[i+1:]
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("bad value in %q", line)
		}
		name, _, _ := strings.Cut(key, "{")
		fam := name
		if typ := types[name]; typ == "" {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suf); ok && types[b] == "histogram" {
					fam = b
				}
			}
		}
		if types[fam] == "" {
			t.Fatalf("sample %q has no TYPE line before it", line)
		}
		if _, dup := out[key]; dup {
			t.Fatalf("series %s appears twice", key)
		}
		out[key] = v
	}
	return out
}

// waitMetrics scrapes until every series in want has moved from before by exactly its value, and returns the
// last scrape.
func waitMetrics(t *testing.T, url string, before, want map[string]float64) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := scrape(t, url)
		var bad []string
		for k, d := range want {
			if _, ok := m[k]; !ok {
				bad = append(bad, fmt.Sprintf("%s missing", k))
			} else if got := m[k] - before[k]; got != d {
				bad = append(bad, fmt.Sprintf("%s moved by %v, want %v", k, got, d))
			}
		}
		if len(bad) == 0 {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics:\n  %s", strings.Join(bad, "\n  "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReady polls /readyz until it answers status with a body containing want, and returns the body.
func waitReady(t *testing.T, url string, status int, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == status && strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %q, want %d containing %q", resp.StatusCode, b, status, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
