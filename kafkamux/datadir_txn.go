package kafkamux

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Transactions cut short by a crash of the embedded Kafka.
//
// The embedded Kafka (kfake) ends a transaction by writing its marker into each partition the transaction
// wrote to, one partition after the other, and logs the outcome in pids.log after the last one. Ferry runs it
// in its own process, so a SIGKILL or a power cut can stop it between two markers: the commit is then in some
// partitions and not in others. At its next start kfake replays each partition on its own and takes a
// transaction without a marker as aborted, in memory only — so a message could come back without its QoS 2
// packet-id record (lost, since the client's next PUBLISH finds the record and is only acknowledged) or the
// reverse (stored twice); and since nothing is written, the same data comes back *committed* after a later
// crash, once a newer transaction of the producer commits in that partition (kfake's replay pairs a marker
// with the oldest open data of its producer).
//
// Kafka's transaction coordinator completes such transactions at recovery from its transaction log. Ferry does
// the same before kfake opens the data dir, from what checkDataDir read:
//
//   - A transaction with data and no marker in a partition is **committed** when another partition holds the
//     COMMIT marker of the same producer and epoch: its commit was decided, and readers may have read the
//     committed part already. Ferry appends the COMMIT marker to each partition that lacks it.
//   - Otherwise it was never decided, and is **aborted**: Ferry appends an ABORT marker to each partition with
//     its data, and logs the abort in pids.log with the producer's epoch bumped, as kfake does when it aborts
//     a transaction that timed out — so a producer of that epoch still alive is fenced.
//
// A (producer id, epoch) pair names one transaction only for producers that bump their epoch at each EndTxn
// (KIP-890 part 2, which franz-go uses with the embedded Kafka). For an older producer, the same pair spans
// many transactions, and a COMMIT marker of an earlier one must not commit a later one: a transaction is
// completed as committed only when pids.log's last entry for its producer is the InitProducerId or epoch bump
// that began that epoch (nothing has ended a transaction of that epoch since), and no partition holds two
// transactions of that producer and epoch. Anything else is left as kfake would take it (aborted).

// pidEpoch names one transaction of a producer.
type pidEpoch struct {
	pid   int64
	epoch int16
}

// partTxns is what checkDataDir learnt about the transactions written to one partition.
type partTxns struct {
	dir string

	// The last segment file: its path, the bytes of its whole batches, how many there are.
	lastSeg string
	end     int64
	batches int64
	// The offset after the last batch, and the leader epoch of the last batch (kfake stamps every batch, and
	// its index entry, with the partition's epoch).
	next        int64
	leaderEpoch int32
	lastTxnData bool // the last batch is transactional data (see idxShort in completeTransactions)

	open    map[int64]int16   // per producer: the epoch of its transaction with data and no marker after it
	markers map[pidEpoch]bool // the markers of transactions (true: COMMIT)
	starts  map[pidEpoch]int  // transactions begun here, per producer and epoch
	orphans int               // open transactions followed by a newer one of the same producer (cannot be fixed by appending)
}

func newPartTxns(dir string) *partTxns {
	return &partTxns{dir: dir, open: map[int64]int16{}, markers: map[pidEpoch]bool{}, starts: map[pidEpoch]int{}}
}

// segment starts the next segment file.
func (p *partTxns) segment(path string) { p.lastSeg, p.end, p.batches = path, 0, 0 }

// Record batch fields (Kafka's v2 format) after the CRC.
const (
	batchAttrsAt    = 21 // int16
	batchLastDelta  = 23 // int32
	batchProducerAt = 43 // int64 producer id, then int16 producer epoch
	batchRecordsAt  = 61 // the records

	attrTransactional = 0x10
	attrControl       = 0x20
)

// batch takes one whole, checked record batch at pos of the current segment.
func (p *partTxns) batch(pos int64, b []byte) {
	p.end, p.batches = pos+int64(len(b)), p.batches+1
	p.next = int64(binary.BigEndian.Uint64(b[0:8])) + int64(int32(binary.BigEndian.Uint32(b[batchLastDelta:]))) + 1
	p.leaderEpoch = int32(binary.BigEndian.Uint32(b[12:16]))
	attrs := binary.BigEndian.Uint16(b[batchAttrsAt:])
	p.lastTxnData = attrs&attrTransactional != 0 && attrs&attrControl == 0
	if attrs&attrTransactional == 0 {
		return // not part of a transaction
	}
	id := pidEpoch{int64(binary.BigEndian.Uint64(b[batchProducerAt:])), int16(binary.BigEndian.Uint16(b[batchProducerAt+8:]))}
	if attrs&attrControl == 0 {
		if epoch, ok := p.open[id.pid]; ok {
			if epoch == id.epoch {
				return // more data of the open transaction
			}
			// Data of an older epoch with no marker, then a newer transaction: the older one was cut short by
			// a crash before Ferry completed such transactions at start. Only rewriting the log could fix it;
			// kfake pairs it with the newer transaction's marker.
			p.orphans++
		}
		p.open[id.pid] = id.epoch
		p.starts[id]++
		return
	}
	if commit, ok := controlIsCommit(b); ok && commit {
		p.markers[id] = true
	} else if _, seen := p.markers[id]; !seen {
		p.markers[id] = false // kfake takes an unreadable marker as an abort, and so do we
	}
	delete(p.open, id.pid)
}

