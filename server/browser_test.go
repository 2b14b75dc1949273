package server_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// browserPage subscribes with MQTT.js over ws://, writes what it receives into the DOM and publishes an
// answer. The <img> holds the page's load event (and so Chromium's --dump-dom) until the test has the answer.
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>Ferry over WebSocket</title><script src="/mqtt.min.js"></script></head>
<body><h1>MQTT.js on Ferry</h1><ul id="log"></ul>
<script>
function log(t) { var li = document.createElement('li'); li.textContent = t; document.getElementById('log').appendChild(li); }
var c = mqtt.connect('ws://%s/mqtt', {clientId: 'browser-mqttjs', protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 10000});
c.on('connect', function () {
  log('connected');
  c.subscribe('browser/in', {qos: 1}, function (err) {
    if (err) { log('subscribe failed: ' + err.message); return; }
    log('subscribed');
    fetch('/subscribed');
  });
});
c.on('message', function (topic, payload) {
  log('received ' + topic + ': ' + payload.toString());
  c.publish('browser/out', 'echo: ' + payload.toString(), {qos: 1});
});
c.on('error', function (e) { log('error: ' + e.message); });
</script>
<img src="/gate" alt="">
</body></html>`

// MQTT.js in headless Chromium talks to Ferry over ws://: it subscribes, receives a message a Go client
// publishes, shows it in the page and publishes an answer, which the Go client receives. Needs Chromium and
// MQTT.js's browser bundle: run scripts/browser-test.sh, which installs both and sets FERRY_BROWSER_TEST=1,
// FERRY_CHROMIUM and FERRY_MQTTJS.
func TestBrowserMQTTJS(t *testing.T) {
	if os.Getenv("FERRY_BROWSER_TEST") != "1" {
		t.Skip("browser test: run scripts/browser-test.sh (sets FERRY_BROWSER_TEST=1)")
	}
	chromium, bundle := os.Getenv("FERRY_CHROMIUM"), os.Getenv("FERRY_MQTTJS")
	if chromium == "" {
		chromium = "chromium"
	}
	js, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatalf("MQTT.js bundle (FERRY_MQTTJS): %v", err)
	}
	f, hp := startWSFerry(t)
	goc := dialV5(t, f.addr, &paho.Connect{ClientID: "go-side", CleanStart: true})
	goc.sub(t, paho.SubscribeOptions{Topic: "browser/out", QoS: 1})

	subscribed, gate := make(chan struct{}, 1), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, browserPage, hp)
	})
	mux.HandleFunc("/mqtt.min.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = w.Write(js)
	})
	mux.HandleFunc("/subscribed", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case subscribed <- struct{}{}:
		default:
		}
	})
	mux.HandleFunc("/gate", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-gate:
		case <-r.Context().Done():
		case <-time.After(60 * time.Second):
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := []string{"--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir(), "--dump-dom", "http://" + ln.Addr().String() + "/"}
	if os.Geteuid() == 0 {
		args = append([]string{"--no-sandbox"}, args...) // Chromium refuses to run as root with its sandbox
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, chromium, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start %s: %v", chromium, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-done
	}()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\n--- chromium stderr (tail):\n%s", append(args, tail(stderr.String(), 3000))...)
	}

	select {
	case <-subscribed:
	case <-time.After(45 * time.Second):
		fail("the browser did not subscribe within 45s")
	}
	goc.pub(t, &paho.Publish{Topic: "browser/in", QoS: 1, Payload: []byte("hello from Go")})
	select {
	case m := <-goc.msgs:
		if m.Topic != "browser/out" || string(m.Payload) != "echo: hello from Go" {
			fail("the browser published %s %q", m.Topic, m.Payload)
		}
	case <-time.After(30 * time.Second):
		fail("nothing published by the browser within 30s")
	}
	close(gate)

	select {
	case err := <-done:
		done <- err // for the deferred wait
		if err != nil {
			fail("chromium: %v", err)
		}
	case <-time.After(30 * time.Second):
		fail("chromium did not dump the page within 30s of its answer")
	}
	dom := stdout.String()
	for _, want := range []string{"<li>connected</li>", "<li>subscribed</li>", "<li>received browser/in: hello from Go</li>"} {
		if !strings.Contains(dom, want) {
			fail("the page has no %q:\n%s", want, dom)
		}
	}
	t.Logf("the browser's page:\n%s", dom[strings.Index(dom, "<ul"):strings.Index(dom, "</ul>")+5])
	if n := f.srv.Metrics().Snapshot().TransportErrors; n != 0 {
		t.Errorf("transport errors: %d", n)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
