package chunkstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sort"

	"github.com/dfs-project/dfs/rpc"
)

// openPacks replays the pack files in sequence order into the index: a
// put adds its chunk (a later put of a chunk replaces an earlier one: a
// compaction's copy), a delete removes the put it names. A crash tears at
// most the last batch of the last pack, so a record there that fails its
// checks is taken for a torn tail, and the pack truncated at it, only when
// it lies within the last max(maxBatch, maxRecLen) bytes, no read error
// made it fail, and no sound record follows it. Any other bad record is
// handled as in an earlier pack: a put whose header is sound but whose
// record CRC fails puts its chunk on the corrupt list; a header that
// cannot be read ends that pack's scan (what it held is missing from the
// inventory, and the coordinator copies it again). A pack with such an
// unread region is never appended to nor compacted: records after it
// would not be replayed, and its unread delete records would be lost.
func (s *Store) openPacks() error {
	es, err := s.fs.ReadDir(s.packDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("datanode: read %s: %w", s.packDir(), err)
	}
	var seqs []uint64
	for _, e := range es {
		if seq, ok := parsePackName(e.Name()); ok && !e.IsDir() {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	for i, seq := range seqs {
		if err := s.replayPack(seq, i == len(seqs)-1); err != nil {
			return err
		}
		s.nextSeq = seq + 1
	}
	if n := len(seqs); n > 0 {
		if p := s.packs[seqs[n-1]]; p.size < s.packSize && !p.unread {
			s.active = p
		}
	}
	return nil
}

// recState is what reading one record found.
type recState int

const (
	recOK         recState = iota
	recRotten              // sound header, bad record CRC
	recUnreadable          // no sound header, or the record runs past the end
)

// tornWindow bounds the bytes a crash can tear at the end of the last
// pack: one batch, or one record larger than a batch.
const tornWindow = max(maxBatch, maxRecLen)

func (s *Store) replayPack(seq uint64, last bool) error {
	name := packName(s.packDir(), seq)
	f, err := s.fs.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("datanode: open pack: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("datanode: open pack: %w", err)
	}
	p := &pack{seq: seq, name: name, f: f, size: info.Size(), refs: 1}
	s.packs[seq] = p
	var buf []byte
	off := int64(0)
	for off < p.size {
		h, state, ioErr, why := readRecord(p, off, &buf)
		if state != recOK && last && !ioErr && p.size-off <= tornWindow && !s.soundAfter(p, off, h, state, &buf) {
			s.log.Warn().Str("pack", name).Int64("offset", off).Int64("dropped", p.size-off).Str("reason", why).
				Msg("pack ends in a record that fails its checks: an unacknowledged tail, truncated")
			if err := f.Truncate(off); err != nil {
				return fmt.Errorf("datanode: truncate pack %s: %w", name, err)
			}
			if err := f.Sync(); err != nil {
				return fmt.Errorf("datanode: truncate pack %s: %w", name, err)
			}
			p.size = off
			break
		}
		if state == recUnreadable {
			s.log.Error().Str("pack", name).Int64("offset", off).Int64("unread", p.size-off).Str("reason", why).
				Msg("pack record header unreadable: the rest of this pack is skipped")
			p.dead += p.size - off
			p.unread = true
			break
		}
		loc := packLoc{p: p, off: off, n: h.recLen}
		switch {
		case h.kind == recDelete:
			p.dead += loc.n
			p.tombs = append(p.tombs, tomb{id: h.id, seq: h.targetSeq, off: h.targetOff})
			if cur, ok := s.packed[h.id]; ok && cur.p.seq == h.targetSeq && cur.off == h.targetOff {
				s.dropPackedLocked(h.id)
			}
		case s.isFileLocked(h.id):
			p.dead += loc.n // a chunk file holds it already
		default:
			if _, ok := s.packed[h.id]; ok {
				s.dropPackedLocked(h.id) // an earlier copy
			}
			s.packed[h.id] = loc
			if state == recRotten {
				s.log.Error().Str("pack", name).Int64("offset", off).Str("chunk_id", string(h.id)).Msg("packed chunk fails its record checksum: corrupt")
				s.corrupt = append(s.corrupt, h.id)
			} else {
				s.index[h.id] = Meta{Size: h.size, FrameSize: h.frameSize, Digest: bytes.Clone(h.digest)}
				s.chunks++
			}
		}
		off += h.recLen
	}
	s.used += p.size
	return nil
}

// soundAfter reports whether a sound record follows the bad record h at
// off (state says how it failed), walking the records after it by their
// lengths: then the bad one is not a torn tail, which ends the file.
func (s *Store) soundAfter(p *pack, off int64, h recHeader, state recState, buf *[]byte) bool {
	if state != recRotten {
		return false // no length to find the next record by
	}
	for next := off + h.recLen; next < p.size; {
		h, state, _, _ := readRecord(p, next, buf)
		switch state {
		case recOK:
			return true
		case recUnreadable:
			return false
		}
		next += h.recLen
	}
	return false
}

// readRecord reads the record at off of p into *buf and checks it; ioErr
// says that a read failed (rather than the bytes read failing a check).
func readRecord(p *pack, off int64, buf *[]byte) (h recHeader, state recState, ioErr bool, why string) {
	var hb [recHeaderSize]byte
	if p.size-off < recHeaderSize+recCRCSize {
		return recHeader{}, recUnreadable, false, "short record"
	}
	if _, err := p.f.ReadAt(hb[:], off); err != nil {
		return recHeader{}, recUnreadable, !errors.Is(err, io.EOF), err.Error()
	}
	n, err := idLen(hb[:])
	if err != nil {
		return recHeader{}, recUnreadable, false, err.Error()
	}
	idb := make([]byte, n)
	if _, err := p.f.ReadAt(idb, off+recHeaderSize); err != nil {
		return recHeader{}, recUnreadable, !errors.Is(err, io.EOF), err.Error()
	}
	h, err = decodeHeader(hb[:], idb)
	if err != nil {
		return recHeader{}, recUnreadable, false, err.Error()
	}
	if h.recLen > p.size-off || h.recLen > maxRecLen {
		return recHeader{}, recUnreadable, false, fmt.Sprintf("record of %d bytes runs past the end", h.recLen)
	}
	if int64(cap(*buf)) < h.recLen {
		*buf = make([]byte, h.recLen)
	}
	b := (*buf)[:h.recLen]
	if _, err := p.f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return h, recRotten, true, err.Error()
	}
	h.digest = bytes.Clone(h.digest)
	if !recordCRCOK(b) {
		return h, recRotten, false, "record checksum mismatch"
	}
	return h, recOK, false, ""
}

// compactSoon starts compacting in the background when a sealed pack
// qualifies and no compaction runs.
func (s *Store) compactSoon() {
	s.mu.Lock()
	p := s.compactableLocked()
	s.mu.Unlock()
	if p == nil || !s.compactMu.TryLock() {
		return
	}
	go func() {
		defer s.compactMu.Unlock()
		if err := s.compactAll(); err != nil {
			s.log.Error().Err(err).Msg("pack compaction failed")
		}
	}()
}

// Compact compacts, now, every sealed pack whose dead bytes reach half its
// size (see compact); it waits for a compaction under way first.
func (s *Store) Compact() error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	return s.compactAll()
}

