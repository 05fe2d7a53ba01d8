package roles_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/datanode"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// A chunk file removed from a datanode's disk by hand (or by a faulty
// disk, or a filesystem repair) must stop counting and be made again,
// whoever finds it: the scrubber, a reader, a repair reading from it, or
// the disk check before each full inventory.

// lostCopy removes, by hand, the file of the replica'th copy of chunk
// index of path, and returns the chunk and the node that held it.
func lostCopy(t *testing.T, c *roles.Cluster, cl *client.Client, path string, index, replica int) (client.ChunkInfo, *roles.ClusterNode) {
	t.Helper()
	ch, n := copyOf(t, c, cl, path, index, replica)
	if err := os.Remove(chunkFile(n, ch.ID)); err != nil {
		t.Fatalf("remove a copy of %s chunk %d: %v", path, index, err)
	}
	return ch, n
}

// forgetCopy makes the replica'th copy of chunk index of path vanish
// without its node noticing: the store deletes it, and nothing reports
// the deletion. The coordinator then lists a copy its node says it does
// not hold, which only a reader's or a repair's report can correct
// before the next full inventory.
func forgetCopy(t *testing.T, c *roles.Cluster, cl *client.Client, path string, index, replica int) (client.ChunkInfo, *roles.ClusterNode) {
	t.Helper()
	ch, n := copyOf(t, c, cl, path, index, replica)
	if _, err := n.Node.Store().Delete(rpc.ChunkID(ch.ID)); err != nil {
		t.Fatalf("delete a copy of %s chunk %d: %v", path, index, err)
	}
	return ch, n
}

// restored reports whether every chunk of path has want copies listed on
// healthy nodes outside down, each of them on its node's disk (the file,
// not only the node's index), and the coordinator's last scan finds no
// chunk short or missing; detail says what is still wrong.
func restored(t *testing.T, c *roles.Cluster, cl *client.Client, path string, want int, down nodeSet) (bool, string) {
	fi, err := cl.Stat(t.Context(), path)
	if err != nil {
		return false, err.Error()
	}
	for _, ch := range fi.Chunks {
		listed := healthyReplicas(ch, down)
		if len(listed) != want {
			return false, fmt.Sprintf("chunk %d listed on %d healthy nodes, want %d", ch.Index, len(listed), want)
		}
		for _, id := range listed {
			if !fileExists(chunkFile(nodeByID(c, id), ch.ID)) {
				return false, fmt.Sprintf("chunk %d listed on %s, which has no file for it", ch.Index, rpc.NodeID(id).Short())
			}
		}
	}
	if h := health(t, c).Health; h.UnderReplicated != 0 || h.Missing != 0 {
		return false, fmt.Sprintf("%d chunks under-replicated, %d missing", h.UnderReplicated, h.Missing)
	}
	return true, ""
}

// waitRestored waits until restored says yes, then checks that fsck finds
// path healthy.
func waitRestored(t *testing.T, c *roles.Cluster, cl *client.Client, path string, want int, down nodeSet) {
	t.Helper()
	var detail string
	eventually(t, "every copy listed on disk and the replication restored", func() bool {
		var ok bool
		ok, detail = restored(t, c, cl, path, want, down)
		return ok
	})
	if down == nil {
		bad, sum, err := cl.Fsck(t.Context(), path)
		if err != nil {
			t.Fatalf("fsck %s: %v", path, err)
		}
		if len(bad) != 0 || sum.HealthyFiles != 1 {
			t.Errorf("fsck %s: %d files listed, %d healthy (last: %s)", path, len(bad), sum.HealthyFiles, detail)
		}
	}
}

// TestScrubberFindsLostCopy: nobody reads the file and no full inventory
// is due; the scrubber finds the copy gone, the coordinator stops
// counting it and the repair makes it again.
func TestScrubberFindsLostCopy(t *testing.T) {
	t.Parallel()
	c := scrubCluster(t, 4)
	cl := rolestest.Client(t, c)
	files := putFiles(t, cl, "/lost-scrub", 2*rolestest.ChunkSize+10)
	waitHealed(t, c, cl, slices.Sorted(mapKeys(files)), 3, nil)
	ch, n := lostCopy(t, c, cl, "/lost-scrub/0", 1, 0)
	eventually(t, "the scrubber to find the copy gone", func() bool { return !n.Node.Store().Has(rpc.ChunkID(ch.ID)) })
	waitRestored(t, c, cl, "/lost-scrub/0", 3, nil)
	checkFiles(t, cl, files)
}

