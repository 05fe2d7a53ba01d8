package datanode

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/internal/testdisk"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestScrubberFindsCorruption: the scrubber finds a flipped data byte and
// a flipped stored digest; the chunks stop being served and counted, are
// reported corrupt (also in full reports) and keep their files until the
// coordinator deletes them, after which they are never reported again.
func TestScrubberFindsCorruption(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	n := startNode(t, coord, filesOnly, func(cfg *Config) {
		cfg.ScrubRate = 1 << 30
		cfg.ScrubInterval = 0 // continuous: passes a second apart
		cfg.InventoryInterval = 200 * time.Millisecond
	})
	dn := client(t, n)
	size := 3*testFrame + 100
	good, badData, badDigest := chunkID(t, 1), chunkID(t, 2), chunkID(t, 3)
	digests := map[rpc.ChunkID][]byte{}
	for i, id := range []rpc.ChunkID{good, badData, badDigest} {
		digests[id] = upload(t, dn, id, chunkData(size, byte(i)), testFrame)
	}
	eventually(t, "the chunks are reported", func() bool {
		return coord.Has(n.ID(), good) && coord.Has(n.ID(), badData) && coord.Has(n.ID(), badDigest)
	})
	testdisk.FlipByte(t, n.Store().ChunkPath(badData), testFrame+7)
	testdisk.FlipByte(t, n.Store().ChunkPath(badDigest), int64(size)+sha256.Size+3) // the second frame digest
	want := []string{string(badData), string(badDigest)}
	eventually(t, "the scrubber reports both damaged chunks", func() bool { return slices.Equal(coord.Corrupt(n.ID()), want) })

	is.True(coord.Has(n.ID(), good))                                      // the intact chunk still counts
	is.True(!coord.Has(n.ID(), badData) && !coord.Has(n.ID(), badDigest)) // the damaged ones no longer
	is.Equal(n.Store().Usage().Chunks, int64(1))                          // nor here
	for _, id := range []rpc.ChunkID{badData, badDigest} {
		_, err := dn.PrepareChunkDownload(t.Context(), &dfspb.PrepareChunkDownloadRequest{ChunkId: string(id)})
		is.Equal(rpc.KindOf(rpc.FromStatus(err)), rpc.NotFound) // a corrupt chunk is not served
		_, err = os.Stat(n.Store().ChunkPath(id) + ".corrupt")
		is.NoErr(err) // but its file stays, marked, until the coordinator deletes it
	}
	st, err := dn.StatChunks(t.Context(), &dfspb.StatChunksRequest{ChunkIds: []string{string(good), string(badData)}})
	is.NoErr(err)
	is.True(st.Chunks[0].Present && !st.Chunks[1].Present) // nor stat'ed
	_, err = download(t.Context(), dn, chunkstream.Expect{ChunkID: good, Size: int64(size), FrameSize: testFrame, Digest: digests[good]})
	is.NoErr(err) // the intact chunk is served

	// Full reports carry the corrupt list too.
	full := coord.FullReports(n.ID())
	eventually(t, "a full report", func() bool { return coord.FullReports(n.ID()) > full })
	is.Equal(coord.Corrupt(n.ID()), want) // a full report still names the damaged chunks

	used := n.Store().Usage().Used
	resp, err := dn.BulkDeleteChunk(t.Context(), &dfspb.BulkDeleteChunkRequest{ChunkIds: want})
	is.NoErr(err)
	is.Equal(resp.Deleted, uint32(2))                                        // the coordinator deletes the damaged copies
	is.Equal(resp.BytesFreed, 2*chunkstore.FileSize(int64(size), testFrame)) // and learns the space they took
	is.Equal(n.Store().Usage().Used, used-resp.BytesFreed)                   // which is free again
	is.Equal(len(n.Store().Corrupt()), 0)                                    // the node forgets them
	eventually(t, "the deletions are reported", func() bool { return len(coord.Corrupt(n.ID())) == 0 })
	full = coord.FullReports(n.ID())
	eventually(t, "another full report", func() bool { return coord.FullReports(n.ID()) > full+1 })
	is.Equal(len(coord.Corrupt(n.ID())), 0) // deleted chunks are not reported again
	is.True(coord.Has(n.ID(), good))        // and the intact one still is
}

// TestCorruptAtStartIsReported: a chunk whose metadata was found damaged
// when the node started is reported corrupt in the first full report.
func TestCorruptAtStartIsReported(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	s := openStore(t, dir, testCap)
	id := chunkID(t, 1)
	put(t, s, id, chunkData(2*testFrame, 1))
	testdisk.FlipByte(t, s.ChunkPath(id), 2*testFrame+40) // the chunk digest in the footer
	coord := datanodetest.Start(t)
	n := startNode(t, coord, func(cfg *Config) { cfg.DataDir = dir })
	eventually(t, "the damaged chunk is reported", func() bool { return slices.Equal(coord.Corrupt(n.ID()), []string{string(id)}) })
	v, err := client(t, n).VerifyChunk(t.Context(), &dfspb.VerifyChunkRequest{ChunkId: string(id)})
	is.NoErr(err)
	is.True(v.Present && v.Corrupt) // VerifyChunk agrees
}

