// Package load is the load generator: worker processes that each own a share
// of the client connections, and the coordinator that starts them (by
// re-executing the current binary), drives them through the phases of a
// scenario and merges what they measured.
//
// Control protocol: one JSON object per line. The coordinator writes Commands
// on the worker's stdin; the worker writes Events on its stdout and free-form
// diagnostics on stderr (passed through).
//
//	coordinator → worker          worker → coordinator
//	config                        ready
//	connect                       connected   (subscribers have their SUBACK)
//	subscribe (idle, K > 0)       subscribed
//	start                         progress … (every second, all phases)
//	stop                          stopped     (publishers drained; acked prefixes)
//	finish (all acked prefixes)   result
//	close                         (exit)
package load

import (
	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/ferrymq/ferry/perf/internal/stats"
)

// WorkerConfig is everything a worker needs; sent once as the first command.
type WorkerConfig struct {
	Worker       int      `json:"worker"`
	Target       string   `json:"target"`
	WSPath       string   `json:"ws_path,omitempty"`    // set: MQTT over WebSocket at this path
	TLS          bool     `json:"tls,omitempty"`        // TLS on the TCP connection (under WebSocket if both)
	TLSCA        string   `json:"tls_ca,omitempty"`     // PEM CA file to verify the server; "" = no verification
	TLSResume    bool     `json:"tls_resume,omitempty"` // keep session tickets: connections after the first resume
	TLSGroups    string   `json:"tls_groups,omitempty"` // key exchange groups offered, comma separated; "" = Go's default
	SrcIPs       []string `json:"src_ips"`              // local addresses to bind, round robin
	ClientPrefix string   `json:"client_prefix"`
	KeepAlive    int      `json:"keep_alive"` // seconds; 0 = no PINGREQ
	Username     string   `json:"username,omitempty"`
	Password     string   `json:"password,omitempty"`
	Persistent   bool     `json:"persistent,omitempty"` // CONNECT with CleanSession=0: sessions Ferry stores in Kafka
	Will         bool     `json:"will,omitempty"`       // CONNECT with a will (QoS 0, topic wills/<client id>)

	// Connection establishment.
	ConnRate    float64 `json:"conn_rate"`    // new connections per second for this worker (0 = unbounded)
	ConnPar     int     `json:"conn_par"`     // CONNECTs awaiting CONNACK at once
	ConnTimeout int     `json:"conn_timeout"` // seconds per handshake

	// Idle connections: global ids [IdleFrom, IdleTo), each with SubsPerConn
	// subscriptions on unique topics when the coordinator says "subscribe".
	IdleFrom    int  `json:"idle_from"`
	IdleTo      int  `json:"idle_to"`
	SubsPerConn int  `json:"subs_per_conn"`
	IdleSubQoS  byte `json:"idle_sub_qos"`

	// Subscribers: global ids [SubFrom, SubTo), each subscribed to SubFilter.
	SubFrom   int    `json:"sub_from"`
	SubTo     int    `json:"sub_to"`
	SubFilter string `json:"sub_filter"`
	SubQoS    byte   `json:"sub_qos"`
	// SubRx is how subscribers are read: SubRxEpoll (plain TCP only: one epoll receiver per worker, deliveries
	// timed at the kernel's receive time, rx_linux.go) or "" (a goroutine per connection, timed when read).
	SubRx string `json:"sub_rx,omitempty"`

	// Publishers: global ids [PubFrom, PubTo) of TotalPubs; topic is
	// PubTopic with "{i}" replaced by the publisher id.
	PubFrom     int    `json:"pub_from"`
	PubTo       int    `json:"pub_to"`
	TotalPubs   int    `json:"total_pubs"`
	PubTopic    string `json:"pub_topic"`
	QoS         byte   `json:"qos"`
	Window      int    `json:"window"`       // in-flight PUBLISHes per publisher at QoS >= 1
	PayloadSize int    `json:"payload_size"` // bytes, >= stats.PayloadHeader
	// JSONPayload makes payloads JSON documents (stats.PutJSONStamp) for brokers that check payloads; their
	// stamps are not read back, so use it where only acknowledgements count (no subscribers, no Kafka reader).
	JSONPayload bool    `json:"json_payload"`
	RatePerPub  float64 `json:"rate_per_pub"` // msg/s per publisher; 0 = as fast as acks (QoS 0: as fast as TCP) allow
	BatchMax    int     `json:"batch_max"`    // PUBLISHes per write at most
	StopGraceMs int     `json:"stop_grace_ms"`
	// PubSndBuf sets SO_SNDBUF on publisher sockets (0 = kernel autotuning).
	// At QoS 0 nothing else limits a publisher, and megabytes of socket
	// buffer hide seconds of backlog in the kernel.
	PubSndBuf int `json:"pub_sndbuf"`
	// Qos0Flow bounds QoS 0 publishers to Window unconfirmed messages, a
	// PINGREQ/PINGRESP round trip confirming each batch (see pubState).
	Qos0Flow bool `json:"qos0_flow"`
	// MinSentNs: stamps older than this belong to an earlier run (a broker
	// still routing its backlog) and count as foreign, not as deliveries.
	MinSentNs int64 `json:"min_sent_ns"`
}

