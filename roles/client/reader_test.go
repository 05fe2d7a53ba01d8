package client_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/internal/testdisk"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/datanode"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
)

// The reader's test files: 64 KiB chunks of 16 KiB frames (rolestest), so
// a few MiB have many chunks, and a size that ends in a short frame.
const (
	chunk = rolestest.ChunkSize
	frame = rolestest.FrameSize
)

// startReaderCluster starts 3 datanodes that never scrub (so only readers
// find a damaged copy) and returns a client tuned by tune.
func startReaderCluster(t *testing.T, tune ...func(*client.Config)) (*roles.Cluster, *client.Client) {
	t.Helper()
	c := rolestest.Start(t, 3, rolestest.WithDatanode(func(cfg *datanode.Config) { cfg.ScrubRate = 0 }))
	return c, rolestest.Client(t, c, tune...)
}

// putRandom stores size random bytes at path and returns them.
func putRandom(t *testing.T, cl *client.Client, path string, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	if _, err := cl.Put(t.Context(), path, bytes.NewReader(data), int64(size), nil); err != nil {
		t.Fatalf("put %s: %v", path, err)
	}
	return data
}

// open opens path and closes the reader when the test ends.
func open(t *testing.T, cl *client.Client, path string) *client.Reader {
	t.Helper()
	r, err := cl.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestReaderReadAt reads ranges of a file of many chunks at random and
// across every kind of boundary, with a chunk map of small pages (so that
// the reader reads pages as it goes), and checks what io.ReaderAt says of
// the end of the file.
func TestReaderReadAt(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, cl := startReaderCluster(t, func(cfg *client.Config) { cfg.PageSize = 3 })
	size := 40*chunk + 3*frame + 100 // 41 chunks, the last of 4 frames, its last one short
	data := putRandom(t, cl, "/reader/readat", size)
	r := open(t, cl, "/reader/readat")

	is.Equal(r.Size(), int64(size))              // the size
	is.Equal(r.Path(), "/reader/readat")         // the path
	is.True(r.Version() > 0)                     // the version read
	sum := sha256.Sum256(data)                   //
	is.Equal(r.SHA256(), sum[:])                 // the committed checksum
	is.True(time.Since(r.ModTime()) < time.Hour) // and when it was committed

	check := func(off int64, n int) {
		t.Helper()
		p := make([]byte, n)
		got, err := r.ReadAt(p, off)
		want := max(0, min(int64(n), int64(size)-off))
		o := min(off, int64(size))
		if int64(got) != want || !bytes.Equal(p[:got], data[o:o+want]) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d bytes, %v: not the bytes stored", n, off, got, err)
		}
		if (int64(n) > want) != (err == io.EOF) || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d bytes, error %v", n, off, got, err)
		}
	}
	for _, tt := range []struct {
		off int64
		n   int
	}{
		{0, 1}, {0, frame}, {frame - 1, 2}, {chunk - 1, 2}, {chunk - 10, chunk + 20}, // frame and chunk boundaries
		{5*chunk + frame + 7, 3 * frame}, // frames in the middle of a chunk
		{3 * chunk, 10 * chunk},          // whole chunks
		{int64(size) - 1, 1},             // the last byte
		{int64(size) - 50, 50},           // the short last frame, to the end
		{int64(size) - 50, 100},          // past the end: short, io.EOF
		{0, size + 1},                    // the whole file and more
		{int64(size), 10},                // at the end: nothing, io.EOF
		{int64(size) + 100, 10},          // past it
		{7, 0},                           // nothing asked
	} {
		check(tt.off, tt.n)
	}
	for range 150 {
		off := mrand.Int64N(int64(size))
		check(off, mrand.IntN(3*chunk))
	}
	_, err := r.ReadAt(make([]byte, 1), -1)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // a negative offset is refused
}