// TestVerifyChunk checks chunks on request: an intact one passes, a
// damaged one is handled like a scrub failure.
func TestVerifyChunk(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	n := startNode(t, coord, filesOnly)
	dn := client(t, n)
	size := 2*testFrame + 1
	good, badData, badMeta := chunkID(t, 1), chunkID(t, 2), chunkID(t, 3)
	for i, id := range []rpc.ChunkID{good, badData, badMeta} {
		upload(t, dn, id, chunkData(size, byte(i)), testFrame)
	}
	eventually(t, "the chunks are reported", func() bool { return coord.Has(n.ID(), badData) && coord.Has(n.ID(), badMeta) })
	testdisk.FlipByte(t, n.Store().ChunkPath(badData), int64(size)-1)                                 // the last byte of the last frame
	testdisk.FlipByte(t, n.Store().ChunkPath(badMeta), chunkstore.FileSize(int64(size), testFrame)-1) // the footer's chunk digest

	verify := func(id string) *dfspb.VerifyChunkResponse {
		t.Helper()
		v, err := dn.VerifyChunk(t.Context(), &dfspb.VerifyChunkRequest{ChunkId: id})
		is.NoErr(err) // VerifyChunk answers
		return v
	}
	v := verify(string(good))
	is.True(v.Present && !v.Corrupt) // an intact chunk passes
	v = verify(string(badData))
	is.True(v.Present && v.Corrupt)                                               // a flipped data byte is found
	is.True(strings.Contains(v.Reason, "frame checksum mismatch at offset 8192")) // and located
	v = verify(string(badMeta))
	is.True(v.Present && v.Corrupt)                         // a damaged footer is found
	is.True(strings.Contains(v.Reason, "corrupt metadata")) // and named
	v = verify(string(badData))
	is.True(v.Present && v.Corrupt) // asking again gives the same answer
	v = verify(string(chunkID(t, 4)))
	is.True(!v.Present) // a chunk the node does not hold

	_, err := dn.VerifyChunk(t.Context(), &dfspb.VerifyChunkRequest{ChunkId: "../x_0"})
	is.Equal(rpc.KindOf(rpc.FromStatus(err)), rpc.Invalid) // a bad id is refused

	want := []string{string(badData), string(badMeta)}
	eventually(t, "the damaged chunks are reported", func() bool { return slices.Equal(coord.Corrupt(n.ID()), want) })
	_, err = dn.PrepareChunkDownload(t.Context(), &dfspb.PrepareChunkDownloadRequest{ChunkId: string(badData)})
	is.Equal(rpc.KindOf(rpc.FromStatus(err)), rpc.NotFound) // and no longer served
}

// testScrubber returns a scrubber of s reading at rate, recording the
// chunks it finds corrupt.
func testScrubber(t *testing.T, s *chunkstore.Store, rate int64) (*scrubber, *[]rpc.ChunkID) {
	var found []rpc.ChunkID
	return &scrubber{
		store: s, rate: rate, interval: time.Hour,
		statePath: filepath.Join(t.TempDir(), scrubStateFile),
		log:       zerolog.New(zerolog.NewTestWriter(t)),
		corrupt:   func(id rpc.ChunkID, err error) { found = append(found, id) },
		lost:      func(id rpc.ChunkID, err error) { t.Errorf("chunk %s taken for lost: %v", id, err) },
		clock:     clockwork.NewRealClock(),
	}, &found
}

// TestScrubPass: one pass checks every chunk, finds the damaged ones,
// reads at most at its rate, and records its progress.
func TestScrubPass(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	const size = 4 * testFrame
	var ids []rpc.ChunkID
	for i := range 5 {
		id := chunkID(t, i)
		put(t, s, id, chunkData(size, byte(i)))
		ids = append(ids, id)
	}
	corrupt(t, s, ids[3], func(b []byte) []byte { b[5] ^= 1; return b })
	const rate = 256 << 10
	sc, found := testScrubber(t, s, rate)

	var st scrubState
	began := time.Now()
	stats := sc.pass(context.Background(), &st)
	took := time.Since(began)
	is.Equal(stats.chunks, 4)               // four chunks are intact
	is.Equal(stats.corrupt, 1)              // one is not
	is.Equal(*found, []rpc.ChunkID{ids[3]}) // and is handed on
	// Every byte of the intact chunks' files is read, and the damaged
	// chunk's up to the frame that fails.
	is.Equal(stats.bytes, 4*chunkstore.FileSize(size, testFrame)+chunkstore.FileSize(size, testFrame)-size+testFrame)
	is.True(took >= time.Duration(stats.bytes)*time.Second/rate) // no faster than the rate
	is.True(!s.Has(ids[3]))                                      // the damaged chunk is out of service
	is.Equal(s.Corrupt(), []rpc.ChunkID{ids[3]})                 // and listed corrupt
	is.Equal(st.Cursor, "")                                      // the pass is complete
	is.True(st.End >= began.UnixMilli())                         // and its end recorded
	is.Equal(sc.load(), st)                                      // on disk
}

