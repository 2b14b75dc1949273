package main

import (
	"flag"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/ferrymq/ferry/server"
)

// edgeConfig holds the rate limits and the redirect settings (docs/operations.md, "Limits" and "Redirect").
type edgeConfig struct {
	maxConnectionRate float64
	connectionBurst   int
	maxPublishRate    float64
	publishBurst      int
	publishRateGrace  time.Duration
	redirectBy        string
	advertise         string
}

func addEdgeFlags(fs *flag.FlagSet, c *edgeConfig) {
	fs.Float64Var(&c.maxConnectionRate, "max-connection-rate", 0, "CONNECTs per second per source address (IPv4 address or IPv6 /64); over it CONNACK 0x9F (v3: 3). 0 = unlimited")
	fs.IntVar(&c.connectionBurst, "connection-burst", 0, "CONNECTs one source address may make at once before max-connection-rate applies (0 = one second's worth)")
	fs.Float64Var(&c.maxPublishRate, "max-publish-rate", 0, "PUBLISH packets per second per connection; over it the connection is slowed, then disconnected (v5: 0x96). 0 = unlimited")
	fs.IntVar(&c.publishBurst, "publish-burst", 0, "PUBLISH packets a connection may send at once before max-publish-rate applies (0 = one second's worth)")
	fs.DurationVar(&c.publishRateGrace, "publish-rate-grace", 5*time.Second, "how long a connection may stay over max-publish-rate, slowed, before it is disconnected")
	fs.StringVar(&c.redirectBy, "redirect-by", "", "shard clients over the live instances by client-id or identity; v5 clients on the wrong instance get CONNACK 0x9D/0x9C with a Server Reference (empty = off; needs advertise)")
	fs.StringVar(&c.advertise, "advertise", "", "host:port clients should use to reach this instance, shared with the other instances for redirects")
}

func (c *edgeConfig) validate() error {
	bad := func(name string, val any, want string) error {
		return fmt.Errorf("invalid --%s %v: want %s", name, val, want)
	}
	switch {
	case !(c.maxConnectionRate >= 0) || c.maxConnectionRate > 1e9:
		return bad("max-connection-rate", c.maxConnectionRate, "0 (unlimited) or a positive number per second")
	case c.connectionBurst < 0:
		return bad("connection-burst", c.connectionBurst, "0 or more")
	case !(c.maxPublishRate >= 0) || c.maxPublishRate > 1e9 || (c.maxPublishRate > 0 && c.maxPublishRate < 0.001):
		return bad("max-publish-rate", c.maxPublishRate, "0 (unlimited) or a number per second from 0.001")
	case c.publishBurst < 0 || c.publishBurst > 1<<20:
		return bad("publish-burst", c.publishBurst, "0 to 1048576")
	case c.publishRateGrace < time.Second:
		return bad("publish-rate-grace", c.publishRateGrace, "at least 1s")
	case c.redirectBy != "" && c.redirectBy != "client-id" && c.redirectBy != "identity" && c.redirectBy != "identity-pattern":
		return bad("redirect-by", c.redirectBy, "client-id or identity (or empty: off)")
	case c.redirectBy != "" && c.advertise == "":
		return bad("advertise", `""`, "this instance's host:port for clients, required by redirect-by")
	}
	if c.advertise != "" {
		host, port, err := net.SplitHostPort(c.advertise)
		if n, perr := strconv.ParseUint(port, 10, 16); err != nil || host == "" || perr != nil || n == 0 {
			return bad("advertise", c.advertise, "host:port, with a port from 1 to 65535")
		}
	}
	return nil
}

// serverOpts turns the settings into server options.
func (c *edgeConfig) serverOpts() []server.Opt {
	return []server.Opt{
		server.MaxConnectionRate(c.maxConnectionRate, c.connectionBurst),
		server.MaxPublishRate(c.maxPublishRate, c.publishBurst, c.publishRateGrace),
		server.RedirectBy(c.redirectBy),
		server.Advertise(c.advertise),
	}
}