// TestReadReportsMissingReplica: scrubbing is off and no full inventory
// is due. One copy's file is removed by hand (its node finds it gone when
// asked for it); another copy vanishes without its node noticing, so only
// the reader's report (ReportBadReplica, missing), verified with the node,
// can tell the coordinator. Reads never fail, and both copies are made
// again.
func TestReadReportsMissingReplica(t *testing.T) {
	t.Parallel()
	c := healingCluster(t, 4, rolestest.WithDatanode(func(cfg *datanode.Config) { cfg.ScrubRate = 0 }))
	cl := rolestest.Client(t, c)
	files := putFiles(t, cl, "/lost-read", 2*rolestest.ChunkSize+10)
	waitHealed(t, c, cl, slices.Sorted(mapKeys(files)), 3, nil)
	type copyRef struct {
		ch client.ChunkInfo
		n  *roles.ClusterNode
	}
	var gone []copyRef
	ch, n := lostCopy(t, c, cl, "/lost-read/0", 0, 0)
	gone = append(gone, copyRef{ch, n})
	ch, n = forgetCopy(t, c, cl, "/lost-read/0", 2, 1)
	gone = append(gone, copyRef{ch, n})
	// Reads pick replicas in random order: read until each lost copy has
	// been met and is no longer listed (or listed again, made anew).
	eventually(t, "reads to meet every lost copy", func() bool {
		checkFiles(t, cl, files)
		fi, err := cl.Stat(t.Context(), "/lost-read/0")
		if err != nil {
			return false
		}
		for _, g := range gone {
			for _, r := range fi.Chunks[g.ch.Index].Replicas {
				if r.Node == string(g.n.Node.ID()) && !fileExists(chunkFile(g.n, g.ch.ID)) {
					return false
				}
			}
		}
		return true
	})
	waitRestored(t, c, cl, "/lost-read/0", 3, nil)
	checkFiles(t, cl, files)
}

// TestReportMissingReplica pins the coordinator's side of a reader's
// report that a replica is missing: it drops the copy only when the node
// confirms it does not hold it and a committed file still references the
// chunk.
func TestReportMissingReplica(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := healingCluster(t, 4, rolestest.WithDatanode(func(cfg *datanode.Config) { cfg.ScrubRate = 0 }))
	cl := rolestest.Client(t, c)
	ctx := t.Context()
	files := putFiles(t, cl, "/lost-report", rolestest.ChunkSize, rolestest.ChunkSize)
	waitHealed(t, c, cl, slices.Sorted(mapKeys(files)), 3, nil)
	coord := coordClient(t, c)
	report := func(ch client.ChunkInfo, node string) *dfspb.ReportBadReplicaResponse {
		t.Helper()
		resp, err := coord.ReportBadReplica(ctx, &dfspb.ReportBadReplicaRequest{ChunkId: ch.ID, NodeId: node, Reason: "not found", Missing: true})
		is.NoErr(err) // ReportBadReplica
		return resp
	}

	// A copy that is there stays.
	fi, err := cl.Stat(ctx, "/lost-report/0")
	is.NoErr(err)
	resp := report(fi.Chunks[0], fi.Chunks[0].Replicas[0].Node)
	is.True(!resp.Missing && !resp.Corrupt) // an intact copy is neither

	// A copy its node does not hold is dropped, and made again.
	ch, n := forgetCopy(t, c, cl, "/lost-report/0", 0, 1)
	resp = report(ch, string(n.Node.ID()))
	is.True(resp.Missing) // the coordinator confirmed and dropped it
	fi, err = cl.Stat(ctx, "/lost-report/0")
	is.NoErr(err)
	is.True(!slices.ContainsFunc(fi.Chunks[0].Replicas, func(r client.Replica) bool {
		return r.Node == string(n.Node.ID()) && !fileExists(chunkFile(n, ch.ID))
	})) // no longer listed where it is not
	waitRestored(t, c, cl, "/lost-report/0", 3, nil)

	// A chunk no file references any more (overwritten) is meant to go:
	// its absence is not a loss, and nothing is dropped or repaired.
	fi, err = cl.Stat(ctx, "/lost-report/1")
	is.NoErr(err)
	old := fi.Chunks[0]
	putFiles(t, cl, "/lost-report", rolestest.ChunkSize, rolestest.ChunkSize+1) // overwrites both
	eventually(t, "the replaced chunk deleted", func() bool {
		for _, r := range old.Replicas {
			if fileExists(chunkFile(nodeByID(c, r.Node), old.ID)) {
				return false
			}
		}
		return true
	})
	resp = report(old, old.Replicas[0].Node)
	is.True(!resp.Missing) // not taken for a lost copy
}

