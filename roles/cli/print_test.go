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

// TestPrintNodesSafeMode: nodes --json carries the safe-mode state and the
// cluster's health that the text prints.
func TestPrintNodesSafeMode(t *testing.T) {
	is := is.New(t)
	resp := &client.ClusterStatus{
		Leader: "127.0.0.1:7000", SafeMode: true, SafeModeStatus: "2 of 5 chunks located",
		Nodes:  []client.NodeStatus{{ID: "aaaaaaaa-0000-0000-0000-000000000000", Addr: "127.0.0.1:1", State: client.NodeHealthy}},
		Health: &client.Health{Chunks: 5, UnderReplicated: 3, Missing: 1, RepairsDone: 2},
	}
	var out bytes.Buffer
	is.NoErr(printNodes(&out, resp, false))
	is.True(strings.HasPrefix(out.String(), "coordinator 127.0.0.1:7000 in safe mode: 2 of 5 chunks located\n")) // text: safe mode first

	out.Reset()
	is.NoErr(printNodes(&out, resp, true))
	var j nodesJSON
	is.NoErr(json.Unmarshal(out.Bytes(), &j))
	is.Equal(j.Leader, "127.0.0.1:7000")                                                       // the coordinator that answered
	is.True(j.SafeMode)                                                                        // in safe mode
	is.Equal(j.SafeModeStatus, "2 of 5 chunks located")                                        // and how far it got
	is.Equal(len(j.Nodes), 1)                                                                  // the nodes
	is.Equal(*j.Health, healthJSON{Chunks: 5, UnderReplicated: 3, Missing: 1, RepairsDone: 2}) // the health counts
}
