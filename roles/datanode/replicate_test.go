package datanode

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/internal/testdisk"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

func replicateReq(id rpc.ChunkID, data []byte, frameSize int, digest []byte, src *Node) *dfspb.ReplicateChunkRequest {
	return &dfspb.ReplicateChunkRequest{
		ChunkId: string(id), Size: int64(len(data)), FrameSize: int64(frameSize), Digest: digest,
		Source: &dfspb.NodeRef{NodeId: string(src.ID()), Addr: src.Addr()},
	}
}

// TestReplicateChunk copies chunks between two nodes over gRPC: the copy
// is byte for byte, durable, reported to the coordinator, and a repeated
// request is harmless.
func TestReplicateChunk(t *testing.T) {
	coord := datanodetest.Start(t)
	a, b := startNode(t, coord), startNode(t, coord)
	dna, dnb := client(t, a), client(t, b)
	tests := []struct {
		name      string
		size      int
		frameSize int
	}{
		{"three frames", 3*testFrame + 100, testFrame},
		{"one byte", 1, testFrame},
		{"direct I/O", 2<<20 + 5, 256 << 10}, // written through O_DIRECT blocks where the filesystem allows
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			id := chunkID(t, i)
			data := chunkData(tt.size, byte(i))
			digest := upload(t, dna, id, data, tt.frameSize)

			resp, err := dnb.ReplicateChunk(t.Context(), replicateReq(id, data, tt.frameSize, digest, a))
			is.NoErr(err)                                 // the copy succeeds
			is.Equal(resp.Bytes, int64(len(data)))        // and says how much it copied
			is.True(b.Store().Has(id))                    // the target stores the chunk
			is.Equal(len(tempFiles(t, b.cfg.DataDir)), 0) // with no temporary file left
			got, err := download(t.Context(), dnb, chunkstream.Expect{ChunkID: id, Size: int64(len(data)), FrameSize: int64(tt.frameSize), Digest: digest})
			is.NoErr(err)                   // the copy verifies
			is.True(bytes.Equal(got, data)) // byte for byte
			eventually(t, "the coordinator learns of the copy", func() bool { return coord.Has(b.ID(), id) })
			is.Equal(coord.Stat(b.ID(), id).Digest, digest) // with its digest

			resp, err = dnb.ReplicateChunk(t.Context(), replicateReq(id, data, tt.frameSize, digest, a))
			is.NoErr(err)                  // repeating the request is harmless
			is.Equal(resp.Bytes, int64(0)) // and copies nothing
		})
	}

	t.Run("digest prefix", func(t *testing.T) {
		// The coordinator's index keeps a prefix of the committed digest.
		is := is.New(t)
		id := chunkID(t, 8)
		data := chunkData(3*testFrame+1, 8)
		digest := upload(t, dna, id, data, testFrame)
		req := replicateReq(id, data, testFrame, digest[:rpc.DigestPrefixSize], a)
		_, err := dnb.ReplicateChunk(t.Context(), req)
		is.NoErr(err) // a prefix names the chunk
		got, err := download(t.Context(), dnb, chunkstream.Expect{ChunkID: id, Size: int64(len(data)), FrameSize: testFrame, Digest: digest})
		is.NoErr(err)                   // the copy verifies against the whole digest
		is.True(bytes.Equal(got, data)) // byte for byte
		eventually(t, "the coordinator learns of the copy", func() bool { return coord.Has(b.ID(), id) })
		is.Equal(coord.Stat(b.ID(), id).Digest, digest) // with the whole digest
		resp, err := dnb.ReplicateChunk(t.Context(), req)
		is.NoErr(err)                  // repeating the request is harmless
		is.Equal(resp.Bytes, int64(0)) // and copies nothing

		other := bytes.Clone(digest)
		other[0] ^= 1
		_, err = dnb.ReplicateChunk(t.Context(), replicateReq(id, data, testFrame, other[:rpc.DigestPrefixSize], a))
		is.True(errors.Is(rpc.FromStatus(err), rpc.Exists)) // a held chunk whose digest lacks the prefix is another chunk
	})

	t.Run("concurrent requests", func(t *testing.T) {
		is := is.New(t)
		id := chunkID(t, 7)
		data := chunkData(5*testFrame, 7)
		digest := upload(t, dna, id, data, testFrame)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var copied int64
		var errs []error
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := dnb.ReplicateChunk(t.Context(), replicateReq(id, data, testFrame, digest, a))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				copied += resp.Bytes
			}()
		}
		wg.Wait()
		is.Equal(errors.Join(errs...), nil)          // every request succeeds
		is.Equal(copied, int64(len(data)))           // and the chunk is copied once
		is.Equal(b.Store().Usage().Chunks, int64(5)) // and counted once (with the 4 copied before)
	})
}

