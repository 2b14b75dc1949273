package main

import (
	"flag"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"strconv"

	"github.com/ferrymq/ferry/kafkamux"
)

// The memory ceiling of standalone mode (docs/operations.md, "Computing the ceiling").
//
// With the embedded Kafka most of the live heap is kfake's index of the messages topic, which retention bounds,
// and the rest is Ferry's byte budgets; under load Ferry allocates fast (about 177 MB/s at 5,000 msg/s), so the
// GC tuner (gctune.go) runs Go's default GOGC of 100 and the process would keep up to twice its highest live
// heap resident. A soft memory limit (runtime/debug.SetMemoryLimit) derived from the flags puts a ceiling on
// that an operator can compute before the node runs:
//
//	limit = memBase + recent-cache-bytes + 2 × inflight-bytes × event loops
//	      + index of the messages topic: 72 B × 5/2 × (5/4 × embedded-retention-bytes) ÷ 89 B
//	      + index of the other topics (retained, sessions, routed), as the last cleaning pass counted it × 5/2
//
// The messages topic holds at most 9/8 of its size bound after a pass, plus what is written before the next
// (taken as another eighth); each stored batch costs an index entry of 72 B, and the smallest batch Ferry
// writes is 89 B (one message per batch is the worst case). An entry costs up to 5/2 × 72 B in the heap:
// kfake appends a segment's entries to one slice, which Go grows by about a quarter at a time (5/4), and
// when retention drops a segment kfake reslices its list of segments, whose array keeps the dropped
// segments' index reachable until an append reallocates it: up to as many dropped segments as live ones (2;
// measured: 177 B per live entry, 88 B with the dropped segments cleared). The other topics follow their
// live keys, not a flag, so their part follows what they hold.
//
// The limit is soft: while the live heap stays below it, the collector keeps the heap under it whatever GOGC
// says; if the live heap grows past it, the runtime caps the collector at about half the CPU and lets memory
// exceed the limit instead of collecting back to back (no death spiral, no crash), and the tuner logs it.

// memBase is the part of the ceiling that no flag sets: the Go runtime, the program, the embedded broker's
// and the Kafka clients' request buffers, and the state of a few thousand connections. An idle standalone
// Ferry is about 28 MiB resident.
const memBase = 64 << 20

// indexSlack is the heap of one of kfake's index entries beyond its 72 bytes: the growth of its slice
// (Go grows a large slice by 1/4) times the dropped segments kfake's list of segments keeps reachable (2).
const indexSlackNum, indexSlackDen = 5, 2

// memoryLimitFlag is --memory-limit: 0 derives the limit in standalone mode (none with --kafka-brokers), -1
// sets none, a positive number of bytes sets that.
func addMemoryLimitFlag(fs *flag.FlagSet, v *int64) {
	fs.Int64Var(v, "memory-limit", 0, "soft memory limit of the process in bytes (Go's GOMEMLIMIT): 0 = derived from the retention bounds and byte budgets in standalone mode (docs/operations.md, \"Computing the ceiling\"), none with --kafka-brokers; -1 = none. A GOMEMLIMIT environment variable is used when this is 0")
}

func validMemoryLimit(v int64) error {
	if v < -1 || v > 0 && v < memBase {
		return fmt.Errorf("invalid --memory-limit %d: want 0 (derived), -1 (none) or at least %d bytes", v, int64(memBase))
	}
	return nil
}

// memoryLimit is the soft memory limit Ferry sets, and where it comes from.
type memoryLimit struct {
	source string // "flag", "GOMEMLIMIT" (the runtime's own, left alone), "derived" or "none"
	// static is the limit, or with source "derived" its part that the flags set.
	static int64
	// others returns the memory of the embedded Kafka's index of the topics other than the messages topic,
	// added to static when derived; nil otherwise.
	others func() int64
}

// planMemoryLimit chooses the soft memory limit: --memory-limit if set, else GOMEMLIMIT if set in the
// environment (getenv), else in standalone mode the ceiling derived from the flags, else none.
func planMemoryLimit(cfg *config, loops int, getenv func(string) (string, bool)) memoryLimit {
	switch {
	case cfg.memoryLimit > 0:
		return memoryLimit{source: "flag", static: cfg.memoryLimit}
	case cfg.memoryLimit < 0:
		return memoryLimit{source: "none"}
	}
	if v, ok := getenv("GOMEMLIMIT"); ok && v != "" { // "off" too: the operator chose no limit
		return memoryLimit{source: "GOMEMLIMIT"}
	}
	if cfg.kafkaBrokers != "" || cfg.embedded.retentionBytes == 0 {
		return memoryLimit{source: "none"} // nothing bounds the largest part by configuration
	}
	return memoryLimit{source: "derived", static: derivedMemoryLimit(cfg, loops)}
}

// derivedMemoryLimit is the part of the ceiling of standalone mode that the flags set (see the formula above).
func derivedMemoryLimit(cfg *config, loops int) int64 {
	stored := cfg.embedded.retentionBytes * 5 / 4
	return memBase + int64(cfg.recentCacheBytes) + 2*int64(cfg.laneBytes)*int64(loops) + indexMemory(stored/kafkamux.EmbeddedMinBatchBytes)
}

// indexMemory is the memory of n entries of kfake's index, with the slices' slack.
func indexMemory(n int64) int64 {
	return n * kafkamux.EmbeddedIndexEntryBytes * indexSlackNum / indexSlackDen
}

// othersIndexMemory returns the index memory of the embedded Kafka's topics other than the messages topic,
// as its cleaner last counted them.
func othersIndexMemory(mux *kafkamux.Mux) func() int64 {
	return func() int64 {
		es, ok := mux.EmbeddedStats()
		if !ok {
			return 0
		}
		var n int64
		for _, t := range es.Topics {
			if t.Topic != mux.MessagesTopic() {
				n += t.IndexEntries
			}
		}
		return indexMemory(n)
	}
}

// limitInForce reads the runtime's soft memory limit without changing it; 0 for none.
func limitInForce(read func(int64) int64) int64 {
	if v := read(-1); v != math.MaxInt64 {
		return v
	}
	return 0
}

// formatMiB writes n as MiB for log lines.
func formatMiB(n int64) string { return strconv.FormatInt(n>>20, 10) + " MiB" }

// logMemoryLimit says at start which memory limit is in force and why.
func logMemoryLimit(log *slog.Logger, ml memoryLimit) {
	switch ml.source {
	case "derived":
		log.Info("memory limit derived from the retention bounds and byte budgets (set --memory-limit to choose another)",
			"limit", formatMiB(ml.static+ml.others()), "compacted_and_routed_index", formatMiB(ml.others()))
	case "flag":
		log.Info("memory limit set by --memory-limit", "limit", formatMiB(ml.static))
	case "GOMEMLIMIT":
		log.Info("memory limit set by GOMEMLIMIT", "limit", formatMiB(limitInForce(debug.SetMemoryLimit)))
	}
}
