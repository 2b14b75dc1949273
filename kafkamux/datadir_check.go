package kafkamux

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// kfakePersistVersion is the newest format of the embedded Kafka's data dir (kfake's currentPersistVersion in
// the pinned kfake version) that this build reads. A data dir stamped with a newer one was written by a newer
// Ferry.
const kfakePersistVersion = 1

// ErrDataDirCorrupt is wrapped by the error New returns when the embedded Kafka's data dir cannot be read as
// it is: a file is damaged, or the dir was written by a newer version. Nothing in the dir has been changed.
var ErrDataDirCorrupt = errors.New("data dir corrupt or from a newer version")

// checkDataDir checks, before kfake opens it, that dir holds an embedded Kafka data dir this build can read
// without losing anything: kfake itself would start on a fresh, empty state when meta.json is missing, and
// would truncate a segment file at its first damaged record batch — and with it every batch after it — with
// only a warning. So Ferry refuses to start instead, with one line naming the file and what to do
// (docs/operations.md, "A damaged or newer data dir"), and changes nothing.
//
// It checks meta.json and topics.json (present, valid JSON, format version at most kfakePersistVersion) and
// every record batch of every segment file (framing, magic byte, CRC-32C). The one damage it lets through is
// an incomplete batch at the very end of a partition's last segment: the tail of a write cut short by a crash,
// which was never acknowledged, and which kfake drops. It reads every segment once, mapped into memory one
// file at a time per worker (the page cache then serves kfake's own load), partitions in parallel; runs on
// the goroutine calling New.
//
// It also returns what it learnt of the transactions in each partition, for completeTransactions.
func checkDataDir(dir string) ([]*partTxns, error) {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("data dir %s: %s; nothing was changed: %w", dir, fmt.Sprintf(format, args...), ErrDataDirCorrupt)
	}
	metaFound, err := checkVersionFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return nil, corrupt("%v", err)
	}
	topicsFound, err := checkVersionFile(filepath.Join(dir, "topics.json"))
	if err != nil {
		return nil, corrupt("%v", err)
	}
	parts, err := os.ReadDir(filepath.Join(dir, "partitions"))
	if err != nil && !os.IsNotExist(err) {
		return nil, corrupt("cannot list partitions: %v", err)
	}
	if !metaFound {
		if topicsFound || len(parts) > 0 {
			// kfake would take the dir as new and write an empty topics.json over the old one.
			return nil, corrupt("meta.json is missing but Kafka data is there (restore meta.json from a backup, or move the data dir away to start empty)")
		}
		return nil, nil // a new data dir
	}
	// Partitions are checked in parallel, as kfake loads them: on a data dir of many GiB the check is bound by
	// CRC-32C and memory bandwidth, not by one core.
	jobs := make(chan int) // index into parts
	errs := make([]error, len(parts))
	txns := make([]*partTxns, len(parts))
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), max(len(parts), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				txns[i], errs[i] = checkPartitionDir(filepath.Join(dir, "partitions", parts[i].Name()))
			}
		}()
	}
	for i, p := range parts {
		if p.IsDir() {
			jobs <- i
		}
	}
	close(jobs)
	wg.Wait()
	for _, err := range errs { // the first damaged partition in name order, whatever finished first
		if err != nil {
			return nil, corrupt("%v", err)
		}
	}
	return slices.DeleteFunc(txns, func(t *partTxns) bool { return t == nil }), nil
}

// checkVersionFile checks that one of kfake's JSON state files, if present, parses and carries a format
// version this build reads.
func checkVersionFile(path string) (found bool, err error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	var v struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return true, fmt.Errorf("%s is not valid JSON (%v): the file is damaged (restore it from a backup)", path, err)
	}
	switch {
	case v.Version == nil:
		return true, fmt.Errorf("%s has no format version: the file is damaged (restore it from a backup)", path)
	case *v.Version > kfakePersistVersion:
		return true, fmt.Errorf("%s has format version %d, newer than the %d this Ferry reads: the data dir was written by a newer Ferry (run that version, or move the data dir away to start empty)",
			path, *v.Version, kfakePersistVersion)
	case *v.Version < 0:
		return true, fmt.Errorf("%s has format version %d: the file is damaged (restore it from a backup)", path, *v.Version)
	}
	return true, nil
}

