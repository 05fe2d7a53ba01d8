package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/client"
)

// TestPrintNodesDiskAndFailing: dfs nodes says which node cannot write to
// its disk (and why) and which one the coordinator places last after
// failed streams, in text and JSON.
func TestPrintNodesDiskAndFailing(t *testing.T) {
	is := is.New(t)
	resp := &client.ClusterStatus{Nodes: []client.NodeStatus{
		{ID: "aaaaaaaa-0000-0000-0000-000000000000", Addr: "127.0.0.1:1", State: client.NodeHealthy, DiskError: "data dir /d is not writable: read-only file system"},
		{ID: "bbbbbbbb-0000-0000-0000-000000000000", Addr: "127.0.0.1:2", State: client.NodeHealthy, FailingUntil: time.Now().Add(time.Minute)},
		{ID: "cccccccc-0000-0000-0000-000000000000", Addr: "127.0.0.1:3", State: client.NodeHealthy},
	}}
	var out bytes.Buffer
	is.NoErr(printNodes(&out, resp, false))
	lines := strings.Split(out.String(), "\n")
	is.True(strings.Contains(lines[1], "disk not writable (no new chunks)"))                                // the read-only node
	is.True(strings.Contains(lines[2], "failing streams (placed last for"))                                 // the penalized node
	is.True(!strings.Contains(lines[3], "disk") && !strings.Contains(lines[3], "failing"))                  // a plain node
	is.True(strings.Contains(out.String(), "aaaaaaaa: data dir /d is not writable: read-only file system")) // and why

	out.Reset()
	is.NoErr(printNodes(&out, resp, true))
	var j nodesJSON
	is.NoErr(json.Unmarshal(out.Bytes(), &j))
	ns := j.Nodes
	is.Equal(ns[0].DiskError, "data dir /d is not writable: read-only file system") // disk_error
	is.True(ns[1].FailingUntil != nil && ns[0].FailingUntil == nil)                 // failing_until
}
