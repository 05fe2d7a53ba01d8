package coordinator

import (
	"bytes"
	"testing"
	"unsafe"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// TestChunkIndexEntrySize pins the entry's size, which is most of what the
// index costs per chunk (docs/architecture.md, "The chunk index").
func TestChunkIndexEntrySize(t *testing.T) {
	is := is.New(t)
	is.Equal(unsafe.Sizeof(entry{}), uintptr(56)) // bytes per entry
	is.True(maxRepl >= rpc.MaxReplication)        // the flags byte holds any replication
}

// TestChunkIndexDigestPrefix: the index keeps a committed digest's first
// rpc.DigestPrefixSize bytes, so a copy whose digest differs in them is
// bad, and one whose digest differs only after them cannot be told apart
// from a good one (SHA-256 truncated to 128 bits: no accident makes such a
// copy, and reads and repair copies verify the bytes themselves).
func TestChunkIndexDigestPrefix(t *testing.T) {
	is := is.New(t)
	ix := newChunkIndex()
	none := func(rpc.ChunkID) bool { return false }
	ch := indexChunk(3)
	ch.Digest = make([]byte, rpc.DigestSize)
	for i := range ch.Digest {
		ch.Digest[i] = byte(i + 1)
	}
	withDigest := func(change int) []byte {
		d := bytes.Clone(ch.Digest)
		d[change] ^= 0xff
		return d
	}
	copyOf := func(digest []byte) reportedCopy {
		return reportedCopy{id: ch.ID, size: ch.Size, frameSize: ch.FrameSize, digest: digest}
	}
	late, early := withDigest(rpc.DigestPrefixSize), withDigest(rpc.DigestPrefixSize-1)
	a, b, c := testNodeID(1), testNodeID(2), testNodeID(3)

	// Before the commit, a copy's report is kept whole and compared whole
	// with the upload's receipt.
	ix.report(a, false, []reportedCopy{copyOf(late)}, nil, nil, none)
	good, bad := ix.check(ch)
	is.Equal(good, []rpc.NodeID(nil)) // a copy differing after the prefix is bad against the whole receipt
	is.Equal(bad, []rpc.NodeID{a})

	ix.refs().add(&meta.File{Replication: 3, Chunks: []meta.Chunk{ch}})
	ix.report(b, false, []reportedCopy{copyOf(early)}, nil, nil, none)
	ix.report(c, false, []reportedCopy{copyOf(ch.Digest)}, nil, nil, none)
	good, bad = ix.check(ch)
	is.Equal(good, []rpc.NodeID{a, c}) // once committed, a difference after the prefix is not seen
	is.Equal(bad, []rpc.NodeID{b})     // a difference in the prefix marks the copy bad
	copies := ix.copies(ch.ID)
	is.True(copies[a].matches(ch))  // as the health scan and fsck see it
	is.True(!copies[b].matches(ch)) // bad
	is.True(copies[c].matches(ch))
	missing, under, total := ix.counts()
	is.Equal([3]int{missing, under, total}, [3]int{0, 1, 1}) // two good copies of three

	other := ch
	other.Digest = early
	good, bad = ix.check(other)
	is.Equal(good, []rpc.NodeID(nil)) // a committed record with another prefix matches no copy
	is.Equal(len(bad), 3)

	r, ok := ix.refs().get(ch.ID)
	is.True(ok)
	is.Equal(r.chunk.Digest, ch.Digest[:rpc.DigestPrefixSize]) // repairs name the chunk by the prefix
	is.True(copies[c].matches(r.chunk))                        // which the good copies match
	is.True(!copies[b].matches(r.chunk))                       // and the bad one does not
}

// TestChunkIndexFrameCodes: frame sizes are kept as one-byte codes; past
// the codes there are, a chunk's frame size is kept beside it, and
// forgotten with it.
func TestChunkIndexFrameCodes(t *testing.T) {
	is := is.New(t)
	ix := newChunkIndex()
	none := func(rpc.ChunkID) bool { return false }
	const n = 300 // more frame sizes than codes
	var files []*meta.File
	for i := range n {
		ch := indexChunk(i)
		ch.FrameSize = rpc.MinFrameSize + int64(i)
		f := &meta.File{Replication: 1, Chunks: []meta.Chunk{ch}}
		files = append(files, f)
		ix.refs().add(f)
		ix.report(testNodeID(1), false, []reportedCopy{{id: ch.ID, size: ch.Size, frameSize: ch.FrameSize, digest: ch.Digest}}, nil, nil, none)
	}
	is.Equal(len(ix.frames.sizes), oddFrame) // every code taken
	is.Equal(len(ix.frames.odd), n-(oddFrame-1))
	for _, f := range files {
		ch := f.Chunks[0]
		good, _ := ix.check(ch)
		is.Equal(good, []rpc.NodeID{testNodeID(1)}) // each chunk's frame size is its own
		r, _ := ix.refs().get(ch.ID)
		is.Equal(r.chunk.FrameSize, ch.FrameSize)
		wrong := ch
		wrong.FrameSize++
		good, _ = ix.check(wrong)
		is.Equal(len(good), 0) // and another frame size does not match
	}
	for _, f := range files {
		ix.refs().remove(f)
	}
	ix.report(testNodeID(1), true, nil, nil, nil, none)
	is.Equal(len(ix.frames.odd), 0) // freed slots keep nothing beside
	is.Equal(ix.slotsInUse(), 0)
}
