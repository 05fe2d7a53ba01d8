package datanode

import (
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestMalformedHeartbeatReply: a heartbeat reply with an update or a node
// entry that names no node (a coordinator bug, or a newer coordinator's
// message) is skipped; the datanode keeps heartbeating and serving.
func TestMalformedHeartbeatReply(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	n := startNode(t, coord)
	coord.ReplyToHeartbeats(&dfspb.HeartbeatResponse{
		ClusterVersion: 2, Full: true,
		Nodes:   []*dfspb.NodeStatus{nil, {}},
		Updates: []*dfspb.NodeUpdate{{Version: 2}, {Version: 2, Node: &dfspb.NodeStatus{}}},
	})
	seen := coord.Heartbeats()
	eventually(t, "five more heartbeats", func() bool { return coord.Heartbeats() >= seen+5 })
	_, err := client(t, n).HealthCheck(t.Context(), &dfspb.HealthCheckRequest{})
	is.NoErr(err)               // still serving
	is.Equal(len(n.Peers()), 0) // nothing recorded for the nameless entries
}
