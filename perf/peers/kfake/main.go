// Command kfake runs franz-go's in-memory Kafka (pkg/kfake) on one port: the
// same kind of Kafka Ferry embeds, for the Mosquitto + bridge peer to write to, and for the history checker
// (scripts/sessions-check.sh). SIGUSR1 runs one compaction of the compacted topics at once (kfake's own
// interval is an hour): the checker compacts the sessions topic during its run.
package main

import (
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9092", "listen address")
	topic := flag.String("topic", "mqtt-messages", "topic created at start")
	partitions := flag.Int("partitions", 1, "partitions of --topic")
	flag.Parse()

	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		log.Fatalf("bad --addr %q: %v", *addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		log.Fatalf("bad --addr port %q", port)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(p),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, port))
		}),
		kfake.SeedTopics(int32(*partitions), *topic),
		kfake.AllowAutoTopicCreation(),
	)
	if err != nil {
		log.Fatalf("cannot start kfake: %v", err)
	}
	log.Printf("kfake listening on %v", c.ListenAddrs())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1)
	for s := range sig {
		if s != syscall.SIGUSR1 {
			break
		}
		c.Compact()
		log.Printf("compacted")
	}
	c.Close()
}
