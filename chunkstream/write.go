package chunkstream

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// writeChunksDesc is WriteChunks's stream in the DataNode service.
var writeChunksDesc = func() *grpc.StreamDesc {
	for i := range dfspb.DataNode_ServiceDesc.Streams {
		if d := &dfspb.DataNode_ServiceDesc.Streams[i]; d.StreamName == "WriteChunks" {
			return d
		}
	}
	panic("dfspb: the DataNode service has no WriteChunks stream")
}()

// Frames cuts chunk id's data into the frames an upload sends, each with
// its data, offset and frame digest, the last final with the chunk
// digest (session and prepare unset), and returns them and the chunk
// digest. The frames share data's bytes.
func Frames(id rpc.ChunkID, data []byte, frameSize int) ([]*dfspb.ChunkDataStream, []byte) {
	digest, digests := DigestOf(data, frameSize)
	frames := make([]*dfspb.ChunkDataStream, len(digests))
	for i, fd := range digests {
		off := i * frameSize
		frames[i] = &dfspb.ChunkDataStream{ChunkId: string(id), Data: data[off:min(off+frameSize, len(data))], Offset: int64(off), PartialChecksum: fd}
	}
	if len(frames) > 0 {
		last := frames[len(frames)-1]
		last.IsFinal, last.ChunkChecksum = true, digest
	}
	return frames, digest
}

// WriteChunks makes a WriteChunks call to the datanode at the other end
// of cc and returns its answer, one ChunkWritten per chunk of req, in
// their order. The node's keepalives (empty responses) are read on the
// way. ctx bounds the call; a watchdog's context made for it
// (NewWatchdog, with HeardFrom the connection) fails it when the node
// goes quiet, but for the wait for a free stream on the connection (the
// node's back-pressure, --max-conn-streams). The error is the call's, a
// gRPC status (a server without the call answers Unimplemented).
func WriteChunks(ctx context.Context, cc grpc.ClientConnInterface, req *dfspb.WriteChunksRequest) ([]*dfspb.ChunkWritten, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if it is left early
	wd := watchdogOf(ctx)
	if wd != nil {
		wd.Pause()
	}
	st, err := cc.NewStream(ctx, writeChunksDesc, dfspb.DataNode_WriteChunks_FullMethodName)
	if wd != nil {
		wd.Kick()
	}
	if err != nil {
		return nil, err
	}
	if err := st.SendMsg(req); err != nil {
		return nil, err
	}
	if err := st.CloseSend(); err != nil {
		return nil, err
	}
	for {
		resp := new(dfspb.WriteChunksResponse)
		err := st.RecvMsg(resp)
		if err == io.EOF {
			return nil, rpc.ToStatus(rpc.Errorf(rpc.Unavailable, "WriteChunks ended without an answer"))
		}
		if err != nil {
			return nil, err
		}
		if len(resp.Chunks) == 0 {
			continue // a keepalive
		}
		if len(resp.Chunks) != len(req.Chunks) {
			return nil, rpc.ToStatus(rpc.Errorf(rpc.Internal, "WriteChunks answered %d of %d chunks", len(resp.Chunks), len(req.Chunks)))
		}
		// The call's status follows at once: reading it ends the call
		// without the reset that canceling it would send. Whatever it
		// is, the answer stands.
		st.RecvMsg(new(dfspb.WriteChunksResponse))
		return resp.Chunks, nil
	}
}