// TestReplicateChunkBadSource: a source that fails or serves bytes that do
// not match the committed digest fails the copy, attributed to the source,
// and leaves nothing behind on the target.
func TestReplicateChunkBadSource(t *testing.T) {
	coord := datanodetest.Start(t)
	// b's free space is its capacity less what it holds, whatever else
	// happens on the filesystem.
	a, b := startNode(t, coord, filesOnly), startNode(t, coord, filesOnly, func(cfg *Config) { cfg.Capacity = 64 << 20 })
	dna, dnb := client(t, a), client(t, b)
	size := 3*testFrame + 100
	tests := []struct {
		name string
		// damage breaks the source's copy, or the request, or both.
		damage func(t *testing.T, id rpc.ChunkID, req *dfspb.ReplicateChunkRequest)
		kind   rpc.Kind
		msg    string
	}{
		{"flipped data byte", func(t *testing.T, id rpc.ChunkID, req *dfspb.ReplicateChunkRequest) {
			testdisk.FlipByte(t, a.Store().ChunkPath(id), testFrame+7)
		}, rpc.Internal, "corrupt copy"},
		{"flipped stored frame digest", func(t *testing.T, id rpc.ChunkID, req *dfspb.ReplicateChunkRequest) {
			testdisk.FlipByte(t, a.Store().ChunkPath(id), int64(size)+5)
		}, rpc.Internal, "corrupt metadata"},
		{"another digest committed", func(t *testing.T, id rpc.ChunkID, req *dfspb.ReplicateChunkRequest) {
			req.Digest = chunkstream.FrameDigest([]byte("another chunk"))
		}, rpc.Internal, "different chunk"},
		{"another digest prefix committed", func(t *testing.T, id rpc.ChunkID, req *dfspb.ReplicateChunkRequest) {
			req.Digest = chunkstream.FrameDigest([]byte("another chunk"))[:rpc.DigestPrefixSize]
		}, rpc.Internal, "different chunk"},
		{"source lacks the chunk", func(t *testing.T, id rpc.ChunkID, req *dfspb.ReplicateChunkRequest) {
			_, err := dna.DeleteChunk(t.Context(), &dfspb.DeleteChunkRequest{ChunkId: string(id)})
			if err != nil {
				t.Fatal(err)
			}
		}, rpc.NotFound, "not found"},
		{"source unreachable", func(t *testing.T, id rpc.ChunkID, req *dfspb.ReplicateChunkRequest) {
			lis, err := rpc.Listen("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			req.Source = &dfspb.NodeRef{NodeId: uuid.NewString(), Addr: lis.Addr().String()}
			coord.AddNode(rpc.NodeID(req.Source.NodeId), req.Source.Addr) // a registered node that is down
			lis.Close()
		}, rpc.Unavailable, "source"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			id := chunkID(t, i)
			data := chunkData(size, byte(i))
			digest := upload(t, dna, id, data, testFrame)
			req := replicateReq(id, data, testFrame, digest, a)
			tt.damage(t, id, req)
			free := b.Store().Usage().Free

			_, err := dnb.ReplicateChunk(t.Context(), req)
			err = rpc.FromStatus(err)
			is.True(err != nil)                                           // the copy fails
			is.Equal(rpc.KindOf(err), tt.kind)                            // with the kind of the source's failure
			is.Equal(rpc.FailedNodesOf(err), []string{req.Source.NodeId}) // attributed to the source
			is.True(strings.Contains(err.Error(), tt.msg))                // saying what went wrong
			is.True(!b.Store().Has(id))                                   // nothing is stored
			is.Equal(len(tempFiles(t, b.cfg.DataDir)), 0)                 // nor left half-written
			is.Equal(b.Store().Usage().Free, free)                        // and the space is released
		})
	}
	// The source whose metadata was damaged noticed it when asked for the
	// chunk: it no longer serves it and reported it.
	eventually(t, "the source reports its damaged chunk", func() bool {
		return slices.Contains(coord.Corrupt(a.ID()), string(chunkID(t, 1)))
	})
}

