package main

import (
	"log/slog"
	"runtime"
	"syscall"
)

func numCPU() int { return runtime.NumCPU() }

// raiseFileLimit lifts the soft open-file limit to the hard limit: every MQTT connection is a file descriptor.
func raiseFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("cannot read the open-file limit", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Warn("cannot raise the open-file limit", "err", err)
		}
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	log.Info("open-file limit", "max_connections_possible", lim.Cur-64)
}