// TestReaderRead reads a file in order as Get does, with io.ReadAll
// (Read) and io.Copy (WriteTo), then Seeks and Reads at random.
func TestReaderRead(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, cl := startReaderCluster(t, func(cfg *client.Config) { cfg.Parallel = 3 })
	size := 30*chunk + 2*frame + 5
	data := putRandom(t, cl, "/reader/read", size)

	var got bytes.Buffer
	_, err := cl.Get(t.Context(), "/reader/read", &got, nil)
	is.NoErr(err)
	r := open(t, cl, "/reader/read")
	all, err := io.ReadAll(r)
	is.NoErr(err)                          // read to the end, the checksum checked
	is.True(bytes.Equal(all, got.Bytes())) // the same bytes as get
	is.True(bytes.Equal(all, data))        // the bytes stored
	n, err := r.Read(make([]byte, 10))     //
	is.True(n == 0 && err == io.EOF)       // at the end: io.EOF again
	pos, err := r.Seek(0, io.SeekStart)
	is.NoErr(err)
	is.Equal(pos, int64(0)) // back to the start
	var copied bytes.Buffer
	m, err := io.Copy(&copied, r) // WriteTo
	is.NoErr(err)
	is.Equal(m, int64(size))
	is.True(bytes.Equal(copied.Bytes(), data)) // WriteTo writes the file too

	for range 60 {
		off := mrand.Int64N(int64(size) + 10)
		p := make([]byte, mrand.IntN(2*chunk)+1)
		pos, err := r.Seek(off, io.SeekStart)
		is.NoErr(err)
		is.Equal(pos, off)
		// Two reads: the first after the Seek, the second sequential.
		n, err := io.ReadFull(r, p[:len(p)/2])
		want := max(0, min(len(p)/2, size-int(off)))
		is.Equal(n, want) // as many bytes as the file has there
		is.True(bytes.Equal(p[:n], data[min(off, int64(size)):min(off, int64(size))+int64(n)]))
		if n < len(p)/2 {
			is.True(err == io.EOF || err == io.ErrUnexpectedEOF) // and the end of the file
			continue
		}
		off += int64(n)
		n, _ = io.ReadFull(r, p[len(p)/2:])
		want = max(0, min(len(p)-len(p)/2, size-int(off)))
		is.Equal(n, want)
		is.True(bytes.Equal(p[len(p)/2:len(p)/2+n], data[off:off+int64(n)])) // a sequential read after a seek
	}
	pos, err = r.Seek(-10, io.SeekEnd)
	is.NoErr(err)
	is.Equal(pos, int64(size-10))
	tail, err := io.ReadAll(r)
	is.NoErr(err)
	is.True(bytes.Equal(tail, data[size-10:])) // the last bytes
	pos, err = r.Seek(-5, io.SeekCurrent)
	is.NoErr(err)
	is.Equal(pos, int64(size-5))
	_, err = r.Seek(-1, io.SeekStart)
	is.Equal(rpc.KindOf(err), rpc.Invalid) // a negative position is refused

	is.NoErr(r.Close())
	is.NoErr(r.Close()) // Close is idempotent
	_, err = r.Read(make([]byte, 1))
	is.Equal(rpc.KindOf(err), rpc.Canceled) // a closed reader reads no more
	_, err = r.ReadAt(make([]byte, 1), 0)
	is.Equal(rpc.KindOf(err), rpc.Canceled)
}

// TestReaderEmptyFile: an empty file reads io.EOF at once.
func TestReaderEmptyFile(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, cl := startReaderCluster(t)
	putRandom(t, cl, "/reader/empty", 0)
	r := open(t, cl, "/reader/empty")
	is.Equal(r.Size(), int64(0))
	all, err := io.ReadAll(r)
	is.NoErr(err)
	is.Equal(len(all), 0)
	n, err := r.ReadAt(make([]byte, 4), 0)
	is.True(n == 0 && err == io.EOF)
}

