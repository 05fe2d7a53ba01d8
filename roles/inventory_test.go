package roles_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// rpcCallsWithCode counts the coordinator's calls of method answered with
// the gRPC code named code.
func rpcCallsWithCode(t *testing.T, c *roles.Cluster, method, code string) uint64 {
	t.Helper()
	mfs, err := c.Metrics().Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() != "dfs_coordinator_rpc_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["method"] == method && labels["code"] == code {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

// TestInventoriesTakeTurnsAfterRestart: with one turn (--max-inventories
// 1), a restarted coordinator applies the datanodes' inventories one at a
// time. While another node's inventory holds the turn (a node of the
// test's that sent its first page only), the datanodes' inventories are
// told to come back later; they do, without registering again, and once
// the turn is free all three are applied and safe mode ends with every
// copy located, long before its timeout.
func TestInventoriesTakeTurnsAfterRestart(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) {
		cfg.MaxInventories = 1
		cfg.InventoryWait = 50 * time.Millisecond
		cfg.SafeModeTimeout = 10 * time.Minute
	}))
	cl := rolestest.Client(t, c)
	data := randomBytes(2*rolestest.ChunkSize + 1)
	_, err := cl.Put(t.Context(), "/turns/file", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // a file of three chunks, three copies each

	for i := range 3 {
		is.NoErr(c.StopNode(i)) // the datanodes go down
	}
	restartCoordinator(t, c)
	cc := coordClient(t, c)
	holder := uuid.NewString()
	_, err = cc.RegisterDataNode(t.Context(), &dfspb.RegisterDataNodeRequest{NodeId: holder, Addr: rolestest.FreeAddr(t), Capacity: 1 << 30, Free: 1 << 30})
	is.NoErr(err) // a node of the test's
	_, err = cc.ReportChunks(t.Context(), &dfspb.ReportChunksRequest{NodeId: holder, Full: true, Page: 1})
	is.NoErr(err) // takes the only turn: its inventory's first page, more to come

	for i := range 3 {
		_, err := c.RestartNodeInPlace(i)
		is.NoErr(err) // the datanodes come back and send their inventories
	}
	eventually(t, "every datanode's inventory told to wait", func() bool {
		return rpcCallsWithCode(t, c, "ReportChunks", "ResourceExhausted") >= 3
	})
	nodes, err := cc.ListNodes(t.Context(), &dfspb.ListNodesRequest{})
	is.NoErr(err)
	is.True(nodes.SafeMode) // nothing located meanwhile

	_, err = cc.ReportChunks(t.Context(), &dfspb.ReportChunksRequest{NodeId: holder, Page: 2, Last: true})
	is.NoErr(err) // the holder's last page frees the turn
	eventually(t, "safe mode off", func() bool {
		nodes, err := cc.ListNodes(t.Context(), &dfspb.ListNodesRequest{})
		return err == nil && !nodes.SafeMode
	})
	is.Equal(rpcCallsWithCode(t, c, "RegisterDataNode", "OK"), uint64(4)) // the datanodes did not register again for being told to wait
	got, err := getBytes(t.Context(), cl, "/turns/file")
	is.NoErr(err)
	is.True(bytes.Equal(got, data)) // and the file reads back
}
