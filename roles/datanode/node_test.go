package datanode

import (
	"context"
	"testing"
	"time"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/internal/testlog"
	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// startNode runs a datanode on loopback against coord until the test ends
// and returns it once it has registered. Scrubbing is off unless an option
// turns it on.
// filesOnly makes a node store every chunk as a file of its own, for
// tests that damage or remove a chunk's file by its path.
func filesOnly(cfg *Config) { cfg.PackThreshold = 0 }

func startNode(t *testing.T, coord *datanodetest.Coordinator, opts ...func(*Config)) *Node {
	t.Helper()
	return startNodeWith(t, coord, Deps{}, opts...)
}

// startNodeWith is startNode with deps (their Listener is set here, and
// their Log writes into the test's output, keeping the level and hooks a
// test gave it).
func startNodeWith(t *testing.T, coord *datanodetest.Coordinator, deps Deps, opts ...func(*Config)) *Node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Coordinators = []string{coord.Addr()}
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.ShutdownGrace = time.Second
	cfg.ScrubRate = 0
	for _, o := range opts {
		o(&cfg)
	}
	lis, err := rpc.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = lis.Addr().String()
	deps.Log, deps.Listener = deps.Log.Output(testlog.Writer(t)), lis
	n, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("datanode stopped with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("datanode did not stop")
		}
	})
	select {
	case <-n.Ready():
	case err := <-done:
		t.Fatalf("datanode stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("datanode did not register")
	}
	return n
}

// client dials a node's DataNode service.
func client(t *testing.T, n *Node) dfspb.DataNodeClient {
	t.Helper()
	cc, err := rpc.Dial(n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return dfspb.NewDataNodeClient(cc)
}

// upload stores data as chunk id on a node through the upload stream, as
// a client does, and returns the chunk digest.
func upload(t *testing.T, dn dfspb.DataNodeClient, id rpc.ChunkID, data []byte, frameSize int) []byte {
	t.Helper()
	st, err := dn.UploadChunkStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	prep := &dfspb.PrepareChunkUploadRequest{ChunkId: string(id), Size: int64(len(data)), FrameSize: int64(frameSize)}
	_, digest, err := chunkstream.SendChunk(t.Context(), st, "", prep, id, data, frameSize, chunkstream.DefaultWindow)
	if err != nil {
		t.Fatalf("upload %s: %v", id, err)
	}
	return digest
}

// download reads chunk id from a node, verified against exp.
func download(ctx context.Context, dn dfspb.DataNodeClient, exp chunkstream.Expect) ([]byte, error) {
	prep, err := dn.PrepareChunkDownload(ctx, &dfspb.PrepareChunkDownloadRequest{ChunkId: string(exp.ChunkID)})
	if err != nil {
		return nil, rpc.FromStatus(err)
	}
	st, err := dn.DownloadChunkStream(ctx, &dfspb.DownloadChunkStreamRequest{SessionId: prep.SessionId})
	if err != nil {
		return nil, rpc.FromStatus(err)
	}
	dst := make([]byte, exp.Size)
	return dst, chunkstream.ReceiveInto(st, exp, dst)
}

// eventually polls cond every few milliseconds for up to 10 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