func (s *Store) compactAll() error {
	for range 1 << 20 {
		s.mu.Lock()
		p := s.compactableLocked()
		s.mu.Unlock()
		if p == nil {
			return nil
		}
		if err := s.compact(p); err != nil {
			return err
		}
	}
	return nil
}

// compactableLocked returns a sealed pack whose dead bytes reach half its
// size, the oldest first. The pack with the highest sequence number is
// never compacted, so a sequence number is never used twice (a delete
// record names its put by pack and offset).
func (s *Store) compactableLocked() *pack {
	if s.packErr != nil || s.compactErr != nil {
		return nil
	}
	var top uint64
	for seq := range s.packs {
		top = max(top, seq)
	}
	var best *pack
	for seq, p := range s.packs {
		if p == s.active || seq == top || p.unread || 2*p.dead < p.size {
			continue
		}
		if best == nil || seq < best.seq {
			best = p
		}
	}
	return best
}

// compact copies the live put records of sealed pack p, and the delete
// records in it that still cancel a put in another pack, into the active
// pack through the committer, then removes p. A crash at any point leaves
// either p and some copies (a later put of a chunk replaces an earlier
// one at replay, and a copied delete names the put it cancels, so neither
// resurrects nor loses a chunk) or the copies alone. A record whose CRC
// fails is not copied: its chunk is quarantined, and goes with p.
func (s *Store) compact(p *pack) error {
	s.mu.Lock()
	type rec struct {
		id  rpc.ChunkID
		loc packLoc
	}
	var live []rec
	for id, loc := range s.packed {
		if _, ok := s.index[id]; ok && loc.p == p {
			live = append(live, rec{id, loc})
		}
	}
	var tombs []tomb
	for _, t := range p.tombs {
		if s.packs[t.seq] != nil && t.seq != p.seq {
			tombs = append(tombs, t)
		}
	}
	s.mu.Unlock()
	sort.Slice(live, func(i, j int) bool { return live[i].loc.off < live[j].loc.off })

	for i := 0; i < len(live); {
		var ops []*packOp
		for n := int64(0); i < len(live) && (len(ops) == 0 || n+live[i].loc.n <= maxBatch); i++ {
			r := live[i]
			b := make([]byte, r.loc.n)
			if _, err := p.f.ReadAt(b, r.loc.off); err != nil || !recordCRCOK(b) {
				s.log.Error().Str("pack", p.name).Int64("offset", r.loc.off).Str("chunk_id", string(r.id)).
					Msg("packed chunk fails its record checksum during compaction: corrupt")
				s.quarantinePacked(r.id, r.loc)
				continue
			}
			n += r.loc.n
			ops = append(ops, &packOp{kind: opMove, id: r.id, rec: b, target: r.loc})
		}
		if err := s.enqueueAll(ops); err != nil {
			return fmt.Errorf("compact %s: %w", p.name, err)
		}
	}
	// The delete records still needed go in slices of at most maxBatch
	// bytes, each encoded only when its slice is sent.
	for i := 0; i < len(tombs); {
		var ops []*packOp
		for n := int64(0); i < len(tombs) && (len(ops) == 0 || n+deleteRecordSize(tombs[i].id) <= maxBatch); i++ {
			t := tombs[i]
			n += deleteRecordSize(t.id)
			ops = append(ops, &packOp{kind: opTomb, id: t.id, rec: encodeDelete(t.id, t.seq, t.off), tomb: t})
		}
		if err := s.enqueueAll(ops); err != nil {
			return fmt.Errorf("compact %s: %w", p.name, err)
		}
	}

	s.mu.Lock()
	for id, loc := range s.packed {
		if loc.p != p {
			continue
		}
		if _, ok := s.index[id]; ok {
			s.mu.Unlock()
			return fmt.Errorf("compact %s: chunk %s still lives there", p.name, id)
		}
		delete(s.packed, id) // corrupt: stays listed until Delete
	}
	s.mu.Unlock()
	// p leaves packs only once its file is gone: a pack that stays on
	// disk must stay known, or later compactions would skip its delete
	// records and a restart would resurrect their chunks. A failure stops
	// compaction until a restart.
	if err := s.fs.Remove(p.name); err != nil {
		return s.stopCompaction(fmt.Errorf("compact: remove %s: %w", p.name, err))
	}
	s.mu.Lock()
	if s.packs[p.seq] == p { // else packGone, seeing the file gone, let go of it
		delete(s.packs, p.seq)
		s.used -= p.size
		s.releasePackLocked(p)
	}
	s.mu.Unlock()
	if err := s.fs.SyncDir(s.packDir()); err != nil {
		// The pack may come back after a crash, its delete records
		// no longer copied by later compactions.
		return s.stopCompaction(fmt.Errorf("compact: fsync %s: %w", s.packDir(), err))
	}
	s.log.Info().Str("pack", p.name).Int("moved", len(live)).Msg("pack compacted and removed")
	return nil
}

// stopCompaction records err, which stops compaction until a restart,
// and returns it.
func (s *Store) stopCompaction(err error) error {
	s.mu.Lock()
	s.compactErr = err
	s.mu.Unlock()
	return err
}

// enqueueAll hands ops to the committer at once and waits for all of
// them; a move or tomb found stale is not an error.
func (s *Store) enqueueAll(ops []*packOp) error {
	if len(ops) == 0 {
		return nil
	}
	errs := make(chan error, len(ops))
	for _, op := range ops {
		go func() { errs <- s.enqueue(op) }()
	}
	var first error
	for range ops {
		if err := <-errs; err != nil && !errors.Is(err, errStale) && first == nil {
			first = err
		}
	}
	return first
}
