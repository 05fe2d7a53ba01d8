package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// clusterCLI drives a running cluster through dfs client commands, the
// way its users do. The two harnesses embed it: procCluster (servers as
// processes of the built binary) and dockerCluster (servers as containers
// of the image); each gives the way it runs one client command and starts,
// stops, kills and restarts its servers.
type clusterCLI struct {
	t *testing.T
	// client runs `dfs args...` against the cluster with stdin (nil: none)
	// and gives up after timeout.
	client func(timeout time.Duration, stdin []byte, args ...string) procResult
	// cmdTimeout bounds a client command on small data (nodes, stat).
	cmdTimeout time.Duration
	// alive fails the test if a server that should run is gone (nil: no
	// check); nodes calls it first.
	alive func()
	// waitFor bounds each poll, waitEvery paces it.
	waitFor, waitEvery time.Duration
}

// dfs runs a client command without stdin.
func (c *clusterCLI) dfs(timeout time.Duration, args ...string) procResult {
	c.t.Helper()
	return c.client(timeout, nil, args...)
}

// poll runs cond until it holds, failing the test after waitFor with the
// last detail it gave.
func (c *clusterCLI) poll(what string, cond func() (bool, string)) {
	c.t.Helper()
	pollFor(c.t, c.waitFor, c.waitEvery, what, cond)
}

// pollFor runs cond every interval until it holds, failing the test after
// timeout with the last detail it gave. Nothing asserts how long it took.
func pollFor(t *testing.T, timeout, every time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last: %s", timeout, what, detail)
		}
		time.Sleep(every)
	}
}

// procNode is one entry of the nodes of `dfs nodes --json`.
type procNode struct {
	NodeID string `json:"node_id"`
	Addr   string `json:"addr"`
	State  string `json:"state"`
	Chunks int64  `json:"chunks"`
}

// nodes runs `dfs nodes --json`.
func (c *clusterCLI) nodes() ([]procNode, error) {
	c.t.Helper()
	if c.alive != nil {
		c.alive()
	}
	res := c.dfs(c.cmdTimeout, "nodes", "--json")
	if res.code != 0 {
		return nil, fmt.Errorf("dfs nodes: exit %d: %s", res.code, strings.TrimSpace(res.stderr))
	}
	var out struct {
		Nodes []procNode `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		return nil, fmt.Errorf("dfs nodes --json: %v", err)
	}
	return out.Nodes, nil
}

// waitNodes polls dfs nodes until cond holds.
func (c *clusterCLI) waitNodes(what string, cond func([]procNode) (bool, string)) {
	c.t.Helper()
	c.poll(what, func() (bool, string) {
		nodes, err := c.nodes()
		if err != nil {
			return false, err.Error()
		}
		return cond(nodes)
	})
}

// nodeIDs returns the sorted node IDs the coordinator lists.
func (c *clusterCLI) nodeIDs() []string {
	c.t.Helper()
	nodes, err := c.nodes()
	if err != nil {
		c.t.Fatal(err)
	}
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.NodeID)
	}
	slices.Sort(ids)
	return ids
}

type procStatReplica struct {
	NodeID string `json:"node_id"`
	Addr   string `json:"addr"`
	State  string `json:"state"`
}

type procStatChunk struct {
	Index     uint32            `json:"index"`
	ID        string            `json:"id"`
	Size      int64             `json:"size"`
	FrameSize int64             `json:"frame_size"`
	Replicas  []procStatReplica `json:"replicas"`
}

// procStat is what `dfs stat --json` prints.
type procStat struct {
	Path        string          `json:"path"`
	Size        int64           `json:"size"`
	SHA256      string          `json:"sha256"`
	ChunkSize   int64           `json:"chunk_size"`
	Replication int             `json:"replication"`
	Chunks      []procStatChunk `json:"chunks"`
}

// stat runs `dfs stat --json`.
func (c *clusterCLI) stat(remote string) procStat {
	c.t.Helper()
	res := c.dfs(c.cmdTimeout, "stat", "--json", remote)
	if res.code != 0 {
		c.t.Fatalf("dfs stat %s: exit %d: %s", remote, res.code, res.stderr)
	}
	var st procStat
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		c.t.Fatalf("dfs stat --json %s: %v", remote, err)
	}
	return st
}

func countState(nodes []procNode, state string) int {
	n := 0
	for _, nd := range nodes {
		if nd.State == state {
			n++
		}
	}
	return n
}

func describeNodes(nodes []procNode) string {
	var parts []string
	for _, n := range nodes {
		parts = append(parts, fmt.Sprintf("%s=%s", n.Addr, n.State))
	}
	return fmt.Sprintf("%d nodes: %s", len(nodes), strings.Join(parts, " "))
}
