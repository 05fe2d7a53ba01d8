package datanode

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

const (
	// maxVerifies bounds the VerifyChunk calls that read at once; more
	// wait for a slot.
	maxVerifies = 2
	// scrubMinGap is the least time between the starts of two scrub
	// passes, so a continuous scrubber (interval 0) of a nearly empty
	// store does not spin.
	scrubMinGap = time.Second
	// scrubSaveEvery is how often a pass records its progress.
	scrubSaveEvery = 30 * time.Second
	// scrubStateFile, in the data dir, holds the scrubber's progress.
	scrubStateFile = "scrub-state"
	// paceSlack is the most a pacer that fell behind may catch up.
	paceSlack = time.Second
)

// scrubLoop verifies every stored chunk, pass after pass, until ctx ends.
func (n *Node) scrubLoop(ctx context.Context) {
	if n.cfg.ScrubRate <= 0 {
		n.log.Info().Msg("scrubbing disabled")
		return
	}
	s := &scrubber{
		store:     n.store,
		rate:      n.cfg.ScrubRate,
		interval:  n.cfg.ScrubInterval,
		statePath: filepath.Join(n.cfg.DataDir, scrubStateFile),
		log:       n.log.With().Str("op", "scrub").Logger(),
		corrupt:   n.corruptFound,
		lost:      n.lostFound,
		bytes:     n.metrics.scrubbed,
		clock:     n.clock,
	}
	s.run(ctx)
}

// corruptFound handles a chunk the store quarantined: it is logged and
// reported to the coordinator, which has it replaced from a good copy and
// then deleted.
func (n *Node) corruptFound(id rpc.ChunkID, err error) {
	n.metrics.corrupt.Inc()
	n.log.Error().Err(err).Str("chunk_id", string(id)).Msg("chunk failed verification; no longer served")
	n.reports.corrupted(id)
}

// lostFound handles a chunk whose file the store found gone from disk and
// dropped from its index: it is logged and reported removed, so the
// coordinator stops counting the copy and has it made again elsewhere.
func (n *Node) lostFound(id rpc.ChunkID, err error) {
	n.metrics.lost.Inc()
	n.log.Error().Err(err).Str("chunk_id", string(id)).Msg("chunk file missing from disk; reported lost")
	n.reports.deleted(id)
}

// unusable handles err from opening or checking chunk id when it says the
// chunk was found corrupt or lost; other errors are left to the caller.
func (n *Node) unusable(id rpc.ChunkID, err error) {
	switch {
	case chunkstore.IsCorrupt(err):
		n.corruptFound(id, err)
	case chunkstore.IsLost(err):
		n.lostFound(id, err)
	}
}

// VerifyChunk re-reads one stored chunk now and checks it against its
// digests, as the scrubber does; a corrupt chunk is handled as a scrub
// failure (no longer served, reported). A chunk found corrupt before is
// reported corrupt without reading it again. A chunk whose file is gone
// is not present (and reported lost, as the scrubber would).
func (n *Node) VerifyChunk(ctx context.Context, req *dfspb.VerifyChunkRequest) (*dfspb.VerifyChunkResponse, error) {
	id, err := rpc.ParseChunkID(req.ChunkId)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	v, err := n.verify(ctx, id)
	if err != nil {
		return nil, rpc.ToStatus(err)
	}
	return &dfspb.VerifyChunkResponse{Present: v.present, Corrupt: v.corrupt, Reason: v.reason}, nil
}

// verdict is what a verification found of a chunk: whether this node
// holds it, and whether its copy is corrupt (and why).
type verdict struct {
	present, corrupt bool
	reason           string
}

// corruptBefore is the verdict on a chunk found corrupt before.
var corruptBefore = verdict{present: true, corrupt: true, reason: "found corrupt before; not served"}

