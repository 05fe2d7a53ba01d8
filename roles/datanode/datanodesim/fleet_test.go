package datanodesim_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/datanode/datanodesim"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startCoordinator runs a real coordinator restored from a backup of s
// and returns its address; it stops when the test ends.
func startCoordinator(t *testing.T, s *meta.Synth) string {
	t.Helper()
	is := is.New(t)
	dir := t.TempDir()
	var buf bytes.Buffer
	n, err := meta.Backup(t.Context(), s, &buf, meta.BackupInfo{ClusterID: uuid.NewString(), Created: time.Now(), Store: "synth"})
	is.NoErr(err)                // the synthetic backup is written
	is.Equal(n, uint64(s.Files)) // one record a file
	backup := filepath.Join(dir, "backup")
	is.NoErr(os.WriteFile(backup, buf.Bytes(), 0o600)) // the backup is saved
	cfg := coordinator.DefaultConfig()
	cfg.Listen = freeAddr(t)
	cfg.SafeModeTimeout = 10 * time.Minute // only every copy reported ends it
	cfg.SuspectAfter, cfg.DeadAfter = 30*time.Second, time.Minute
	sc := roles.StoreConfig{Kind: "bolt", Dir: filepath.Join(dir, "coordinator"), Restore: backup}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	wg.Go(func() {
		if err := roles.RunCoordinator(ctx, cfg, sc, roles.Admin{}, nil, log); err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return cfg.Listen
}

func synth(t *testing.T, n int) *meta.Synth {
	t.Helper()
	s, err := meta.NewSynth(n, 4<<10, 8<<20, 1<<20, 3, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func simChunk(s *meta.Synth) func(int) datanodesim.Chunk {
	return func(i int) datanodesim.Chunk {
		c := s.Chunk(i)
		return datanodesim.Chunk{ID: c.ID, Size: c.Size, FrameSize: c.FrameSize, Digest: c.Digest}
	}
}

// TestFleetLeavesSafeMode: five simulated nodes holding every copy of
// 2,000 restored one-chunk files register, report every copy, and the
// coordinator leaves safe mode by itself, lists every node with its
// chunks, and finds every file fully replicated.
func TestFleetLeavesSafeMode(t *testing.T) {
	is := is.New(t)
	const files, nodes = 2000, 5
	s := synth(t, files)
	addr := startCoordinator(t, s)

	cfg := datanodesim.DefaultConfig()
	cfg.Coordinator, cfg.Nodes, cfg.Chunks, cfg.Chunk = addr, nodes, files, simChunk(s)
	cfg.HeartbeatInterval = 200 * time.Millisecond
	fleet, err := datanodesim.New(cfg, zerolog.Nop())
	is.NoErr(err) // the fleet is built
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := fleet.Run(ctx); err != nil {
			t.Errorf("fleet: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })

	ccfg := client.DefaultConfig()
	ccfg.Coordinators = []string{addr}
	cl, err := client.New(t.Context(), ccfg)
	is.NoErr(err) // the client is built
	defer cl.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := cl.Nodes(t.Context())
		if err == nil && !resp.SafeMode && len(resp.Nodes) == nodes {
			var total int64
			for _, n := range resp.Nodes {
				total += n.Chunks
			}
			is.Equal(total, int64(3*files)) // every copy is counted on some node
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still in safe mode or nodes missing after 60s: %v, %v", resp, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := fleet.Stats()
	is.Equal(st.Current, nodes)       // every node sent its whole inventory
	is.Equal(st.Inventories, nodes)   // once each
	is.Equal(st.InventoryRestarts, 0) // and none started over
	is.True(st.Heartbeats > 0)        // the nodes heartbeat
	is.True(st.HeartbeatP99 > 0)      // and their latency is recorded

	fi, err := cl.Stat(t.Context(), string(s.Path(1234)))
	is.NoErr(err)                                       // a restored file is found
	is.Equal(fi.Size, int64(4<<10))                     // with its size
	is.Equal(len(fi.Chunks), 1)                         // and its one chunk
	is.Equal(fi.Chunks[0].ID, string(s.Chunk(1234).ID)) // the synthetic chunk
	is.Equal(len(fi.Chunks[0].Replicas), 3)             // located on three nodes

	_, sum, err := cl.Fsck(t.Context(), "/")
	is.NoErr(err)                            // fsck runs
	is.Equal(sum.Files, int64(files))        // over every file
	is.Equal(sum.HealthyFiles, int64(files)) // and every one has all its copies
}
