package kafkamux

import (
	"fmt"
	"net"
	"runtime/debug"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// startEmbedded starts a one-broker in-process Kafka (kfake) listening on
// c.embeddedAddr and persisting to c.dataDir ("" = memory only), telling st
// when the data dir is full (nil: nobody). It returns the address the broker
// advertises.
//
// kfake always listens on 127.0.0.1 and advertises its listener's address;
// its ListenFn hook lets us listen on the configured host instead and
// advertise c.advertised (see [EmbeddedAdvertisedAddr]), and accept the in-process connections of Ferry's own
// clients beside TCP ones (inproc.go): the listener is returned for dialing them.
func startEmbedded(c *cfg, st *storage) (*kfake.Cluster, *inprocListener, string, error) {
	host, port, err := net.SplitHostPort(c.embeddedAddr)
	if err != nil {
		return nil, nil, "", fmt.Errorf("cannot start embedded Kafka: address %q: %w", c.embeddedAddr, err)
	}
	var lnErr error
	var inproc *inprocListener
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.ClusterID("ferry-embedded"),
		kfake.WithLogger(kfakeLogger{c.logger, st}),
		kfake.DefaultNumPartitions(int(c.partitions)),
		// Ferry's cleaner (cleaner.go) is the only one that compacts: kfake's own hourly pass would compact
		// while a transaction is open, which the cleaner never does.
		kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": kfakeCleanerOff}),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := net.Listen(network, net.JoinHostPort(host, port))
			if err != nil {
				lnErr = err
				return nil, err
			}
			inproc = newInprocListener(advertise(ln, c.advertised))
			return inproc, nil
		}),
	}
	if c.dataDir != "" {
		opts = append(opts, kfake.DataDir(c.dataDir))
	}
	cl, err := kfake.NewCluster(opts...)
	if err != nil {
		if lnErr != nil {
			err = lnErr
		}
		return nil, nil, "", fmt.Errorf("cannot start embedded Kafka on %s (data dir %q): %w", c.embeddedAddr, c.dataDir, err)
	}
	if c.dataDir != "" {
		// kfake loads a data dir by reading each segment file whole and decoding its batches, partitions in
		// parallel, and keeps only the index: the rest, up to partitions × segment size × 2 (a GiB on a data
		// dir of 64 MiB segments), is garbage the runtime would hand back to the OS only over minutes. Give it
		// back now, so RSS after a restart is the index and not the load (scripts/restart.sh).
		debug.FreeOSMemory()
	}
	addrs := cl.ListenAddrs()
	if len(addrs) != 1 {
		cl.Close()
		panic(fmt.Sprintf("BUG: embedded Kafka listens on %d addresses, want 1", len(addrs)))
	}
	return cl, inproc, addrs[0], nil
}

// advertise wraps ln so that its Addr, which kfake puts in metadata
// responses, is the address clients should dial: adv if set (its port 0
// replaced by the listening port), else the listening address with a
// wildcard host replaced by 127.0.0.1.
func advertise(ln net.Listener, adv string) net.Listener {
	la := ln.Addr().(*net.TCPAddr)
	host, port := "", strconv.Itoa(la.Port)
	if adv != "" {
		h, p, _ := net.SplitHostPort(adv) // validated
		host = h
		if p != "0" {
			port = p
		}
	} else if la.IP.IsUnspecified() {
		host = "127.0.0.1"
	} else {
		host = la.IP.String()
	}
	return advListener{ln, advAddr(net.JoinHostPort(host, port))}
}

type advListener struct {
	net.Listener
	addr advAddr
}

func (l advListener) Addr() net.Addr { return l.addr }

type advAddr string

func (advAddr) Network() string  { return "tcp" }
func (a advAddr) String() string { return string(a) }

// kfakeCleanerOff is kfake's own compaction interval in milliseconds: ten years, so never in practice.
const kfakeCleanerOff = "315360000000"
