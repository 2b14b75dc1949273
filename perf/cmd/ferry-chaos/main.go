// Command ferry-chaos is the workload side of Ferry's fault scripts (scripts/crash.sh, outage.sh, flood.sh,
// soak.sh): load that survives a broker being killed, Kafka being stopped, connection floods and long runs,
// and the checks that hold the broker to its promises — every acknowledged message is in Kafka, sessions
// survive, memory stays within its budgets. The scripts start and kill the processes; this tool loads,
// measures and judges. It never imports the product.
//
//	ferry-chaos crash-load --target ADDR --run ID --pubs 200 --acklog FILE     # until SIGTERM, then drains
//	ferry-chaos verify --kafka ADDR --prefix chaos/ID/ --acklog FILE [--strict-qos2] [--check-order]
//	ferry-chaos outage --target ADDR --kafka ADDR --kafka-pid PID --ferry-pid PID --admin ADDR --outage 30s
//	ferry-chaos flood-conns --target ADDR --conns 6000 --src 127.0.1.1,127.0.1.2 --status FILE   # until SIGTERM
//	ferry-chaos flood-pub --target ADDR --duration 10s
//	ferry-chaos probe --target ADDR --out FILE                                  # until SIGTERM
//	ferry-chaos probe-report --samples FILE --phases FILE
//	ferry-chaos soak --target ADDR --ferry-pid PID --admin ADDR --duration 10m
//	ferry-chaos sample --pid PID --admin ADDR --out FILE                        # RSS, goroutines, fds until SIGTERM
//	ferry-chaos sessions --targets ADDR,ADDR[,…] --clients 50 --duration 30s    # session history, Porcupine-checked
//	ferry-chaos fill --kafka ADDR --bytes 1073741824 --per-batch 2              # a big data dir, for restart.sh
//
// Every command prints its figures on one line on stdout and exits 1 when a check failed.
package main

import (
	"fmt"
	"os"
)

const usage = `usage: ferry-chaos <command> [flags]   (ferry-chaos <command> -h lists the flags)

commands: crash-load verify outage flood-conns flood-pub probe probe-report soak sample sessions fill`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"crash-load":   crashLoad,
		"verify":       verify,
		"outage":       outage,
		"flood-conns":  floodConns,
		"flood-pub":    floodPub,
		"probe":        probe,
		"probe-report": probeReport,
		"soak":         soak,
		"sample":       sample,
		"sessions":     sessions,
		"fill":         fill,
	}
	fn := cmds[os.Args[1]]
	if fn == nil {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err := fn(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "ferry-chaos %s: FAIL: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
