package datanode

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/internal/testdisk"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
)

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A datanode that cannot write its cluster-id file (its disk is full)
// says so, naming the file and the cause, and does not blame the
// coordinator (it logged "coordinator unreachable" before).
func TestClusterIDWriteFailsOnFullDisk(t *testing.T) {
	is := is.New(t)
	dir := testdisk.Small(t, "1m")
	coord := datanodetest.Start(t)

	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Coordinators = []string{coord.Addr()}
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.ShutdownGrace = time.Second
	cfg.ScrubRate = 0
	lis, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err)
	cfg.Listen = lis.Addr().String()
	var logs syncBuffer
	n, err := New(cfg, Deps{Log: zerolog.New(&logs), Listener: lis})
	is.NoErr(err) // the node is built on the small disk

	// The node's ID and store exist (a node that ran before, and lost its
	// cluster-id file); fill the disk, then let the node register.
	_, err = LoadOrCreateNodeID(dir)
	is.NoErr(err)
	_, err = chunkstore.Open(vfs.Default, dir, 0)
	is.NoErr(err)
	testdisk.Fill(t, dir)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	want := "writing " + filepath.Join(dir, "cluster-id") + ": no space left on device"
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), want) && time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("the datanode stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	defer func() { cancel(); <-done }()
	t.Log(logs.String())
	is.True(strings.Contains(logs.String(), want))                       // the log names the file and the cause
	is.True(!strings.Contains(logs.String(), "coordinator unreachable")) // and does not blame the coordinator
	is.True(strings.Contains(n.Readiness().Error(), want))               // readiness says it too
}

// A datanode whose disk is full still opens its store (before, the
// start-up write check refused it, so a full node could not restart and
// serve the chunks it holds); its writability probe says it takes no new
// chunks.
func TestOpenStoreOnFullDisk(t *testing.T) {
	is := is.New(t)
	dir := testdisk.Small(t, "1m")
	_, err := chunkstore.Open(vfs.Default, dir, 0)
	is.NoErr(err) // a new store on the small disk
	testdisk.Fill(t, dir)
	s, err := chunkstore.Open(vfs.Default, dir, 0)
	is.NoErr(err)                                      // a full disk still opens
	is.True(errors.Is(s.ProbeWrite(), syscall.ENOSPC)) // and takes no new chunks
}