// TestReplicateChunkRefuses: bad requests, a chunk the node already holds
// differently, and a full disk are refused before anything is copied.
func TestReplicateChunkRefuses(t *testing.T) {
	coord := datanodetest.Start(t)
	a, b := startNode(t, coord, filesOnly), startNode(t, coord, filesOnly)
	dna, dnb := client(t, a), client(t, b)
	id := chunkID(t, 1)
	data := chunkData(2*testFrame, 1)
	digest := upload(t, dna, id, data, testFrame)
	valid := func() *dfspb.ReplicateChunkRequest { return replicateReq(id, data, testFrame, digest, a) }

	bad := []struct {
		name string
		mod  func(r *dfspb.ReplicateChunkRequest)
	}{
		{"bad chunk id", func(r *dfspb.ReplicateChunkRequest) { r.ChunkId = "../escape_0" }},
		{"empty chunk id", func(r *dfspb.ReplicateChunkRequest) { r.ChunkId = "" }},
		{"size 0", func(r *dfspb.ReplicateChunkRequest) { r.Size = 0 }},
		{"negative size", func(r *dfspb.ReplicateChunkRequest) { r.Size = -1 }},
		{"size too big", func(r *dfspb.ReplicateChunkRequest) { r.Size = rpc.MaxChunkSize + 1 }},
		{"frame size 0", func(r *dfspb.ReplicateChunkRequest) { r.FrameSize = 0 }},
		{"frame size too big", func(r *dfspb.ReplicateChunkRequest) { r.FrameSize = rpc.MaxFrameSize + 1 }},
		{"short digest", func(r *dfspb.ReplicateChunkRequest) { r.Digest = r.Digest[:rpc.DigestPrefixSize-1] }},
		{"long digest", func(r *dfspb.ReplicateChunkRequest) { r.Digest = append(r.Digest, 0) }},
		{"no digest", func(r *dfspb.ReplicateChunkRequest) { r.Digest = nil }},
		{"no source", func(r *dfspb.ReplicateChunkRequest) { r.Source = nil }},
		{"bad source id", func(r *dfspb.ReplicateChunkRequest) { r.Source.NodeId = "node-1" }},
		{"source without address", func(r *dfspb.ReplicateChunkRequest) { r.Source.Addr = "" }},
		{"source is the target", func(r *dfspb.ReplicateChunkRequest) {
			r.Source = &dfspb.NodeRef{NodeId: string(b.ID()), Addr: b.Addr()}
		}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			req := valid()
			tt.mod(req)
			_, err := dnb.ReplicateChunk(t.Context(), req)
			is.Equal(rpc.KindOf(rpc.FromStatus(err)), rpc.Invalid) // refused as invalid
			is.True(!b.Store().Has(id))                            // and nothing copied
		})
	}

	t.Run("another chunk under the id", func(t *testing.T) {
		is := is.New(t)
		other := chunkID(t, 2)
		upload(t, dnb, other, chunkData(100, 9), testFrame)
		odata := chunkData(2*testFrame, 2)
		odigest := upload(t, dna, other, odata, testFrame)
		_, err := dnb.ReplicateChunk(t.Context(), replicateReq(other, odata, testFrame, odigest, a))
		err = rpc.FromStatus(err)
		is.True(errors.Is(err, rpc.Exists))                        // chunks are immutable
		is.Equal(rpc.FailedNodesOf(err), []string{string(b.ID())}) // the target is the problem
	})

	t.Run("corrupt copy awaiting deletion", func(t *testing.T) {
		is := is.New(t)
		cid := chunkID(t, 3)
		cdata := chunkData(2*testFrame, 3)
		cdigest := upload(t, dnb, cid, cdata, testFrame)
		upload(t, dna, cid, cdata, testFrame)
		testdisk.FlipByte(t, b.Store().ChunkPath(cid), 0)
		v, err := dnb.VerifyChunk(t.Context(), &dfspb.VerifyChunkRequest{ChunkId: string(cid)})
		is.NoErr(err)
		is.True(v.Corrupt) // b's copy is found corrupt
		_, err = dnb.ReplicateChunk(t.Context(), replicateReq(cid, cdata, testFrame, cdigest, a))
		is.Equal(rpc.KindOf(rpc.FromStatus(err)), rpc.FailedPrecondition) // no second copy beside the bad one
	})

	t.Run("full disk", func(t *testing.T) {
		is := is.New(t)
		c := startNode(t, coord, func(cfg *Config) { cfg.Capacity = chunkstore.FileSize(int64(len(data)), testFrame) - 1 })
		_, err := client(t, c).ReplicateChunk(t.Context(), valid())
		err = rpc.FromStatus(err)
		is.Equal(rpc.KindOf(err), rpc.ResourceExhausted)           // a full node refuses
		is.Equal(rpc.FailedNodesOf(err), []string{string(c.ID())}) // naming itself
		is.True(!c.Store().Has(id))                                // and stores nothing
	})
}
