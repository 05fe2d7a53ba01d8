package cli

// The self-healing commands through the CLI, in process: `dfs fsck` (text
// and --json, and its exit status), `dfs admin decommission` and what
// `dfs nodes` shows of both. Not parallel: newApp sets zerolog's global
// time format.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/rpc"
)

// fsckOut is `dfs fsck --json` as scripts read it.
type fsckOut struct {
	Files []struct {
		Path       string `json:"path"`
		Size       int64  `json:"size"`
		Unreadable bool   `json:"unreadable"`
		Chunks     []struct {
			Index        int      `json:"index"`
			ID           string   `json:"id"`
			Replication  int      `json:"replication"`
			Live         int      `json:"live"`
			CorruptNodes []string `json:"corrupt_nodes"`
			DeadNodes    []string `json:"dead_nodes"`
			Repairing    bool     `json:"repairing"`
		} `json:"chunks"`
	} `json:"files"`
	FilesChecked         int64 `json:"files_checked"`
	ChunksChecked        int64 `json:"chunks_checked"`
	Healthy              int64 `json:"healthy_files"`
	UnderReplicatedFiles int64 `json:"under_replicated_files"`
	UnreadableFiles      int64 `json:"unreadable_files"`
	UnderReplicated      int64 `json:"under_replicated_chunks"`
	CorruptCopies        int64 `json:"corrupt_copies"`
	RepairsInProgress    int64 `json:"repairs_in_progress"`
	BytesReclaimed       int64 `json:"bytes_reclaimed"`
}

// healNodeJSON is one node of `dfs nodes --json`, decommission fields
// included.
type healNodeJSON struct {
	NodeID         string    `json:"node_id"`
	Addr           string    `json:"addr"`
	State          string    `json:"state"`
	Draining       bool      `json:"draining"`
	Decommissioned bool      `json:"decommissioned"`
	CorruptChunks  int64     `json:"corrupt_chunks"`
	Capacity       int64     `json:"capacity"`
	Used           int64     `json:"used"`
	Free           int64     `json:"free"`
	Chunks         int64     `json:"chunks"`
	LastHeartbeat  time.Time `json:"last_heartbeat"`
}