// TestReaderConcurrentReadAt reads random ranges from 8 goroutines at once
// through one Reader, with a Read going on meanwhile.
func TestReaderConcurrentReadAt(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, cl := startReaderCluster(t, func(cfg *client.Config) { cfg.PageSize = 4 })
	size := 24*chunk + 1000
	data := putRandom(t, cl, "/reader/concurrent", size)
	r := open(t, cl, "/reader/concurrent")
	var wg sync.WaitGroup
	errs := make(chan error, 9)
	for g := range 8 {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(g), 1))
			for range 25 {
				off := rng.Int64N(int64(size))
				p := make([]byte, rng.IntN(chunk+frame)+1)
				n, err := r.ReadAt(p, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(p[:n], data[off:off+int64(n)]) || (n < len(p) && off+int64(n) != int64(size)) {
					errs <- errors.New("ReadAt returned other bytes than stored")
					return
				}
			}
		})
	}
	wg.Go(func() {
		all, err := io.ReadAll(r)
		if err == nil && !bytes.Equal(all, data) {
			err = errors.New("Read returned other bytes than stored")
		}
		if err != nil {
			errs <- err
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		is.NoErr(err) // every read returns the bytes stored
	}
}

// TestReaderMovesOnlyNeededFrames counts the chunk bytes the datanodes
// send (their dfs_datanode_chunk_bytes_sent_total): a ranged read moves the
// frames that hold the range and nothing else.
func TestReaderMovesOnlyNeededFrames(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c, cl := startReaderCluster(t)
	size := 8*chunk + frame + 100
	data := putRandom(t, cl, "/reader/frames", size)
	r := open(t, cl, "/reader/frames")
	sent := func() int64 {
		var total float64
		for _, n := range c.Nodes() {
			mfs, err := n.Metrics.Gather()
			is.NoErr(err)
			for _, mf := range mfs {
				if mf.GetName() == "dfs_datanode_chunk_bytes_sent_total" {
					total += mf.GetMetric()[0].GetCounter().GetValue()
				}
			}
		}
		return int64(total)
	}
	// expect waits (bounded) until the nodes counted want more bytes sent
	// than before, and checks that it is not more.
	expect := func(before, want int64) {
		t.Helper()
		deadline := time.Now().Add(rolestest.WaitFor)
		for sent()-before < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		is.Equal(sent()-before, want) // the bytes of the frames asked for, no more
	}
	for _, tt := range []struct {
		name   string
		off    int64
		n      int
		frames int64 // whole frames that hold the range
		extra  int64 // and the bytes of a short last frame
	}{
		{"within one frame", 3*chunk + frame + 10, 100, 1, 0},
		{"across a frame boundary", 3*chunk + 2*frame - 10, 20, 2, 0},
		{"across a chunk boundary", 5*chunk - 10, 20, 2, 0},
		{"the short last frame", int64(size) - 50, 10, 0, 100},
		{"a whole chunk", 2 * chunk, chunk, 4, 0},
	} {
		before := sent()
		p := make([]byte, tt.n)
		n, err := r.ReadAt(p, tt.off)
		is.NoErr(err)
		is.True(bytes.Equal(p[:n], data[tt.off:tt.off+int64(n)])) // the right bytes
		expect(before, tt.frames*frame+tt.extra)
	}

	// The first Read after a Seek moves only its frames; the next one, in
	// order, starts the read-ahead: at most Parallel chunks (4 here).
	before := sent()
	_, err := r.Seek(2*chunk+10, io.SeekStart)
	is.NoErr(err)
	p := make([]byte, 100)
	_, err = io.ReadFull(r, p)
	is.NoErr(err)
	is.True(bytes.Equal(p, data[2*chunk+10:2*chunk+110]))
	expect(before, frame) // one frame
	before = sent()
	_, err = io.ReadFull(r, p)
	is.NoErr(err)
	is.True(bytes.Equal(p, data[2*chunk+110:2*chunk+210])) // read ahead
	_, err = r.Seek(0, io.SeekStart)                       // ends the read-ahead
	is.NoErr(err)
	is.True(sent()-before <= 4*chunk) // no more than Parallel chunks were read ahead
}

// TestReaderSkipsCorruptReplica damages two of the three copies of frames
// on disk: ranged reads of those frames return the stored bytes from the
// intact copy, and report the damaged ones, which the coordinator has
// checked and taken out of service.
func TestReaderSkipsCorruptReplica(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c, cl := startReaderCluster(t)
	size := 20*chunk + 10
	data := putRandom(t, cl, "/reader/corrupt", size)
	fi, err := cl.Stat(t.Context(), "/reader/corrupt")
	is.NoErr(err)
	type copyAt struct {
		node *roles.ClusterNode
		id   rpc.ChunkID
	}
	var damaged []copyAt
	for _, ch := range fi.Chunks[:20] {
		for _, rep := range ch.Replicas[:2] {
			for _, n := range c.Nodes() {
				if string(n.Node.ID()) == rep.Node {
					testdisk.FlipByte(t, n.Node.Store().ChunkPath(rpc.ChunkID(ch.ID)), frame+5) // in frame 1
					damaged = append(damaged, copyAt{n, rpc.ChunkID(ch.ID)})
				}
			}
		}
	}
	r := open(t, cl, "/reader/corrupt")
	for i := range 20 {
		off := int64(i)*chunk + frame
		p := make([]byte, 100)
		_, err := r.ReadAt(p, off)
		is.NoErr(err)                              // a ranged read falls back to the intact copy
		is.True(bytes.Equal(p, data[off:off+100])) // and returns the stored bytes
	}
	// Each read tried the copies in a random order: some tried a damaged
	// one first (all but a chance of 3^-20) and reported it.
	deadline := time.Now().Add(rolestest.WaitFor)
	for {
		gone := 0
		for _, d := range damaged {
			if !d.node.Node.Store().Has(d.id) {
				gone++
			}
		}
		if gone > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no damaged copy was reported and taken out of service")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReaderFileReplaced: a file replaced while it is being read fails
// the reads of the old version that the chunk map or its chunks no longer
// serve with FailedPrecondition, and never returns bytes of the new one.
func TestReaderFileReplaced(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c, cl := startReaderCluster(t, func(cfg *client.Config) { cfg.PageSize = 2; cfg.Attempts = 2 })
	size := 12*chunk + 7
	v1 := putRandom(t, cl, "/reader/replaced", size)
	fi1, err := cl.Stat(t.Context(), "/reader/replaced")
	is.NoErr(err)
	r := open(t, cl, "/reader/replaced")
	p := make([]byte, 1000)
	_, err = r.ReadAt(p, 10)
	is.NoErr(err)
	is.True(bytes.Equal(p, v1[10:1010])) // v1 reads

	putRandom(t, cl, "/reader/replaced", size) // v2 replaces it
	deadline := time.Now().Add(rolestest.WaitFor)
	for gone := false; !gone; {
		gone = true
		for _, n := range c.Nodes() {
			for _, ch := range fi1.Chunks {
				gone = gone && !n.Node.Store().Has(rpc.ChunkID(ch.ID))
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("v1's chunks are still stored")
		}
		time.Sleep(20 * time.Millisecond)
	}
	changed := func(err error) {
		t.Helper()
		is.Equal(rpc.KindOf(err), rpc.FailedPrecondition)                         // the file changed
		is.True(strings.Contains(err.Error(), "changed while it was being read")) // saying so
		is.True(strings.Contains(err.Error(), "/reader/replaced"))                // naming it
	}
	_, err = r.ReadAt(p, 10) // a chunk of a page read before
	changed(err)
	_, err = r.ReadAt(p, 9*chunk) // a chunk of a page not read yet
	changed(err)
	_, err = io.ReadAll(r)
	changed(err)
}

// TestReaderChecksumMismatch: a file read whole and in order whose bytes
// do not hash to the committed checksum ends with an error, not io.EOF;
// reads that are not whole, or not in order, do not check it.
func TestReaderChecksumMismatch(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	_, cl := startReaderCluster(t)
	size := 5*chunk + 3
	data := putRandom(t, cl, "/reader/sum", size)
	r := open(t, cl, "/reader/sum")
	other := sha256.Sum256([]byte("other"))
	client.SetCommittedSum(r, other[:])

	all, err := io.ReadAll(r)
	is.True(err != nil)                                              // the whole read fails
	is.Equal(rpc.KindOf(err), rpc.Internal)                          // as data that does not match
	is.True(strings.Contains(err.Error(), "file checksum mismatch")) // saying so
	is.True(strings.Contains(err.Error(), "/reader/sum"))            // naming the file
	is.True(bytes.Equal(all, data))                                  // after the bytes (each frame verified)
	_, err = r.Read(make([]byte, 1))                                 //
	is.True(err != nil && err != io.EOF)                             // and keeps failing at the end

	r2 := open(t, cl, "/reader/sum")
	client.SetCommittedSum(r2, other[:])
	_, err = r2.Seek(chunk, io.SeekStart)
	is.NoErr(err)
	tail, err := io.ReadAll(r2)
	is.NoErr(err) // a read from the middle cannot check the file
	is.True(bytes.Equal(tail, data[chunk:]))
	p := make([]byte, size)
	n, err := r2.ReadAt(p, 0)
	is.True(n == size && err == nil) // nor does ReadAt
}

// TestReaderAllCopiesCorrupt damages frame 1 of one chunk in every copy:
// another frame of the chunk still reads, as only the frames read are
// verified, and a read that needs the damaged frame fails, saying why.
func TestReaderAllCopiesCorrupt(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c, cl := startReaderCluster(t, func(cfg *client.Config) { cfg.Attempts = 1 })
	size := 4*chunk + 10
	data := putRandom(t, cl, "/reader/allbad", size)
	fi, err := cl.Stat(t.Context(), "/reader/allbad")
	is.NoErr(err)
	bad := fi.Chunks[2]
	for _, rep := range bad.Replicas {
		for _, n := range c.Nodes() {
			if string(n.Node.ID()) == rep.Node {
				testdisk.FlipByte(t, n.Node.Store().ChunkPath(rpc.ChunkID(bad.ID)), frame+5)
			}
		}
	}
	r := open(t, cl, "/reader/allbad")
	q := make([]byte, 100)
	off := 2*chunk + 2*frame
	_, err = r.ReadAt(q, int64(off))
	is.NoErr(err)                              // another frame of the chunk reads
	is.True(bytes.Equal(q, data[off:off+100])) // as only the frames read are verified

	p := make([]byte, 3*chunk)
	_, err = r.ReadAt(p, chunk)                        // chunks 1 to 3
	is.True(err != nil)                                // fails
	is.Equal(rpc.KindOf(err), rpc.Unavailable)         // no copy could serve the frame
	is.True(strings.Contains(err.Error(), bad.ID))     // naming the chunk
	is.True(strings.Contains(err.Error(), "checksum")) // and why
}

// TestReaderKeepsFrameDigests: a ranged read keeps the chunk's frame
// digests it verified, and a later read of other frames of that chunk is
// checked against them: a copy damaged meanwhile is still caught and the
// intact one read, and digests that do not match the stored bytes fail
// the read (so the kept ones are what frames are checked against).
func TestReaderKeepsFrameDigests(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c, cl := startReaderCluster(t, func(cfg *client.Config) { cfg.Attempts = 1 })
	size := 6*chunk + 10
	data := putRandom(t, cl, "/reader/digests", size)
	fi, err := cl.Stat(t.Context(), "/reader/digests")
	is.NoErr(err)
	r := open(t, cl, "/reader/digests")
	read := func(off int64) error {
		p := make([]byte, 100)
		_, err := r.ReadAt(p, off)
		if err == nil && !bytes.Equal(p, data[off:off+100]) {
			t.Fatalf("read at %d returned other bytes than were stored", off)
		}
		return err
	}

	ch := fi.Chunks[3]
	is.NoErr(read(3*chunk + 10)) // frame 0 of chunk 3
	_, want := chunkstream.DigestOf(data[3*chunk:4*chunk], frame)
	is.Equal(client.FrameDigestsKept(r, ch.ID), want) // its frame digests are kept
	is.Equal(client.FrameDigestsKept(r, fi.Chunks[2].ID), nil)

	for _, rep := range ch.Replicas[:2] {
		for _, n := range c.Nodes() {
			if string(n.Node.ID()) == rep.Node {
				testdisk.FlipByte(t, n.Node.Store().ChunkPath(rpc.ChunkID(ch.ID)), 2*frame+5) // in frame 2
			}
		}
	}
	is.NoErr(read(3*chunk + 2*frame)) // the damaged copies are caught, the intact one read

	other := fi.Chunks[4]
	_, lies := chunkstream.DigestOf(data[:chunk], frame) // chunk 0's
	client.KeepFrameDigests(r, other.ID, lies)
	err = read(4*chunk + frame)
	is.True(err != nil)                                // the stored bytes do not match the digests kept
	is.Equal(rpc.KindOf(err), rpc.Unavailable)         // on any copy
	is.True(strings.Contains(err.Error(), "checksum")) // saying why
}