// SubRxEpoll is WorkerConfig.SubRx's epoll receiver.
const SubRxEpoll = "epoll"

// Command is a coordinator → worker line.
type Command struct {
	Cmd    string            `json:"cmd"`
	Config *WorkerConfig     `json:"config,omitempty"`
	Acked  map[int]uint64    `json:"acked,omitempty"` // finish: acked prefix per publisher id
	Extra  map[string]string `json:"extra,omitempty"`
}

// Counters are cumulative since the worker started.
type Counters struct {
	ConnOK       int64 `json:"conn_ok"`
	ConnFail     int64 `json:"conn_fail"`
	SubOK        int64 `json:"sub_ok"` // granted topic filters
	SubFail      int64 `json:"sub_fail"`
	Published    int64 `json:"published"`
	Acked        int64 `json:"acked"`
	Delivered    int64 `json:"delivered"`
	Foreign      int64 `json:"foreign"` // PUBLISHes without a harness stamp
	Pings        int64 `json:"pings"`
	Pongs        int64 `json:"pongs"`
	Disconnected int64 `json:"disconnected"`          // connections the server closed or broke
	TLSResumed   int64 `json:"tls_resumed,omitempty"` // TLS handshakes that resumed a session (a ticket)
}

// Add returns c + o.
func (c Counters) Add(o Counters) Counters {
	c.ConnOK += o.ConnOK
	c.ConnFail += o.ConnFail
	c.SubOK += o.SubOK
	c.SubFail += o.SubFail
	c.Published += o.Published
	c.Acked += o.Acked
	c.Delivered += o.Delivered
	c.Foreign += o.Foreign
	c.Pings += o.Pings
	c.Pongs += o.Pongs
	c.Disconnected += o.Disconnected
	c.TLSResumed += o.TLSResumed
	return c
}

// Sub returns c - o.
func (c Counters) Sub(o Counters) Counters {
	c.ConnOK -= o.ConnOK
	c.ConnFail -= o.ConnFail
	c.SubOK -= o.SubOK
	c.SubFail -= o.SubFail
	c.Published -= o.Published
	c.Acked -= o.Acked
	c.Delivered -= o.Delivered
	c.Foreign -= o.Foreign
	c.Pings -= o.Pings
	c.Pongs -= o.Pongs
	c.Disconnected -= o.Disconnected
	c.TLSResumed -= o.TLSResumed
	return c
}

// Event is a worker → coordinator line.
type Event struct {
	Ev       string   `json:"ev"`
	Worker   int      `json:"worker"`
	Counters Counters `json:"counters"`
	AtNs     int64    `json:"at_ns"`
	Msg      string   `json:"msg,omitempty"`

	// connected / subscribed
	PhaseNs int64 `json:"phase_ns,omitempty"` // wall time the phase took in this worker

	// stopped: counters at the stop command (the measurement window's end)
	// and the acked prefix of each local publisher.
	AtStop *Counters      `json:"at_stop,omitempty"`
	Acked  map[int]uint64 `json:"acked,omitempty"`
	Result *WorkerResult  `json:"result,omitempty"`
	Errors map[string]int `json:"errors,omitempty"`
}

// WorkerResult is a worker's final measurement.
type WorkerResult struct {
	Connect   *hdrhistogram.Snapshot `json:"connect"`   // CONNECT → CONNACK, µs
	Subscribe *hdrhistogram.Snapshot `json:"subscribe"` // SUBSCRIBE → SUBACK, µs
	Delivery  *hdrhistogram.Snapshot `json:"delivery"`  // payload stamp → arrival at a subscriber, µs
	// DeliveryRead is payload stamp → read by the generator, µs (epoll path only; Delivery is then the
	// kernel's receive time, and the difference is the generator's own delay).
	DeliveryRead *hdrhistogram.Snapshot `json:"delivery_read,omitempty"`
	Ack          *hdrhistogram.Snapshot `json:"ack"` // PUBLISH written → PUBACK/PUBREC read, µs
	Loss         stats.Loss             `json:"loss"`
	CPUSec       float64                `json:"cpu_sec"`
	Errors       map[string]int         `json:"errors,omitempty"`
}