// TestScrubResumes: a pass resumes after the last chunk a previous one
// checked, and a missing or damaged progress file starts afresh.
func TestScrubResumes(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	var ids []rpc.ChunkID
	for i := range 4 {
		id := chunkID(t, i)
		put(t, s, id, chunkData(100, byte(i)))
		ids = append(ids, id)
	}
	sc, _ := testScrubber(t, s, 1<<30)
	st := scrubState{Cursor: string(ids[1]), Start: 1}
	stats := sc.pass(context.Background(), &st)
	is.Equal(stats.chunks, 2) // only the chunks after the cursor

	st = scrubState{Cursor: string(ids[1]) + "x"} // the cursor chunk is gone
	_ = os.Remove(sc.statePath)
	stats = sc.pass(context.Background(), &st)
	is.Equal(stats.chunks, 2) // resumes after where it would have been

	is.NoErr(os.WriteFile(sc.statePath, []byte("{not json"), 0o640))
	is.Equal(sc.load(), scrubState{}) // a damaged progress file starts afresh
	b, _ := json.Marshal(scrubState{Cursor: "../x"})
	is.NoErr(os.WriteFile(sc.statePath, b, 0o640))
	is.Equal(sc.load(), scrubState{}) // as does a bad cursor
}

// TestScrubCanceled: a canceled pass stops at once, leaving the cursor at
// the last chunk it finished.
func TestScrubCanceled(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	for i := range 3 {
		put(t, s, chunkID(t, i), chunkData(4*testFrame, byte(i)))
	}
	sc, _ := testScrubber(t, s, 1) // a byte a second: it would take days
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var st scrubState
	stats := sc.pass(ctx, &st)
	is.Equal(stats.chunks, 0)  // nothing checked
	is.Equal(st.Cursor, "")    // nothing passed
	is.Equal(st.End, int64(0)) // and the pass not complete
	is.Equal(len(s.Corrupt()), 0)

	err := s.Verify(ctx, chunkID(t, 0), nil)
	is.True(errors.Is(err, rpc.Canceled)) // Verify stops on a canceled context
	is.True(s.Has(chunkID(t, 0)))         // leaving the chunk as it was
}

// TestPacerClock: a pacer holds a reader to its rate on the node's clock,
// and one that fell behind catches up by at most paceSlack.
func TestPacerClock(t *testing.T) {
	is := is.New(t)
	fc := clockwork.NewFakeClock()
	p := pacer{rate: 1000, clock: fc}
	p.reset()
	done := make(chan error, 1)
	go func() { done <- p.wait(t.Context(), 500) }() // due in half a second
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	is.NoErr(fc.BlockUntilContext(ctx, 1)) // the pacer sleeps on the clock
	fc.Advance(499 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the pacer woke before the bytes were due: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	fc.Advance(time.Millisecond)
	is.NoErr(<-done) // due: on its way

	fc.Advance(time.Minute)             // a slow disk falls far behind
	is.NoErr(p.wait(t.Context(), 1000)) // a second's worth, within the slack: no wait
	go func() { done <- p.wait(t.Context(), 1) }()
	is.NoErr(fc.BlockUntilContext(ctx, 1)) // past the slack it waits again
	fc.Advance(time.Millisecond)
	is.NoErr(<-done)

	canceled, stop := context.WithCancel(t.Context())
	stop()
	is.True(errors.Is(p.wait(canceled, 1000), rpc.Canceled)) // a canceled wait ends at once
}

// TestScrubWaitsInterval: after a complete pass the scrubber waits out
// the interval on the node's clock before the next one.
func TestScrubWaitsInterval(t *testing.T) {
	is := is.New(t)
	s := openStore(t, t.TempDir(), testCap)
	put(t, s, chunkID(t, 0), chunkData(100, 0))
	sc, _ := testScrubber(t, s, 1<<30)
	fc := clockwork.NewFakeClockAt(time.UnixMilli(1_000_000_000_000))
	sc.clock = fc
	sc.save(scrubState{Start: fc.Now().UnixMilli(), End: fc.Now().UnixMilli()}) // a pass just ended
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); sc.run(ctx) }()
	defer func() { cancel(); <-done }()

	wait, stop := context.WithTimeout(t.Context(), 10*time.Second)
	defer stop()
	is.NoErr(fc.BlockUntilContext(wait, 1)) // waiting out the interval
	fc.Advance(time.Hour - time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	is.Equal(sc.load().End, int64(1_000_000_000_000)) // no pass before the interval is up
	due := fc.Now().Add(time.Millisecond)
	fc.Advance(time.Millisecond)            // the pass starts
	is.NoErr(fc.BlockUntilContext(wait, 1)) // and its pacing sleeps on the clock
	for sc.load().End == 1_000_000_000_000 {
		if wait.Err() != nil {
			t.Fatal("the pass never ended")
		}
		fc.Advance(time.Millisecond)
		time.Sleep(time.Millisecond)
	}
	is.Equal(sc.load().Start, due.UnixMilli()) // the next pass began when the interval was up
}