// TestRepairSourceMissing: replication 2 on four nodes. One holder's copy
// vanishes without its node noticing, then the other holder is drained,
// so the chunk needs copies and the vanished one (healthy, not draining)
// is the preferred source. The repair's read finds it missing; the
// coordinator confirms with the node, stops counting it and copies from
// the draining holder instead.
func TestRepairSourceMissing(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := healingCluster(t, 4, rolestest.WithDatanode(func(cfg *datanode.Config) { cfg.ScrubRate = 0 }))
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.Replication = 2 })
	files := putFiles(t, cl, "/lost-source", rolestest.ChunkSize-7)
	waitHealed(t, c, cl, slices.Sorted(mapKeys(files)), 2, nil)
	ch, gone := forgetCopy(t, c, cl, "/lost-source/0", 0, 0)
	var other string
	for _, r := range ch.Replicas {
		if r.Node != string(gone.Node.ID()) {
			other = r.Node
		}
	}
	_, err := cl.Decommission(t.Context(), other, false)
	is.NoErr(err) // drain the holder that still has its copy
	// The drained holder's copy still serves, but no longer counts.
	waitRestored(t, c, cl, "/lost-source/0", 2, nodeSet{other: true})
	fi, err := cl.Stat(t.Context(), "/lost-source/0")
	is.NoErr(err)
	for _, r := range fi.Chunks[0].Replicas {
		if r.Node == string(gone.Node.ID()) {
			is.True(fileExists(chunkFile(gone, ch.ID))) // listed there only if made again
		}
	}
	checkFiles(t, cl, files)
}

// TestLostCopyRepairedBeforeOthersFail is the end-to-end case: four
// datanodes, scrubbing off, nobody reading. One copy's file is removed by
// hand; the disk check before the next full inventory finds it, and the
// repair makes it again. Then the other two original holders stop, and
// the file still reads back byte for byte.
func TestLostCopyRepairedBeforeOthersFail(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := healingCluster(t, 4, rolestest.WithDatanode(func(cfg *datanode.Config) {
		cfg.ScrubRate = 0
		cfg.InventoryInterval = 500 * time.Millisecond
	}))
	cl := rolestest.Client(t, c)
	data := randomBytes(rolestest.ChunkSize - 100) // one chunk
	_, err := cl.Put(t.Context(), "/lost-e2e", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // put
	waitHealed(t, c, cl, []string{"/lost-e2e"}, 3, nil)
	fi, err := cl.Stat(t.Context(), "/lost-e2e")
	is.NoErr(err)
	holders := healthyReplicas(fi.Chunks[0], nil)
	_, lost := lostCopy(t, c, cl, "/lost-e2e", 0, 0)
	waitRestored(t, c, cl, "/lost-e2e", 3, nil)

	for _, h := range holders {
		if h != string(lost.Node.ID()) {
			is.NoErr(c.StopNode(nodeIndex(t, c, h))) // stop the other original holders
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	got, err := getBytes(ctx, cl, "/lost-e2e")
	is.NoErr(err)                   // the file reads
	is.True(bytes.Equal(got, data)) // byte for byte
}
