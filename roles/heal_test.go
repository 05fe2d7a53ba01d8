package roles

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// healingCluster has quick failure detection and repairs.
func healingCluster(t *testing.T, nodes int, opts ...clusterOption) *Cluster {
	return newTestCluster(t, nodes, append([]clusterOption{withCoordinator(func(cfg *coordinator.Config) {
		cfg.SuspectAfter, cfg.DeadAfter = time.Second, 2*time.Second
		cfg.RepairInterval = 100 * time.Millisecond
		cfg.RepairBandwidth = 0
	})}, opts...)...)
}

// liveReplicas counts each chunk's replicas on healthy nodes other than
// the excluded ones.
func fullyReplicated(ctx context.Context, cl *client.Client, path string, want int, exclude map[string]bool) (bool, error) {
	fi, err := cl.Stat(ctx, path)
	if err != nil {
		return false, err
	}
	for _, ch := range fi.Chunks {
		live := 0
		for _, r := range ch.Replicas {
			if r.State == dfspb.NodeState_NODE_STATE_HEALTHY && !exclude[r.NodeId] {
				live++
			}
		}
		if live != want {
			return false, nil
		}
	}
	return true, nil
}

// TestReReplicationAfterNodeLoss stops one of four datanodes: every chunk
// is copied back to three live nodes, and every file reads back.
func TestReReplicationAfterNodeLoss(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := healingCluster(t, 4)
	cl := newTestClient(t, c)
	ctx := t.Context()
	files := map[string][]byte{}
	for i := range 6 {
		p := fmt.Sprintf("/heal/%d", i)
		files[p] = randomBytes(i*testChunkSize + 1000)
		_, err := cl.Put(ctx, p, bytes.NewReader(files[p]), int64(len(files[p])), nil)
		is.NoErr(err)
	}
	victim := c.Nodes()[1]
	victimID := string(victim.Node.ID())
	is.NoErr(victim.Stop())
	for p := range files {
		eventually(t, "three live copies of every chunk of "+p, func() bool {
			ok, err := fullyReplicated(ctx, cl, p, 3, map[string]bool{victimID: true})
			return err == nil && ok
		})
	}
	for p, data := range files {
		got, err := getBytes(ctx, cl, p)
		is.NoErr(err)
		is.True(bytes.Equal(got, data)) // byte for byte after the repair
	}

	// The node comes back: its now-surplus copies are trimmed.
	_, err := c.RestartNode(1)
	is.NoErr(err)
	for p := range files {
		eventually(t, "exactly three copies of every chunk of "+p, func() bool {
			ok, err := fullyReplicated(ctx, cl, p, 3, nil)
			return err == nil && ok
		})
	}
}