// controlIsCommit reads the type of a control batch's first record: COMMIT or ABORT.
func controlIsCommit(b []byte) (commit, ok bool) {
	var r kmsg.Record
	if err := r.ReadFrom(b[batchRecordsAt:]); err != nil || len(r.Key) < 4 {
		return false, false
	}
	var k kmsg.ControlRecordKey
	if err := k.ReadFrom(r.Key); err != nil {
		return false, false
	}
	return k.Type == kmsg.ControlRecordKeyTypeCommit, true
}

// completeTransactions completes, in the data dir, the transactions a crash cut short (see above). It runs
// after checkDataDir and before kfake opens the dir, and logs one line per transaction it completes. A
// failure to write is logged and leaves the partition as kfake would take it.
func completeTransactions(dir string, parts []*partTxns, log *slog.Logger) {
	committed := map[pidEpoch]bool{}
	repeated := map[pidEpoch]bool{}
	orphans := 0
	for _, p := range parts {
		for id, commit := range p.markers {
			if commit {
				committed[id] = true
			}
		}
		for id, n := range p.starts {
			if n > 1 {
				repeated[id] = true
			}
		}
		orphans += p.orphans
	}
	if orphans > 0 {
		log.Warn("embedded Kafka: data of transactions cut short by an earlier crash lies before newer transactions; it cannot be completed in place",
			"transactions", orphans, "data_dir", dir)
	}
	byTxn := map[pidEpoch][]*partTxns{} // the partitions where each open transaction has data
	for _, p := range parts {
		for pid, epoch := range p.open {
			id := pidEpoch{pid, epoch}
			byTxn[id] = append(byTxn[id], p)
		}
	}
	if len(byTxn) == 0 {
		return
	}
	last := lastPIDEntries(dir, log)
	for id, ps := range byTxn {
		commit := committed[id] && !repeated[id]
		if commit {
			e, ok := last[id.pid]
			commit = ok && e.Type == "init" && e.Epoch == id.epoch && e.Commit == nil
		}
		outcome := "aborted"
		if commit {
			outcome = "committed"
		}
		if committed[id] && !commit {
			log.Warn("embedded Kafka: a transaction cut short by a crash may have been committed, but its producer reuses epochs; it stays aborted",
				"producer_id", id.pid, "epoch", id.epoch)
		}
		var names []string
		for _, p := range ps {
			// An abort marker carries the bumped epoch, as kfake writes it when a transaction times out.
			epoch := id.epoch
			if !commit {
				epoch++
			}
			if err := appendMarker(p, id.pid, epoch, commit); err != nil {
				log.Warn("embedded Kafka: cannot complete a transaction cut short by a crash; its data there stays aborted",
					"partition", filepath.Base(p.dir), "producer_id", id.pid, "epoch", id.epoch, "err", err)
				continue
			}
			names = append(names, filepath.Base(p.dir))
		}
		if !commit {
			if err := appendPIDEntry(dir, pidLogLine{Type: "timeout", PID: id.pid, Epoch: id.epoch + 1}); err != nil {
				log.Warn("embedded Kafka: cannot log the abort of a transaction cut short by a crash", "producer_id", id.pid, "err", err)
			}
		}
		slices.Sort(names)
		log.Warn("embedded Kafka: completed a transaction a crash cut short", "outcome", outcome,
			"producer_id", id.pid, "epoch", id.epoch, "partitions", strings.Join(names, ","))
	}
}