// verify checks chunk id now, for VerifyChunk; see there.
func (n *Node) verify(ctx context.Context, id rpc.ChunkID) (verdict, error) {
	if n.store.IsCorrupt(id) {
		return corruptBefore, nil
	}
	select {
	case n.verifies <- struct{}{}:
		defer func() { <-n.verifies }()
	case <-ctx.Done():
		return verdict{}, rpc.Errorf(rpc.Canceled, "chunk %s: verification canceled while waiting", id)
	}
	done := n.metrics.op(opVerify)
	err := n.store.Verify(ctx, id, nil)
	done(err)
	switch {
	case err == nil:
		return verdict{present: true}, nil
	case chunkstore.IsCorrupt(err):
		n.corruptFound(id, err)
		return verdict{present: true, corrupt: true, reason: err.Error()}, nil
	case chunkstore.IsLost(err):
		n.lostFound(id, err)
		return verdict{}, nil
	case rpc.KindOf(err) == rpc.NotFound:
		if n.store.IsCorrupt(id) { // quarantined meanwhile
			return corruptBefore, nil
		}
		return verdict{}, nil
	}
	return verdict{}, err
}

// scrubber verifies every stored chunk, pass after pass, reading at most
// rate bytes per second, so that bit rot is found while good copies
// remain. Its progress is saved in the data dir: a restarted node resumes
// an interrupted pass where it stopped, and waits out the interval after a
// finished one, rather than starting over.
type scrubber struct {
	store     *chunkstore.Store
	rate      int64
	interval  time.Duration
	statePath string
	log       zerolog.Logger
	// corrupt is called with each chunk found corrupt, once the store has
	// quarantined it.
	corrupt func(id rpc.ChunkID, err error)
	// lost is called with each chunk whose file was found gone, once the
	// store has dropped it from its index.
	lost func(id rpc.ChunkID, err error)
	// bytes, when set, counts the bytes checked.
	bytes prometheus.Counter
	// clock tells the time and paces the reads.
	clock clockwork.Clock
}

// scrubState is the scrubber's saved progress.
type scrubState struct {
	// Cursor is the last chunk checked by the pass in progress; empty
	// between passes.
	Cursor string `json:"cursor,omitempty"`
	// Start is when the pass in progress (or the last one) started, End
	// when the last complete pass ended (Unix milliseconds).
	Start int64 `json:"start_unix_ms,omitempty"`
	End   int64 `json:"end_unix_ms,omitempty"`
}

// scrubStats counts one pass.
type scrubStats struct {
	chunks, corrupt, lost, failed int
	bytes                         int64
}

// run scrubs until ctx ends.
func (s *scrubber) run(ctx context.Context) {
	st := s.load()
	s.log.Info().Dur("interval", s.interval).Str("rate", rpc.FormatBytes(s.rate)+"/s").
		Bool("resuming", st.Cursor != "").Msg("scrubbing stored chunks")
	for {
		if st.Cursor == "" {
			due := time.UnixMilli(st.End).Add(s.interval)
			if gap := time.UnixMilli(st.Start).Add(scrubMinGap); gap.After(due) {
				due = gap
			}
			if latest := s.clock.Now().Add(s.interval + scrubMinGap); due.After(latest) {
				due = latest // the clock went back since the progress was saved
			}
			if !sleepUntil(ctx, s.clock, due) {
				return
			}
			st.Start = s.clock.Now().UnixMilli()
		}
		began := s.clock.Now()
		stats := s.pass(ctx, &st)
		if ctx.Err() != nil {
			s.save(st)
			return
		}
		ev := s.log.Debug()
		if stats.corrupt > 0 || stats.lost > 0 || stats.failed > 0 || s.clock.Since(began) >= 10*time.Second {
			ev = s.log.Info()
		}
		ev.Int("chunks", stats.chunks).Int("corrupt", stats.corrupt).Int("lost", stats.lost).Int("failed", stats.failed).
			Str("bytes", rpc.FormatBytes(stats.bytes)).Dur("took", s.clock.Since(began)).Msg("scrub pass done")
	}
}

