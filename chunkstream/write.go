package chunkstream

import (
	"context"
	"io"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// WriteChunks makes a WriteChunks call to dn and returns its answer, one
// ChunkWritten per chunk of req, in their order. The node's keepalives
// (empty responses) are read on the way; ctx bounds the wait, and a
// watchdog's context made for the call (NewWatchdog, with HeardFrom the
// connection) fails it when they stop. The error is the call's, as
// rpc.FromStatus gives it (a server without the call answers
// Unimplemented).
func WriteChunks(ctx context.Context, dn dfspb.DataNodeClient, req *dfspb.WriteChunksRequest) ([]*dfspb.ChunkWritten, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if it is left early
	st, err := dn.WriteChunks(ctx, req)
	if err != nil {
		return nil, err
	}
	for {
		resp, err := st.Recv()
		if err == io.EOF {
			return nil, rpc.Errorf(rpc.Unavailable, "WriteChunks ended without an answer")
		}
		if err != nil {
			return nil, err
		}
		if len(resp.Chunks) == 0 {
			continue // a keepalive
		}
		if len(resp.Chunks) != len(req.Chunks) {
			return nil, rpc.Errorf(rpc.Internal, "WriteChunks answered %d of %d chunks", len(resp.Chunks), len(req.Chunks))
		}
		// The call's status follows at once: reading it ends the call
		// without the reset that canceling it would send.
		if _, err := st.Recv(); err != io.EOF {
			return nil, rpc.Errorf(rpc.Internal, "WriteChunks went on after its answer: %v", err)
		}
		return resp.Chunks, nil
	}
}