// appendMarker appends a transaction marker (a control batch) of producer pid, epoch to a partition's last
// segment, and its index entry. A torn write at the end of the segment — which kfake would cut off — is cut
// off first, so the marker follows the last whole batch.
func appendMarker(p *partTxns, pid int64, epoch int16, commit bool) error {
	idxPath := strings.TrimSuffix(p.lastSeg, ".dat") + ".idx"
	idx, err := os.ReadFile(idxPath)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	entries := int64(len(idx)) / kfakeIndexEntryLen
	switch {
	case entries >= p.batches: // kfake cuts index entries past the last batch
	case entries == p.batches-1:
		// kfake writes a batch, then its index entry: a crash in between leaves the last batch without one, and
		// kfake would read it as data outside any transaction. Write the entry the batch would have had.
	default:
		return fmt.Errorf("%s holds %d entries for %d batches", idxPath, entries, p.batches)
	}
	seg, err := os.OpenFile(p.lastSeg, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer seg.Close()
	if err := seg.Truncate(p.end); err != nil {
		return err
	}
	marker := markerBatch(p.next, p.leaderEpoch, pid, epoch, commit)
	if _, err := seg.WriteAt(marker, p.end); err != nil {
		return err
	}
	if err := seg.Sync(); err != nil {
		return err
	}
	ix, err := os.OpenFile(idxPath, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer ix.Close()
	at := min(entries, p.batches) * kfakeIndexEntryLen
	var add []byte
	if entries < p.batches {
		add = append(add, indexEntry(p.leaderEpoch, p.lastTxnData)...)
	}
	add = append(add, indexEntry(p.leaderEpoch, false)...)
	if err := ix.Truncate(at); err != nil {
		return err
	}
	if _, err := ix.WriteAt(add, at); err != nil {
		return err
	}
	if err := ix.Sync(); err != nil {
		return err
	}
	p.end += int64(len(marker))
	p.batches++
	p.next++
	return nil
}

// markerBatch encodes a control batch holding one COMMIT or ABORT marker at offset.
func markerBatch(offset int64, leaderEpoch int32, pid int64, epoch int16, commit bool) []byte {
	key := kmsg.ControlRecordKey{Type: kmsg.ControlRecordKeyTypeAbort}
	if commit {
		key.Type = kmsg.ControlRecordKeyTypeCommit
	}
	value := kmsg.EndTxnMarker{} // coordinator epoch 0: kfake is its own coordinator
	rec := kmsg.Record{Key: key.AppendTo(nil), Value: value.AppendTo(nil)}
	rec.Length = int32(len(rec.AppendTo(nil)) - 1) // the length's own varint is one byte here
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{
		FirstOffset:          offset,
		PartitionLeaderEpoch: leaderEpoch,
		Magic:                2,
		Attributes:           attrControl | attrTransactional,
		FirstTimestamp:       now,
		MaxTimestamp:         now,
		ProducerID:           pid,
		ProducerEpoch:        epoch,
		FirstSequence:        -1,
		NumRecords:           1,
		Records:              rec.AppendTo(nil),
	}
	enc := b.AppendTo(nil)
	binary.BigEndian.PutUint32(enc[8:12], uint32(len(enc)-batchHeadLen))
	binary.BigEndian.PutUint32(enc[17:21], crc32.Checksum(enc[batchCRCStart:], castagnoli))
	return enc
}

// indexEntry encodes one entry of kfake's segment index: format version, a check byte (the low byte of the
// CRC-32C of the rest), the leader epoch, the running maximum timestamp (which kfake recomputes at load, so 0),
// and a flags byte (bit 0: the batch is data of a transaction).
func indexEntry(leaderEpoch int32, inTxn bool) []byte {
	e := make([]byte, kfakeIndexEntryLen)
	e[0] = kfakePersistVersion
	binary.LittleEndian.PutUint32(e[2:6], uint32(leaderEpoch))
	if inTxn {
		e[14] = 1
	}
	e[1] = byte(crc32.Checksum(e[2:], castagnoli))
	return e
}

// pidLogLine is one entry of kfake's producer log (pids.log).
type pidLogLine struct {
	Type    string `json:"type"` // init, endtx, timeout
	PID     int64  `json:"pid"`
	Epoch   int16  `json:"epoch"`
	TxID    string `json:"txid,omitempty"`
	Timeout int32  `json:"timeout,omitempty"`
	Commit  *bool  `json:"commit,omitempty"`
}

// pids.log frames each JSON entry with its length (of what follows the CRC), a CRC-32C of the version and the
// data, and a format version; little-endian.
const pidEntryHead = 10

// lastPIDEntries reads pids.log and returns the last entry of each producer. A damaged tail ends the read, as
// it ends kfake's.
func lastPIDEntries(dir string, log *slog.Logger) map[int64]pidLogLine {
	last := map[int64]pidLogLine{}
	raw, err := os.ReadFile(filepath.Join(dir, "pids.log"))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("embedded Kafka: cannot read the producer log", "err", err)
		}
		return last
	}
	for pos := 0; pos+pidEntryHead <= len(raw); {
		n := int(binary.LittleEndian.Uint32(raw[pos:]))
		if n < 2 || pos+8+n > len(raw) {
			break
		}
		body := raw[pos+8 : pos+8+n]
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(raw[pos+4:]) {
			break
		}
		var e pidLogLine
		if json.Unmarshal(body[2:], &e) == nil {
			last[e.PID] = e
		}
		pos += 8 + n
	}
	return last
}

// appendPIDEntry appends one entry to pids.log.
func appendPIDEntry(dir string, e pidLogLine) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	buf := make([]byte, pidEntryHead+len(data))
	binary.LittleEndian.PutUint32(buf[0:4], uint32(2+len(data)))
	binary.LittleEndian.PutUint16(buf[8:10], kfakePersistVersion)
	copy(buf[pidEntryHead:], data)
	binary.LittleEndian.PutUint32(buf[4:8], crc32.Checksum(buf[8:], castagnoli))
	f, err := os.OpenFile(filepath.Join(dir, "pids.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(buf)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