// checkPartitionDir checks the record batches of every segment file (<base offset>.dat) of a partition, and
// returns the state of the transactions written to it.
func checkPartitionDir(pdir string) (*partTxns, error) {
	entries, err := os.ReadDir(pdir)
	if err != nil {
		return nil, fmt.Errorf("cannot list %s: %v", pdir, err)
	}
	var bases []int64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".dat")
		if !ok {
			continue
		}
		if base, err := strconv.ParseInt(name, 10, 64); err == nil {
			bases = append(bases, base)
		}
	}
	slices.Sort(bases)
	txns := newPartTxns(pdir)
	for i, base := range bases {
		path := filepath.Join(pdir, strconv.FormatInt(base, 10)+".dat")
		data, release, err := mapFile(path)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %v", path, err)
		}
		txns.segment(path)
		err = checkSegment(path, data, i == len(bases)-1, txns.batch)
		release()
		if err != nil {
			return nil, err
		}
	}
	return txns, nil
}

// Record batch layout (Kafka's v2 format, what kfake stores): base offset (8), length (4, the bytes after it),
// partition leader epoch (4), magic (1, = 2), CRC-32C (4) of everything after it.
const (
	batchHeadLen  = 12
	batchCRCStart = 21
	batchMinLen   = 61 // the fixed header of an empty batch
	batchMaxLen   = 1 << 30
)

// kfakeIndexEntryLen is the size of one entry of kfake's segment index (<base offset>.idx): one per record
// batch of the segment, in the same order.
const kfakeIndexEntryLen = 15

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkSegment walks the record batches of one segment file's content, calling visit with each whole batch
// and its position. last says it is its partition's last segment, whose incomplete final batch is a crash's
// torn write and not damage.
func checkSegment(path string, data []byte, last bool, visit func(pos int64, batch []byte)) error {
	size := int64(len(data))
	damaged := func(pos int64, why string) error {
		if last && allZero(data[pos:]) {
			return nil // the end of the log was never written: a crash after the file grew (power loss)
		}
		return fmt.Errorf("%s: record batch at byte %d: %s: the file is damaged (to keep the batches before it, truncate the file there: truncate -s %d %s; or restore the data dir from a backup)",
			path, pos, why, pos, path)
	}
	for pos := int64(0); pos < size; {
		if size-pos < batchCRCStart {
			if last {
				return nil // a torn write at the end of the log
			}
			return damaged(pos, fmt.Sprintf("only %d of its %d header bytes", size-pos, batchCRCStart))
		}
		head := data[pos : pos+batchCRCStart]
		length := int64(binary.BigEndian.Uint32(head[8:12]))
		total := batchHeadLen + length
		switch {
		case total < batchMinLen || length > batchMaxLen:
			return damaged(pos, fmt.Sprintf("impossible length %d", length))
		case head[16] != 2:
			return damaged(pos, fmt.Sprintf("magic byte %d, want 2", head[16]))
		case pos+total > size:
			if last {
				return nil // a torn write at the end of the log
			}
			return damaged(pos, fmt.Sprintf("its %d bytes run past the end of the file (%d bytes)", total, size))
		}
		if stored, got := binary.BigEndian.Uint32(head[17:21]), crc32.Checksum(data[pos+batchCRCStart:pos+total], castagnoli); stored != got {
			return damaged(pos, fmt.Sprintf("CRC mismatch (stored %08x, computed %08x)", stored, got))
		}
		visit(pos, data[pos:pos+total])
		pos += total
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
