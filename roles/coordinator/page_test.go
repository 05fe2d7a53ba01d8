package coordinator

import (
	"math"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/matryer/is"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// longestPath is a valid path of rpc.MaxPathLen bytes.
func longestPath(t *testing.T) string {
	t.Helper()
	seg := "/" + strings.Repeat("p", rpc.MaxSegmentLen)
	p := strings.Repeat(seg, rpc.MaxPathLen/len(seg)-1)
	p += "/" + strings.Repeat("q", rpc.MaxPathLen-len(p)-1)
	if _, err := rpc.ParsePath(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestChunkPageFits pins that the default paging is safe for a file of
// any allowed size: a full page of the chunk map (maxChunkPage chunks)
// with the largest encoding of every field (the longest path, chunk IDs,
// node IDs and addresses, rpc.MaxReplication replicas per chunk, the
// largest numbers) fits in rpc.MaxMessageSize with a quarter to spare,
// and so does a full batch of receipts (maxReceiptBatch, each
// acknowledged by rpc.MaxReplication nodes) in a ConfirmUploadRequest.
// How many pages a file has does not matter: no message holds more than
// one.
func TestChunkPageFits(t *testing.T) {
	is := is.New(t)
	limit := rpc.MaxMessageSize * 3 / 4
	path := longestPath(t)
	addr := strings.Repeat("h", rpc.MaxAddrLen-len(":65535")) + ":65535"
	id := string(rpc.NewChunkID(rpc.Path(path), rpc.NewSessionID(), maxAttempts, rpc.MaxChunkIndex))
	digest := make([]byte, rpc.DigestSize)
	for i := range digest {
		digest[i] = 0xff
	}
	var nodes []string
	for range rpc.MaxReplication {
		nodes = append(nodes, uuid.NewString())
	}

	fi := &dfspb.FileInfo{
		Path: path, Size: math.MaxInt64, Sha256: digest, ChunkSize: rpc.MaxChunkSize, Replication: math.MaxUint32,
		ModifiedUnixMs: math.MaxInt64, Version: math.MaxUint64, SessionId: uuid.NewString(), ChunkCount: math.MaxUint32,
	}
	for range maxChunkPage {
		ci := &dfspb.ChunkInfo{Index: math.MaxUint32, ChunkId: id, Offset: math.MaxInt64, Size: rpc.MaxChunkSize, Digest: digest, FrameSize: rpc.MaxFrameSize}
		for _, n := range nodes {
			ci.Replicas = append(ci.Replicas, &dfspb.ReplicaInfo{NodeId: n, Addr: addr, State: dfspb.NodeState_NODE_STATE_SUSPECT})
		}
		fi.Chunks = append(fi.Chunks, ci)
	}
	for _, m := range []proto.Message{
		&dfspb.DownloadFileResponse{File: fi, NextChunk: math.MaxUint32},
		&dfspb.StatFileResponse{File: fi, NextChunk: math.MaxUint32},
		&dfspb.ConfirmUploadResponse{File: fi, MissingReceipts: true, FirstMissing: math.MaxUint32},
	} {
		size := proto.Size(m)
		t.Logf("%T: %d bytes, %d per chunk", m, size, size/maxChunkPage)
		is.True(size < limit) // a full page of the largest chunk entries fits with room to spare
	}

	req := &dfspb.ConfirmUploadRequest{SessionId: uuid.NewString(), Size: math.MaxInt64, Sha256: digest, ChunkCount: math.MaxUint32}
	for range maxReceiptBatch {
		req.Chunks = append(req.Chunks, &dfspb.ChunkReceipt{Index: math.MaxUint32, ChunkId: id, Size: rpc.MaxChunkSize, Digest: digest,
			FrameSize: rpc.MaxFrameSize, NodeIds: nodes})
	}
	size := proto.Size(req)
	t.Logf("ConfirmUploadRequest: %d bytes, %d per receipt", size, size/maxReceiptBatch)
	is.True(size < limit)                                                                                   // a full batch of the largest receipts fits with room to spare
	is.True(proto.Size(&dfspb.UploadReceiptsRequest{SessionId: req.SessionId, Chunks: req.Chunks}) < limit) // in UploadReceipts too
}