// pass verifies every chunk after st.Cursor, advancing and now and then
// saving the cursor; a complete pass clears it and records its end.
func (s *scrubber) pass(ctx context.Context, st *scrubState) scrubStats {
	var stats scrubStats
	ids := s.store.IDs()
	i, _ := slices.BinarySearch(ids, rpc.ChunkID(st.Cursor))
	if i < len(ids) && string(ids[i]) == st.Cursor {
		i++
	}
	p := pacer{rate: s.rate, clock: s.clock}
	p.reset()
	pace := func(n int64) error {
		stats.bytes += n
		if s.bytes != nil {
			s.bytes.Add(float64(n))
		}
		return p.wait(ctx, n)
	}
	saved := s.clock.Now()
	for _, id := range ids[i:] {
		err := s.store.Verify(ctx, id, pace)
		switch {
		case ctx.Err() != nil:
			return stats
		case err == nil:
			stats.chunks++
		case chunkstore.IsCorrupt(err):
			stats.corrupt++
			s.corrupt(id, err)
		case chunkstore.IsLost(err):
			// Its file is gone, yet the node did not delete it.
			stats.lost++
			s.lost(id, err)
		case rpc.KindOf(err) == rpc.NotFound:
			// Deleted since the pass began (the store tells a deletion
			// from a lost file).
		default:
			stats.failed++
			s.log.Warn().Err(err).Str("chunk_id", string(id)).Msg("could not verify chunk")
		}
		st.Cursor = string(id)
		if s.clock.Since(saved) >= scrubSaveEvery {
			s.save(*st)
			saved = s.clock.Now()
		}
	}
	st.Cursor, st.End = "", s.clock.Now().UnixMilli()
	s.save(*st)
	return stats
}

// load reads the saved progress; a missing or unreadable file starts
// afresh.
func (s *scrubber) load() scrubState {
	var st scrubState
	b, err := os.ReadFile(s.statePath)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn().Err(err).Msg("cannot read scrub progress; starting a new pass")
		}
		return st
	}
	if err := json.Unmarshal(b, &st); err != nil {
		s.log.Warn().Err(err).Msg("cannot read scrub progress; starting a new pass")
		return scrubState{}
	}
	if st.Cursor != "" {
		if _, err := rpc.ParseChunkID(st.Cursor); err != nil {
			return scrubState{}
		}
	}
	return st
}

// save records the progress. Losing it (or tearing it in a crash: it is
// not fsynced) costs a repeated pass, nothing more, so a failure is only
// logged.
func (s *scrubber) save(st scrubState) {
	b, err := json.Marshal(st)
	if err == nil {
		tmp := s.statePath + ".tmp"
		if err = os.WriteFile(tmp, append(b, '\n'), 0o640); err == nil {
			err = os.Rename(tmp, s.statePath)
		}
	}
	if err != nil {
		s.log.Warn().Err(err).Msg("cannot save scrub progress")
	}
}

// sleepUntil waits on clk until t or ctx ends; it reports whether ctx is
// still live.
func sleepUntil(ctx context.Context, clk clockwork.Clock, t time.Time) bool {
	return rpc.Sleep(ctx, clk, clk.Until(t)) == nil
}

// pacer caps a reader at rate bytes per second: after each read it sleeps
// until the bytes read so far are due, so n bytes never take less than
// n/rate from reset. A reader that fell behind (a slow disk) may catch up
// by at most paceSlack. It tells the time on clock (nil: the real clock).
type pacer struct {
	rate  int64
	clock clockwork.Clock
	next  time.Time
}

func (p *pacer) reset() {
	if p.clock == nil {
		p.clock = clockwork.NewRealClock()
	}
	p.next = p.clock.Now()
}

// wait accounts n bytes read and sleeps until they are due; it returns
// Canceled when ctx ends first. reset must have been called.
func (p *pacer) wait(ctx context.Context, n int64) error {
	now := p.clock.Now()
	if floor := now.Add(-paceSlack); p.next.Before(floor) {
		p.next = floor
	}
	ns := n * int64(time.Second) // n is at most a frame: no overflow
	d := ns / p.rate
	if ns%p.rate != 0 {
		d++ // rounded up, so the sum of the waits is never short of n/rate
	}
	p.next = p.next.Add(time.Duration(d))
	if !sleepUntil(ctx, p.clock, p.next) {
		return rpc.Errorf(rpc.Canceled, "scrub canceled")
	}
	return nil
}