// pollCLI runs cond every 50ms until it holds, failing after a generous
// deadline with cond's last detail.
func pollCLI(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s; last: %s", what, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCLIFsckAndDecommission(t *testing.T) {
	is := is.New(t)
	// Three datanodes: with replication 3 a dead one cannot be replaced.
	c := startInprocCluster(t, func(cfg *roles.ClusterConfig) {
		cfg.Coordinator.SuspectAfter, cfg.Coordinator.DeadAfter = time.Second, 2*time.Second
		cfg.Coordinator.RepairInterval = 100 * time.Millisecond
	})
	cli := inprocCLI{t: t, addr: c.Addr()}
	// decommission runs `dfs admin decommission --coordinator ADDR args...`.
	decommission := func(args ...string) cmdResult {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		return dfsRun(ctx, nil, append([]string{"admin", "decommission", "--coordinator", c.Addr()}, args...)...)
	}

	files := map[string][]byte{"/fsck/a": randomData(3*64<<10 + 5), "/fsck/b": randomData(100)}
	for p, data := range files {
		cli.ok(nil, "put", "--frame-size", "16KiB", writeLocal(t, "in", data), p)
	}
	out := cli.ok(nil, "fsck")
	is.True(strings.Contains(out, "2 files, 5 chunks: 2 healthy, 0 under-replicated, 0 unreadable")) // healthy summary
	var fj fsckOut
	decodeJSON(t, cli.ok(nil, "fsck", "--json", "/fsck"), &fj)
	is.Equal(fj.FilesChecked, int64(2)) // --json: files checked
	is.Equal(fj.Healthy, int64(2))      // all healthy
	is.Equal(len(fj.Files), 0)          // none listed

	// A node dies: fsck lists both files as under-replicated and fails.
	victim := string(c.Nodes()[0].Node.ID())
	is.NoErr(c.StopNode(0))
	var res cmdResult
	pollCLI(t, "fsck to report the dead node's files", func() (bool, string) {
		res = cli.run(nil, "fsck", "--json")
		if res.err == nil {
			return false, "fsck still succeeds: " + res.out
		}
		fj = fsckOut{}
		decodeJSON(t, res.out, &fj)
		// under_replicated_chunks comes from the coordinator's last health
		// scan, which may lag the file checks by a scan.
		return fj.UnderReplicatedFiles == 2 && fj.UnderReplicated == 5, res.out
	})
	is.True(rpc.KindOf(res.err) == rpc.FailedPrecondition)               // fsck fails, so dfs exits non-zero
	is.True(strings.Contains(res.err.Error(), "2 not fully replicated")) // saying why
	is.True(!strings.Contains(res.err.Error(), "\n"))                    // on one line
	is.Equal(fj.UnreadableFiles, int64(0))                               // every file still readable
	is.Equal(fj.UnderReplicated, int64(5))                               // every chunk short
	is.Equal(len(fj.Files), 2)                                           // both files listed
	for _, f := range fj.Files {
		is.True(!f.Unreadable)                                                      // readable
		is.Equal(len(f.Chunks), map[string]int{"/fsck/a": 4, "/fsck/b": 1}[f.Path]) // every chunk listed
		for _, ch := range f.Chunks {
			is.Equal(ch.Live, 2)                     // two live copies
			is.Equal(ch.Replication, 3)              // of three
			is.Equal(ch.DeadNodes, []string{victim}) // the third on the dead node
		}
	}
	text := cli.run(nil, "fsck", "/fsck/a")
	is.True(text.err != nil)                                         // text fsck of one file fails too
	is.True(strings.Contains(text.out, "/fsck/a: under-replicated")) // naming the file
	is.True(strings.Contains(text.out, "2 of 3 live copies, on 1 dead nodes"))
	is.True(!strings.Contains(text.out, "/fsck/b")) // and only it
	nodes := cli.ok(nil, "nodes")
	is.True(strings.Contains(nodes, "dead"))                 // nodes shows the dead node
	is.True(strings.Contains(nodes, "under-replicated: 5 ")) // and the chunks short of copies
	for p, data := range files {
		is.Equal(cli.ok(nil, "get", p, "-"), string(data)) // every file reads back meanwhile
	}

	// The node returns: fsck succeeds again.
	_, err := c.RestartNode(0)
	is.NoErr(err)
	pollCLI(t, "fsck healthy again", func() (bool, string) {
		res = cli.run(nil, "fsck")
		return res.err == nil, res.out
	})
	is.True(strings.Contains(res.out, "2 files, 5 chunks: 2 healthy, 0 under-replicated, 0 unreadable"))

	// A fourth node joins; decommissioning one by an ID prefix drains it.
	_, err = c.AddNode()
	is.NoErr(err)
	is.NoErr(c.WaitHealthy(4, time.Minute))
	drained := string(c.Nodes()[1].Node.ID())
	res = decommission(drained[:8])
	is.NoErr(res.err) // dfs admin decommission
	out = res.out
	is.True(strings.HasPrefix(out, drained))                                              // names the whole ID
	is.True(strings.Contains(out, "draining; dfs nodes shows when it is safe to remove")) // says what happens
	pollCLI(t, "dfs nodes to show the node decommissioned", func() (bool, string) {
		out := cli.ok(nil, "nodes", "--json")
		ns := decodeNodes[healNodeJSON](t, out)
		for _, n := range ns {
			if n.NodeID == drained {
				return n.Draining && n.Decommissioned, out
			}
		}
		return false, out
	})
	is.True(strings.Contains(cli.ok(nil, "nodes"), "decommissioned (safe to remove)")) // in text too
	res = decommission(drained)
	is.NoErr(res.err) // decommission again
	out = res.out
	is.True(strings.Contains(out, "decommissioned: safe to remove")) // asking again says it is done
	var dj healNodeJSON
	res = decommission("--json", drained)
	is.NoErr(res.err) // decommission --json
	decodeJSON(t, res.out, &dj)
	is.Equal(dj.NodeID, drained)              // --json: the node
	is.True(dj.Draining && dj.Decommissioned) // and its state
	is.NoErr(c.StopNode(1))
	for p, data := range files {
		is.Equal(cli.ok(nil, "get", p, "-"), string(data)) // every file reads back without it
	}
	pollCLI(t, "fsck healthy without the decommissioned node", func() (bool, string) {
		res = cli.run(nil, "fsck")
		return res.err == nil, res.out
	})

	res = decommission("ffffffff")
	is.True(res.err != nil)                                   // an unknown node
	is.True(rpc.KindOf(res.err) == rpc.NotFound)              // is not found
	is.True(strings.Contains(res.err.Error(), "no datanode")) // saying so
}
