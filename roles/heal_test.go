package roles_test

// Self-healing (issue 4): re-replication after node loss, scrubbing and
// bad-replica reports, garbage and orphan collection, decommission and
// fsck, each pinned on an in-process cluster with every file read back
// byte for byte. Every wait polls with a generous deadline; nothing
// asserts how long a repair took.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/internal/testdisk"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/datanode"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// healingCluster has quick failure detection and repairs.
func healingCluster(t *testing.T, nodes int, opts ...rolestest.Option) *roles.Cluster {
	return rolestest.Start(t, nodes, append([]rolestest.Option{rolestest.WithCoordinator(func(cfg *coordinator.Config) {
		cfg.SuspectAfter, cfg.DeadAfter = time.Second, 2*time.Second
		cfg.RepairInterval = 100 * time.Millisecond
		cfg.RepairBandwidth = 0
	})}, opts...)...)
}

// fullyReplicated reports whether every chunk of path has want replicas
// on healthy nodes other than the excluded ones, as the coordinator sees
// it.
func fullyReplicated(ctx context.Context, cl *client.Client, path string, want int, exclude map[string]bool) (bool, error) {
	fi, err := cl.Stat(ctx, path)
	if err != nil {
		return false, err
	}
	for _, ch := range fi.Chunks {
		live := 0
		for _, r := range ch.Replicas {
			if r.State == client.NodeHealthy && !exclude[r.Node] {
				live++
			}
		}
		if live != want {
			return false, nil
		}
	}
	return true, nil
}

// nodeSet is a set of node IDs.
type nodeSet map[string]bool

// putFiles puts one file per size under dir and returns the contents by
// path.
func putFiles(t *testing.T, cl *client.Client, dir string, sizes ...int) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for i, n := range sizes {
		p := fmt.Sprintf("%s/%d", dir, i)
		data := randomBytes(n)
		if _, err := cl.Put(t.Context(), p, bytes.NewReader(data), int64(n), nil); err != nil {
			t.Fatalf("put %s: %v", p, err)
		}
		files[p] = data
	}
	return files
}

// checkFiles reads every file back and compares it byte for byte.
func checkFiles(t *testing.T, cl *client.Client, files map[string][]byte) {
	t.Helper()
	for _, p := range slices.Sorted(mapKeys(files)) {
		got, err := getBytes(t.Context(), cl, p)
		if err != nil {
			t.Fatalf("get %s: %v", p, err)
		}
		if !bytes.Equal(got, files[p]) {
			t.Fatalf("get %s: %d bytes that differ from the %d put", p, len(got), len(files[p]))
		}
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// diskCopies returns, sorted, the nodes outside down whose store holds ch
// with its committed size, frame size and digest (a quarantined copy is
// not in the store's index, so it does not count).
func diskCopies(c *roles.Cluster, ch client.ChunkInfo, down nodeSet) []string {
	var out []string
	for _, n := range c.Nodes() {
		id := string(n.Node.ID())
		if down[id] {
			continue
		}
		m, err := n.Node.Store().Stat(rpc.ChunkID(ch.ID))
		if err == nil && m.Size == ch.Size && m.FrameSize == ch.FrameSize && bytes.Equal(m.Digest, ch.Digest) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// healthyReplicas returns, sorted, the replicas of ch that the coordinator
// lists on healthy nodes outside down.
func healthyReplicas(ch client.ChunkInfo, down nodeSet) []string {
	var out []string
	for _, r := range ch.Replicas {
		if r.State == client.NodeHealthy && !down[r.Node] {
			out = append(out, r.Node)
		}
	}
	slices.Sort(out)
	return out
}

// listedReplicas returns the nodes the coordinator lists a copy of ch on,
// whatever their liveness: a snapshot taken once the cluster has healed
// must not lose a holder whose heartbeat is late for a moment on a loaded
// host.
func listedReplicas(ch client.ChunkInfo) []string {
	var out []string
	for _, r := range ch.Replicas {
		out = append(out, r.Node)
	}
	slices.Sort(out)
	return out
}

// healed reports whether every chunk of every path has exactly want good
// copies on the nodes outside down, both as the coordinator lists them
// and on the datanodes' disks, and the two agree; detail says what is
// still wrong.
func healed(ctx context.Context, c *roles.Cluster, cl *client.Client, paths []string, want int, down nodeSet) (bool, string) {
	for _, p := range paths {
		fi, err := cl.Stat(ctx, p)
		if err != nil {
			return false, err.Error()
		}
		for _, ch := range fi.Chunks {
			listed, disk := healthyReplicas(ch, down), diskCopies(c, ch, down)
			if len(listed) != want || !slices.Equal(listed, disk) {
				return false, fmt.Sprintf("%s chunk %d: listed on %d healthy nodes %v, on disk on %d %v; want %d",
					p, ch.Index, len(listed), short(listed), len(disk), short(disk), want)
			}
		}
	}
	return true, ""
}

// short shortens node IDs for messages.
func short(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = rpc.NodeID(id).Short()
	}
	return out
}

// waitHealed waits until healed holds.
func waitHealed(t *testing.T, c *roles.Cluster, cl *client.Client, paths []string, want int, down nodeSet) {
	t.Helper()
	var detail string
	deadline := time.Now().Add(waitFor)
	for {
		var ok bool
		if ok, detail = healed(t.Context(), c, cl, paths, want, down); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %s for %d good copies of every chunk outside %v; last: %s", waitFor, want, short(slices.Collect(mapKeys(down))), detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nodeIndex returns the index in c.Nodes() of the node with the given ID.
func nodeIndex(t *testing.T, c *roles.Cluster, id string) int {
	t.Helper()
	for i, n := range c.Nodes() {
		if string(n.Node.ID()) == id {
			return i
		}
	}
	t.Fatalf("no node %s", id)
	return -1
}

// health returns the coordinator's cluster health and node list.
func health(t *testing.T, c *roles.Cluster) *dfspb.ListNodesResponse {
	t.Helper()
	resp, err := c.Coordinator().Server().ListNodes(t.Context(), &dfspb.ListNodesRequest{})
	if err != nil {
		t.Fatalf("ListNodes: %v", err)
	}
	return resp
}

// nodeState returns the coordinator's status of node id.
func nodeState(t *testing.T, c *roles.Cluster, id string) *dfspb.NodeStatus {
	t.Helper()
	for _, n := range health(t, c).Nodes {
		if n.NodeId == id {
			return n
		}
	}
	t.Fatalf("node %s not listed", id)
	return nil
}

// waitDead waits until the coordinator declares node id dead.
func waitDead(t *testing.T, c *roles.Cluster, id string) {
	t.Helper()
	eventually(t, "node "+rpc.NodeID(id).Short()+" dead", func() bool {
		return nodeState(t, c, id).State == dfspb.NodeState_NODE_STATE_DEAD
	})
}

// mostLoaded returns the ID of the node (outside down) holding the most
// chunks.
func mostLoaded(c *roles.Cluster, down nodeSet) string {
	best, most := "", int64(-1)
	for _, n := range c.Nodes() {
		id := string(n.Node.ID())
		if u := n.Node.Store().Usage().Chunks; !down[id] && u > most {
			best, most = id, u
		}
	}
	return best
}

// chunkBytesOn sums the sizes of the chunks of paths that node id holds.
func chunkBytesOn(t *testing.T, cl *client.Client, paths []string, id string) int64 {
	t.Helper()
	var sum int64
	for _, p := range paths {
		fi, err := cl.Stat(t.Context(), p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		for _, ch := range fi.Chunks {
			for _, r := range ch.Replicas {
				if r.Node == id {
					sum += ch.Size
				}
			}
		}
	}
	return sum
}

// onDiskAnyForm reports whether node n has chunk id on disk at all:
// stored, or quarantined as corrupt.
func onDiskAnyForm(n *roles.ClusterNode, id string) bool {
	p := chunkFile(n, id)
	for _, f := range []string{p, p + ".corrupt"} {
		if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
			return true
		}
	}
	return false
}

// healSizes are the files the node-loss tests put: empty, under a chunk,
// exactly a chunk, and several chunks with a tail.
var healSizes = []int{0, 1000, rolestest.ChunkSize, 2*rolestest.ChunkSize + 1, 3*rolestest.ChunkSize + 777, 5*rolestest.ChunkSize + 3}

// TestReReplicationAfterNodeLoss stops one of four datanodes: every chunk
// is copied back to three live nodes (as the coordinator lists them and on
// disk), and every file reads back. When the node returns, its now-surplus
// copies are trimmed from its disk: three copies of every chunk again.
func TestReReplicationAfterNodeLoss(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := healingCluster(t, 4)
	cl := rolestest.Client(t, c)
	ctx := t.Context()
	files := putFiles(t, cl, "/heal", healSizes...)
	paths := slices.Sorted(mapKeys(files))
	waitHealed(t, c, cl, paths, 3, nil)

	victimID := mostLoaded(c, nil)
	vi := nodeIndex(t, c, victimID)
	held := c.Nodes()[vi].Node.Store().Usage().Chunks
	is.True(held > 0) // the victim holds chunks
	heldBytes := chunkBytesOn(t, cl, paths, victimID)
	is.NoErr(c.StopNode(vi))
	down := nodeSet{victimID: true}
	waitHealed(t, c, cl, paths, 3, down)
	for p := range files {
		ok, err := fullyReplicated(ctx, cl, p, 3, down)
		is.NoErr(err) // stat
		is.True(ok)   // three live copies of every chunk
	}
	checkFiles(t, cl, files)
	var h *dfspb.ClusterHealth
	eventually(t, "a health scan that finds no chunk under-replicated", func() bool {
		h = health(t, c).Health
		return h.UnderReplicated == 0
	})
	t.Logf("the victim held %d chunks; %d copies made, %d bytes", held, h.RepairsDone, h.BytesRepaired)
	is.Equal(h.RepairsDone, held)        // every chunk the victim held was copied, once
	is.Equal(h.BytesRepaired, heldBytes) // and their bytes are counted

	// The node comes back: its now-surplus copies are trimmed, from its
	// disk too.
	_, err := c.RestartNode(vi)
	is.NoErr(err)
	waitHealed(t, c, cl, paths, 3, nil)
	for p := range files {
		ok, err := fullyReplicated(ctx, cl, p, 3, nil)
		is.NoErr(err) // stat
		is.True(ok)   // exactly three copies of every chunk
	}
	checkFiles(t, cl, files)
}

// trimmedCopy puts one small file with replication 2 on a three-node
// cluster, stops a holder until its copy is made again elsewhere and
// restarts it, so that its copy is surplus and queued for deletion (held
// back by an hour of GC delay). It returns the file, its chunk, and the
// two holders it was first put on.
func trimmedCopy(t *testing.T, opts ...rolestest.Option) (c *roles.Cluster, cl *client.Client, files map[string][]byte, chunk client.ChunkInfo, holders []string) {
	t.Helper()
	is := is.New(t)
	c = healingCluster(t, 3, append([]rolestest.Option{rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.GCDelay = time.Hour })}, opts...)...)
	cl = rolestest.Client(t, c, func(cfg *client.Config) { cfg.Replication = 2 })
	files = putFiles(t, cl, "/trim", 1000)
	paths := slices.Sorted(mapKeys(files))
	waitHealed(t, c, cl, paths, 2, nil)
	fi, err := cl.Stat(t.Context(), paths[0])
	is.NoErr(err) // stat
	chunk, holders = fi.Chunks[0], listedReplicas(fi.Chunks[0])
	first := nodeIndex(t, c, holders[0])
	is.NoErr(c.StopNode(first))
	waitHealed(t, c, cl, paths, 2, nodeSet{holders[0]: true})
	_, err = c.RestartNode(first)
	is.NoErr(err) // restart the first holder
	eventually(t, "the returning node's surplus copy queued for deletion", func() bool {
		return health(t, c).Health.PendingDeletions == 1
	})
	return c, cl, files, chunk, holders
}

// TestTrimmedCopyNotCountedAgain: a surplus copy waits out --gc-delay on
// its node's disk, so the node's inventories still list it. Counted
// again, it would make the chunk look over-replicated once more, and the
// next trim would take a copy the chunk needs (the one on the node that
// rejoined last). Replication 2 on three nodes: a holder is lost and its
// copy made again, it returns and its copy is trimmed, then the other
// holder rejoins while the trimmed copy keeps being reported.
func TestTrimmedCopyNotCountedAgain(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c, cl, files, _, holders := trimmedCopy(t, rolestest.WithDatanode(func(cfg *datanode.Config) { cfg.InventoryInterval = 100 * time.Millisecond }))
	paths := slices.Sorted(mapKeys(files))
	second := nodeIndex(t, c, holders[1])
	_, err := c.RestartNode(second)
	is.NoErr(err) // restart the second holder
	eventually(t, "the second holder listed again", func() bool {
		fi, err := cl.Stat(t.Context(), paths[0])
		return err == nil && slices.Contains(healthyReplicas(fi.Chunks[0], nil), holders[1])
	})
	// Many inventories and scans later, one copy is still the only one to
	// go, the trimmed copy is not offered to readers, and the chunk has
	// its two copies. The copies are counted as the coordinator lists
	// them, whatever their nodes' liveness: on a loaded host a heartbeat
	// can come late enough to make a holder suspect for a moment, which
	// is not what this test is about.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		h := health(t, c).Health
		fi, err := cl.Stat(t.Context(), paths[0])
		is.NoErr(err) // stat
		if listed := listedReplicas(fi.Chunks[0]); h.PendingDeletions != 1 || h.UnderReplicated != 0 || len(listed) != 2 || slices.Contains(listed, holders[0]) {
			var states []string
			for _, r := range fi.Chunks[0].Replicas {
				states = append(states, rpc.NodeID(r.Node).Short()+" "+string(r.State))
			}
			t.Fatalf("%d copies to delete, %d chunks under-replicated, listed on %v; want 1, 0 and two nodes without the trimmed %s",
				h.PendingDeletions, h.UnderReplicated, states, rpc.NodeID(holders[0]).Short())
		}
	}
	checkFiles(t, cl, files)
}

// TestTrimmedCopyRecalled: a surplus copy waiting out --gc-delay is the
// only one left when the other holders are lost; its deletion is called
// off and the file reads back from it. Replication 2 on three nodes.
func TestTrimmedCopyRecalled(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c, cl, files, chunk, holders := trimmedCopy(t)
	first := nodeIndex(t, c, holders[0])
	for i, n := range c.Nodes() {
		if i != first {
			is.NoErr(c.StopNode(i)) // the other two holders are lost
			waitDead(t, c, string(n.Node.ID()))
		}
	}
	path := slices.Sorted(mapKeys(files))[0]
	eventually(t, "the trimmed copy listed again, its deletion called off, nothing missing", func() bool {
		fi, err := cl.Stat(t.Context(), path)
		h := health(t, c).Health
		return err == nil && slices.Equal(healthyReplicas(fi.Chunks[0], nil), holders[:1]) &&
			h.PendingDeletions == 0 && h.Missing == 0
	})
	checkFiles(t, cl, files)
	is.True(onDiskAnyForm(c.Nodes()[first], chunk.ID)) // still on the first holder's disk
}

// TestDeadNodeNotDecommissioned: a node decommissioned while it is dead
// holds the only copy of a replication-1 file; it is never declared safe
// to remove while it is away. Back, it is drained and then declared so.
func TestDeadNodeNotDecommissioned(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := healingCluster(t, 3)
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.Replication = 1 })
	files := putFiles(t, cl, "/only", 1000)
	paths := slices.Sorted(mapKeys(files))
	waitHealed(t, c, cl, paths, 1, nil)
	fi, err := cl.Stat(t.Context(), paths[0])
	is.NoErr(err) // stat
	holder := listedReplicas(fi.Chunks[0])[0]
	hi := nodeIndex(t, c, holder)
	is.NoErr(c.StopNode(hi))
	waitDead(t, c, holder)
	_, err = cl.Decommission(t.Context(), holder, false)
	is.NoErr(err) // decommission the dead node
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if st := nodeState(t, c, holder); st.Decommissioned {
			t.Fatalf("dead node %s, holder of the only copy, declared safe to remove", rpc.NodeID(holder).Short())
		}
	}
	_, err = c.RestartNode(hi)
	is.NoErr(err) // the node comes back
	eventually(t, "the node drained and decommissioned", func() bool { return nodeState(t, c, holder).Decommissioned })
	waitHealed(t, c, cl, paths, 1, nodeSet{holder: true}) // its chunk is on another node
	checkFiles(t, cl, files)
}

// TestRepairCopiesEachLostCopyOnce stops one of six datanodes: each copy
// it held is made again exactly once, not a second time on yet another
// node (then trimmed), and nothing is deleted.
func TestRepairCopiesEachLostCopyOnce(t *testing.T) {
	t.Parallel()
	c := healingCluster(t, 6)
	cl := rolestest.Client(t, c)
	files := putFiles(t, cl, "/once", healSizes...)
	paths := slices.Sorted(mapKeys(files))
	waitHealed(t, c, cl, paths, 3, nil)
	victim := mostLoaded(c, nil)
	vi := nodeIndex(t, c, victim)
	held := c.Nodes()[vi].Node.Store().Usage().Chunks
	if err := c.StopNode(vi); err != nil {
		t.Fatalf("stop: %v", err)
	}
	waitHealed(t, c, cl, paths, 3, nodeSet{victim: true})
	checkFiles(t, cl, files)
	h := health(t, c).Health
	t.Logf("the victim held %d chunks: %d copies made, %d chunk copies deleted", held, h.RepairsDone, h.ChunksDeleted)
	if h.RepairsDone != held || h.ChunksDeleted != 0 {
		t.Fatalf("%d copies made (and %d surplus copies deleted) to replace %d lost ones", h.RepairsDone, h.ChunksDeleted, held)
	}
}

// TestReReplicationTwoLosses stops two of five datanodes, the second once
// the first repair is over, or while it runs: every chunk ends with a copy
// on each of the three live nodes, and every file reads back.
func TestReReplicationTwoLosses(t *testing.T) {
	t.Parallel()
	t.Run("one after the other", func(t *testing.T) {
		t.Parallel()
		c := healingCluster(t, 5)
		cl := rolestest.Client(t, c)
		files := putFiles(t, cl, "/two", healSizes...)
		paths := slices.Sorted(mapKeys(files))
		waitHealed(t, c, cl, paths, 3, nil)

		down := nodeSet{}
		for range 2 {
			id := mostLoaded(c, down)
			if err := c.StopNode(nodeIndex(t, c, id)); err != nil {
				t.Fatalf("stop: %v", err)
			}
			down[id] = true
			waitHealed(t, c, cl, paths, 3, down)
			checkFiles(t, cl, files)
		}
	})
	t.Run("second during the first repair", func(t *testing.T) {
		t.Parallel()
		is := is.New(t)
		// A bandwidth cap of four 64 KiB chunks a second makes the first
		// repair last seconds, so the second node dies while it runs.
		c := healingCluster(t, 5, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.RepairBandwidth = 4 * rolestest.ChunkSize }))
		cl := rolestest.Client(t, c)
		files := putFiles(t, cl, "/two", healSizes...)
		paths := slices.Sorted(mapKeys(files))
		waitHealed(t, c, cl, paths, 3, nil)

		first := mostLoaded(c, nil)
		is.NoErr(c.StopNode(nodeIndex(t, c, first)))
		down := nodeSet{first: true}
		var during *dfspb.ClusterHealth
		eventually(t, "the first repair under way", func() bool {
			h := health(t, c).Health
			if h.RepairsDone > 0 && h.UnderReplicated > 0 {
				during = h
				return true
			}
			return false
		})
		second := mostLoaded(c, down)
		is.NoErr(c.StopNode(nodeIndex(t, c, second)))
		down[second] = true
		t.Logf("second node stopped with %d copies made and %d chunks still under-replicated", during.RepairsDone, during.UnderReplicated)
		is.True(during.UnderReplicated > 0) // the first repair was not over
		waitHealed(t, c, cl, paths, 3, down)
		checkFiles(t, cl, files)
	})
}

// scrubCluster scrubs continuously (passes a second apart) at a rate far
// above what the tests store.
func scrubCluster(t *testing.T, nodes int, opts ...rolestest.Option) *roles.Cluster {
	return healingCluster(t, nodes, append([]rolestest.Option{rolestest.WithDatanode(func(cfg *datanode.Config) {
		cfg.ScrubInterval = 0
		cfg.ScrubRate = 256 << 20
	})}, opts...)...)
}

// damage is one flipped byte in one replica of a chunk.
type damage struct {
	path  string
	chunk client.ChunkInfo
	node  *roles.ClusterNode
}

// copyOf returns chunk index of path and the node holding its
// replica'th copy, as the coordinator lists them.
func copyOf(t *testing.T, c *roles.Cluster, cl *client.Client, path string, index, replica int) (client.ChunkInfo, *roles.ClusterNode) {
	t.Helper()
	fi, err := cl.Stat(t.Context(), path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	ch := fi.Chunks[index]
	return ch, nodeByID(c, ch.Replicas[replica].Node)
}

// damageReplica flips, on the replica'th replica of chunk index of path,
// a data byte (at off) or, with digest, a byte of the stored frame
// digests.
func damageReplica(t *testing.T, c *roles.Cluster, cl *client.Client, path string, index, replica int, off int64, digest bool) damage {
	t.Helper()
	ch, n := copyOf(t, c, cl, path, index, replica)
	if digest {
		off = ch.Size + 5 // the frame digests follow the data
	}
	testdisk.FlipByte(t, chunkFile(n, ch.ID), off)
	return damage{path: path, chunk: ch, node: n}
}

// waitReplaced waits until each damaged copy is off its node's disk (the
// stored and the quarantined name) and its chunk has three good copies on
// other nodes.
func waitReplaced(t *testing.T, c *roles.Cluster, cl *client.Client, damaged []damage) {
	t.Helper()
	for _, d := range damaged {
		eventually(t, fmt.Sprintf("the damaged copy of %s chunk %d removed from %s", d.path, d.chunk.Index, d.node.Node.ID().Short()), func() bool {
			return !onDiskAnyForm(d.node, d.chunk.ID)
		})
	}
	var paths []string
	for _, d := range damaged {
		paths = append(paths, d.path)
	}
	waitHealed(t, c, cl, slices.Compact(slices.Sorted(slices.Values(paths))), 3, nil)
	ctx := t.Context()
	for _, d := range damaged {
		fi, err := cl.Stat(ctx, d.path)
		if err != nil {
			t.Fatalf("stat %s: %v", d.path, err)
		}
		ch := fi.Chunks[d.chunk.Index]
		for _, r := range ch.Replicas {
			if r.Node == string(d.node.Node.ID()) {
				t.Errorf("%s chunk %d: still listed on the node whose copy was damaged", d.path, ch.Index)
			}
			if err := readChunkDirect(ctx, dfspb.NewDataNodeClient(testDial(t, r.Addr)), ch); err != nil {
				t.Errorf("%s chunk %d on %s: %v", d.path, ch.Index, rpc.NodeID(r.Node).Short(), err)
			}
		}
	}
}

// reader gets files in a loop until stopped and counts what it saw.
type reader struct {
	reads, failures, wrong atomic.Int64
	lastErr                atomic.Value
	stop                   chan struct{}
	wg                     sync.WaitGroup
}

func startReader(t *testing.T, cl *client.Client, files map[string][]byte, workers int) *reader {
	r := &reader{stop: make(chan struct{})}
	paths := slices.Sorted(mapKeys(files))
	for w := range workers {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for i := w; ; i++ {
				select {
				case <-r.stop:
					return
				default:
				}
				p := paths[i%len(paths)]
				got, err := getBytes(t.Context(), cl, p)
				r.reads.Add(1)
				switch {
				case err != nil:
					r.failures.Add(1)
					r.lastErr.Store(fmt.Sprintf("%s: %v", p, err))
				case !bytes.Equal(got, files[p]):
					r.wrong.Add(1)
				}
			}
		}()
	}
	return r
}

// finish stops the reader and checks that every read returned the right
// bytes.
func (r *reader) finish(t *testing.T) {
	t.Helper()
	close(r.stop)
	r.wg.Wait()
	t.Logf("%d reads, %d failed (last: %v)", r.reads.Load(), r.failures.Load(), r.lastErr.Load())
	if r.wrong.Load() > 0 {
		t.Errorf("%d reads returned bytes that differ from what was put", r.wrong.Load())
	}
	if r.failures.Load() > 0 {
		t.Errorf("%d reads failed while a good copy of every chunk was live", r.failures.Load())
	}
	if r.reads.Load() == 0 {
		t.Errorf("no read ran")
	}
}

// TestScrubberReplacesCorruptCopy flips a data byte in one stored copy and
// a frame digest in another: the scrubbers find both, a good copy takes
// each one's place on another node, and the damaged files leave the disk.
// Readers running all along never get a bad byte, nor an error.
func TestScrubberReplacesCorruptCopy(t *testing.T) {
	t.Parallel()
	c := scrubCluster(t, 4)
	cl := rolestest.Client(t, c)
	files := putFiles(t, cl, "/scrub", 3*rolestest.ChunkSize+10, 2*rolestest.ChunkSize+1)
	waitHealed(t, c, cl, slices.Sorted(mapKeys(files)), 3, nil)

	// Only /scrub/0 is read: the damage to /scrub/1 can only be found by
	// the scrubbers.
	r := startReader(t, cl, map[string][]byte{"/scrub/0": files["/scrub/0"]}, 2)
	damaged := []damage{
		damageReplica(t, c, cl, "/scrub/0", 1, 0, rolestest.FrameSize+3, false),
		damageReplica(t, c, cl, "/scrub/1", 0, 1, 0, true),
		damageReplica(t, c, cl, "/scrub/1", 2, 2, 1, false),
	}
	waitReplaced(t, c, cl, damaged)
	r.finish(t)
	checkFiles(t, cl, files)
	// The corrupt copies go once their datanodes report them deleted,
	// which may come a heartbeat after the replacements were counted.
	eventually(t, "no corrupt copy counted once they are deleted", func() bool {
		return health(t, c).Health.CorruptCopies == 0
	})
}

// TestReadReportsBadReplica turns scrubbing off: a reader that gets bad
// bytes (a flipped data byte) or meets a copy that fails its checks when
// opened (a flipped frame digest) still returns the right bytes, and the
// bad copies are verified, replaced on another node and deleted.
func TestReadReportsBadReplica(t *testing.T) {
	t.Parallel()
	c := healingCluster(t, 4, rolestest.WithDatanode(func(cfg *datanode.Config) { cfg.ScrubRate = 0 }))
	cl := rolestest.Client(t, c)
	files := putFiles(t, cl, "/badread", 3*rolestest.ChunkSize+10)
	waitHealed(t, c, cl, slices.Sorted(mapKeys(files)), 3, nil)
	damaged := []damage{
		damageReplica(t, c, cl, "/badread/0", 0, 0, rolestest.FrameSize+3, false),
		damageReplica(t, c, cl, "/badread/0", 2, 1, 0, true),
	}
	// Reads pick replicas in random order: read until every damaged copy
	// has been met and taken out of service.
	eventually(t, "reads to meet every damaged copy", func() bool {
		checkFiles(t, cl, files)
		for _, d := range damaged {
			if d.node.Node.Store().Has(rpc.ChunkID(d.chunk.ID)) {
				return false
			}
		}
		return true
	})
	r := startReader(t, cl, files, 1)
	waitReplaced(t, c, cl, damaged)
	r.finish(t)
	checkFiles(t, cl, files)
}

// TestCorruptCopyReplacedOnFullCluster damages one copy in a cluster of
// three nodes with replication three, dfs dev's default: the only node
// the good copy can go to is the one that holds the bad copy.
//
// With a fourth node that is full, the same: no new copy can go there
// either, so the bad copy makes way.
func TestCorruptCopyReplacedOnFullCluster(t *testing.T) {
	t.Parallel()
	for _, fullNode := range []bool{false, true} {
		t.Run(fmt.Sprintf("full fourth node %v", fullNode), func(t *testing.T) {
			t.Parallel()
			// An hour of GC delay: a bad copy is deleted at once all the
			// same (no reader uses it), or the good one could not take
			// its place.
			c := scrubCluster(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.GCDelay = time.Hour }))
			cl := rolestest.Client(t, c)
			files := putFiles(t, cl, "/full", 2*rolestest.ChunkSize+10)
			waitHealed(t, c, cl, slices.Sorted(mapKeys(files)), 3, nil)
			if fullNode {
				_, err := c.AddNodeWith(func(cfg *datanode.Config, _ string) {
					cfg.Capacity = 1 << 10 // no room for a chunk
				})
				if err != nil {
					t.Fatalf("add a full node: %v", err)
				}
			}
			d := damageReplica(t, c, cl, "/full/0", 1, 0, 7, false)
			eventually(t, "the scrubber to find the damaged copy", func() bool {
				return !d.node.Node.Store().Has(rpc.ChunkID(d.chunk.ID))
			})
			waitHealed(t, c, cl, slices.Sorted(mapKeys(files)), 3, nil)
			if p := chunkFile(d.node, d.chunk.ID) + ".corrupt"; fileExists(p) {
				t.Errorf("the damaged copy is still on disk")
			}
			checkFiles(t, cl, files)
		})
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestRmReturnsDiskWithRepairs removes every file while a dead node's
// chunks are being copied elsewhere, then brings the node back: every
// datanode's disk usage returns to what it was before the puts. A copy
// that lands after the rm is collected as an orphan, so the grace period
// is short here (see TestRmDuringRepairLeavesNoOrphans).
func TestRmReturnsDiskWithRepairs(t *testing.T) {
	t.Parallel()
	rmDuringRepair(t, 2*time.Second)
}

// TestRmDuringRepairLeavesNoOrphans is TestRmReturnsDiskWithRepairs with
// the default orphan grace period of an hour: the deleted files' chunks,
// copies made by the repairs included, must go as deleted chunks, not
// wait out the grace period as orphans.
func TestRmDuringRepairLeavesNoOrphans(t *testing.T) {
	t.Parallel()
	rmDuringRepair(t, coordinator.DefaultConfig().OrphanGrace)
}

func rmDuringRepair(t *testing.T, grace time.Duration) {
	is := is.New(t)
	c := healingCluster(t, 4, rolestest.WithCoordinator(func(cfg *coordinator.Config) {
		cfg.RepairBandwidth = 8 * rolestest.ChunkSize // the repair lasts seconds
		cfg.OrphanGrace = grace
	}))
	cl := rolestest.Client(t, c)
	before := usedBytes(c)
	files := putFiles(t, cl, "/rm", 8*rolestest.ChunkSize, 7*rolestest.ChunkSize+1, 6*rolestest.ChunkSize+2, 5*rolestest.ChunkSize+3)
	waitHealed(t, c, cl, slices.Sorted(mapKeys(files)), 3, nil)

	victim := mostLoaded(c, nil)
	vi := nodeIndex(t, c, victim)
	is.NoErr(c.StopNode(vi))
	var during *dfspb.ClusterHealth
	eventually(t, "repairs under way", func() bool {
		during = health(t, c).Health
		return during.RepairsInProgress > 0 || during.RepairsDone > 0
	})
	for p := range files {
		is.NoErr(cl.Remove(t.Context(), p)) // rm during the repairs
	}
	t.Logf("files removed with %d copies made, %d in progress, %d chunks under-replicated",
		during.RepairsDone, during.RepairsInProgress, during.UnderReplicated)
	_, err := c.RestartNode(vi)
	is.NoErr(err) // the victim comes back with the deleted files' chunks
	eventually(t, "disk usage back to what it was before the puts", func() bool {
		return slices.Equal(usedBytes(c), before)
	})
	for _, n := range c.Nodes() {
		is.Equal(n.Node.Store().Usage().Chunks, int64(0)) // no chunk left
		is.Equal(len(n.Node.Store().Corrupt()), 0)        // nor a quarantined one
	}
	h := health(t, c).Health
	t.Logf("%d chunks deleted (%d bytes), %d of them as orphans", h.ChunksDeleted, h.BytesReclaimed, h.OrphansDeleted)
}

// restartCoordinator stops the cluster's coordinator and starts a new one
// on the same address and metadata, as a crash and restart would.
func restartCoordinator(t *testing.T, c *roles.Cluster) {
	t.Helper()
	if err := c.RestartCoordinator(); err != nil {
		t.Fatalf("restart the coordinator: %v", err)
	}
	eventually(t, "the restarted coordinator leading", c.Coordinator().Leading)
}

// storeOrphan writes a chunk straight to datanode i over dfspb, without an
// upload session: no coordinator knows why it is there.
func storeOrphan(t *testing.T, c *roles.Cluster, i int) rpc.ChunkID {
	t.Helper()
	ctx := t.Context()
	dn := nodeClient(t, c, i)
	id := rpc.NewChunkID("/orphan", rpc.NewSessionID(), 0, 0)
	data := randomBytes(rolestest.ChunkSize / 2)
	prep, err := dn.PrepareChunkUpload(ctx, &dfspb.PrepareChunkUploadRequest{ChunkId: string(id), Size: int64(len(data)), FrameSize: rolestest.FrameSize})
	if err != nil {
		t.Fatalf("prepare orphan: %v", err)
	}
	if _, _, err := streamChunk(ctx, dn, prep.SessionId, string(id), data, rolestest.FrameSize); err != nil {
		t.Fatalf("store orphan: %v", err)
	}
	return id
}

// stored reports whether any node in c has chunk id in its store.
func storedAnywhere(c *roles.Cluster, id string) bool {
	for _, n := range c.Nodes() {
		if n.Node.Store().Has(rpc.ChunkID(id)) {
			return true
		}
	}
	return false
}

// TestOrphansCollected pins orphan collection: a chunk no file and no
// upload needs is deleted after the grace period, while the chunks of an
// upload still in progress stay, and that upload then commits and reads
// back.
func TestOrphansCollected(t *testing.T) {
	t.Parallel()
	const grace = time.Second
	opts := rolestest.WithCoordinator(func(cfg *coordinator.Config) {
		cfg.OrphanGrace = grace
		cfg.RepairInterval = 100 * time.Millisecond
	})

	t.Run("open upload kept", func(t *testing.T) {
		t.Parallel()
		is := is.New(t)
		c := rolestest.Start(t, 3, opts)
		cl := rolestest.Client(t, c)
		cc := coordClient(t, c)
		ctx := t.Context()
		data := randomBytes(2*rolestest.ChunkSize + 5)
		open, err := cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: "/orphan/open", Size: int64(len(data))})
		is.NoErr(err) // UploadFile
		receipts := []*dfspb.ChunkReceipt{storeByHand(t, open.Chunks[0], data[:rolestest.ChunkSize])}
		orphan := storeOrphan(t, c, 0)
		eventually(t, "the orphan collected", func() bool { return !storedAnywhere(c, string(orphan)) })
		// The orphan was reported after the upload's chunk: by now the
		// upload's chunk is past the grace period too.
		is.True(storedAnywhere(c, receipts[0].ChunkId)) // the open upload's chunk stays
		for _, id := range receipts[0].NodeIds {
			is.True(nodeByID(c, id).Node.Store().Has(rpc.ChunkID(receipts[0].ChunkId))) // on every node that took it
		}
		receipts = append(receipts,
			storeByHand(t, open.Chunks[1], data[rolestest.ChunkSize:2*rolestest.ChunkSize]),
			storeByHand(t, open.Chunks[2], data[2*rolestest.ChunkSize:]))
		_, err = cc.ConfirmUpload(ctx, &dfspb.ConfirmUploadRequest{SessionId: open.SessionId, Size: int64(len(data)), Sha256: sha256Sum(data), Chunks: receipts, ChunkCount: uint32(len(receipts))})
		is.NoErr(err) // the upload commits
		checkFiles(t, cl, map[string][]byte{"/orphan/open": data})
		h := health(t, c).Health
		is.True(h.OrphansDeleted >= 1) // the orphan is counted
	})

	t.Run("interrupted upload collected", func(t *testing.T) {
		t.Parallel()
		is := is.New(t)
		// The client dies mid-upload: its session expires, its chunks go.
		c := rolestest.Start(t, 3, opts, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.SessionTimeout = 2 * time.Second }))
		cc := coordClient(t, c)
		ctx := t.Context()
		data := randomBytes(2 * rolestest.ChunkSize)
		before := usedBytes(c)
		open, err := cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: "/orphan/gone", Size: int64(len(data))})
		is.NoErr(err) // UploadFile
		r := storeByHand(t, open.Chunks[0], data[:rolestest.ChunkSize])
		eventually(t, "the interrupted upload's chunk collected", func() bool { return !storedAnywhere(c, r.ChunkId) })
		eventually(t, "disk usage back to what it was", func() bool { return slices.Equal(usedBytes(c), before) })
	})

	t.Run("coordinator restarted mid-upload", func(t *testing.T) {
		t.Parallel()
		is := is.New(t)
		c := rolestest.Start(t, 3, opts)
		cl := rolestest.Client(t, c)
		cc := coordClient(t, c)
		ctx := t.Context()
		data := randomBytes(2*rolestest.ChunkSize + 5)
		open, err := cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: "/orphan/restart", Size: int64(len(data))})
		is.NoErr(err) // UploadFile
		receipts := []*dfspb.ChunkReceipt{storeByHand(t, open.Chunks[0], data[:rolestest.ChunkSize])}

		// A chunk written before the crash with no session at all is an
		// orphan for the restarted coordinator.
		before := storeOrphan(t, c, 1)
		restartCoordinator(t, c)
		is.NoErr(c.WaitHealthy(3, waitFor))
		eventually(t, "the orphan from before the restart collected", func() bool { return !storedAnywhere(c, string(before)) })
		after := storeOrphan(t, c, 2)
		eventually(t, "an orphan from after the restart collected", func() bool { return !storedAnywhere(c, string(after)) })
		is.True(storedAnywhere(c, receipts[0].ChunkId)) // the open upload's chunk from before the restart is kept
		receipts = append(receipts,
			storeByHand(t, open.Chunks[1], data[rolestest.ChunkSize:2*rolestest.ChunkSize]),
			storeByHand(t, open.Chunks[2], data[2*rolestest.ChunkSize:]))
		_, err = cc.ConfirmUpload(ctx, &dfspb.ConfirmUploadRequest{SessionId: open.SessionId, Size: int64(len(data)), Sha256: sha256Sum(data), Chunks: receipts, ChunkCount: uint32(len(receipts))})
		is.NoErr(err) // the upload commits across the restart
		checkFiles(t, cl, map[string][]byte{"/orphan/restart": data})
	})
}

// TestDecommissionDuringLoad drains a node while several clients put and
// get files: no get fails or returns a wrong byte at any moment, no put
// fails, no chunk of a put started after the decommission goes to the
// node, and the node ends decommissioned with every chunk on three other
// nodes; then it is stopped and everything still reads back.
func TestDecommissionDuringLoad(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	// A bandwidth cap keeps the drain going while the clients work.
	c := healingCluster(t, 4, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.RepairBandwidth = 16 * rolestest.ChunkSize }))
	cl := rolestest.Client(t, c)
	ctx := t.Context()
	initial := putFiles(t, cl, "/decom/initial", 3*rolestest.ChunkSize, 4*rolestest.ChunkSize+1, 2*rolestest.ChunkSize+2, 5*rolestest.ChunkSize+3, 1, rolestest.ChunkSize)

	var mu sync.Mutex
	files := map[string][]byte{}
	for p, d := range initial {
		files[p] = d
	}
	after := map[string]bool{} // puts started after the decommission returned
	var decommissioned atomic.Bool
	var puts, putFailures, gets, getFailures, wrong atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for w := range 2 {
		wg.Add(1)
		go func() { // putter
			defer wg.Done()
			for i := 0; !stopped(); i++ {
				p := fmt.Sprintf("/decom/put/%d/%d", w, i)
				data := randomBytes(rand.IntN(3*rolestest.ChunkSize) + 1)
				late := decommissioned.Load()
				_, err := cl.Put(ctx, p, bytes.NewReader(data), int64(len(data)), nil)
				puts.Add(1)
				if err != nil {
					putFailures.Add(1)
					lastErr.Store(fmt.Sprintf("put %s: %v", p, err))
					continue
				}
				mu.Lock()
				files[p] = data
				if late {
					after[p] = true
				}
				mu.Unlock()
			}
		}()
	}
	for range 3 {
		wg.Add(1)
		go func() { // getter
			defer wg.Done()
			for !stopped() {
				mu.Lock()
				paths := slices.Collect(mapKeys(files))
				mu.Unlock()
				p := paths[rand.IntN(len(paths))]
				mu.Lock()
				want := files[p]
				mu.Unlock()
				got, err := getBytes(ctx, cl, p)
				gets.Add(1)
				switch {
				case err != nil:
					getFailures.Add(1)
					lastErr.Store(fmt.Sprintf("get %s: %v", p, err))
				case !bytes.Equal(got, want):
					wrong.Add(1)
				}
			}
		}()
	}

	drained := mostLoaded(c, nil)
	eventually(t, "the clients under way", func() bool { return puts.Load() > 0 && gets.Load() > 0 })
	st, err := cl.Decommission(ctx, drained[:8], false)
	is.NoErr(err)               // decommission by an ID prefix
	is.Equal(st.ID, drained)    // of that node
	is.True(st.Draining)        // draining now
	is.True(!st.Decommissioned) // not drained yet: it holds chunks
	decommissioned.Store(true)
	down := nodeSet{drained: true}
	eventually(t, "the node decommissioned", func() bool { return nodeState(t, c, drained).Decommissioned })
	eventually(t, "a few puts after the decommission", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(after) >= 4
	})
	close(stop)
	wg.Wait()
	t.Logf("%d puts (%d after the decommission), %d gets; last error: %v", puts.Load(), len(after), gets.Load(), lastErr.Load())
	is.Equal(wrong.Load(), int64(0))       // no get returned a wrong byte
	is.Equal(getFailures.Load(), int64(0)) // no get failed
	is.Equal(putFailures.Load(), int64(0)) // no put failed

	for p := range after {
		fi, err := cl.Stat(ctx, p)
		is.NoErr(err) // stat
		for _, ch := range fi.Chunks {
			for _, r := range ch.Replicas {
				is.True(r.Node != drained) // no new chunk listed on the draining node
			}
			is.True(!nodeByID(c, drained).Node.Store().Has(rpc.ChunkID(ch.ID))) // nor on its disk
		}
	}
	waitHealed(t, c, cl, slices.Sorted(mapKeys(files)), 3, down)
	ns := nodeState(t, c, drained)
	is.True(ns.Draining && ns.Decommissioned) // listed as safe to remove
	is.NoErr(c.StopNode(nodeIndex(t, c, drained)))
	checkFiles(t, cl, files)
}

// TestFsck pins fsck: healthy files are not listed; with a node dead and
// no node to copy to, files are under-replicated, one whose only copy was
// there unreadable, each chunk naming the dead node; a path narrows the
// check; once the node is back every file is healthy again.
func TestFsck(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := healingCluster(t, 3)
	cl := rolestest.Client(t, c)
	one := rolestest.Client(t, c, func(cfg *client.Config) { cfg.Replication = 1 })
	ctx := t.Context()
	files := putFiles(t, cl, "/fsck", 3*rolestest.ChunkSize+1, 10)
	single := randomBytes(rolestest.ChunkSize - 3) // one chunk, on one node
	fi, err := one.Put(ctx, "/fsck/single", bytes.NewReader(single), int64(len(single)), nil)
	is.NoErr(err) // put a file with one copy
	files["/fsck/single"] = single

	bad, sum, err := cl.Fsck(ctx, "/")
	is.NoErr(err)                        // fsck
	is.Equal(len(bad), 0)                // no file listed
	is.Equal(sum.Files, int64(3))        // three files checked
	is.Equal(sum.Chunks, int64(4+1+1))   // all their chunks
	is.Equal(sum.HealthyFiles, int64(3)) // all healthy
	is.Equal(sum.UnderReplicatedFiles, int64(0))
	is.Equal(sum.UnreadableFiles, int64(0))

	// The node holding the single copy dies; with three nodes and
	// replication three there is nowhere to copy the others to.
	victim := fi.Chunks[0].Replicas[0].Node
	is.NoErr(c.StopNode(nodeIndex(t, c, victim)))
	waitDead(t, c, victim)
	eventually(t, "fsck to see the dead node", func() bool {
		bad, sum, err = cl.Fsck(ctx, "/")
		// The summary's health is the coordinator's last scan: it may
		// lag the file checks by a scan.
		return err == nil && sum.UnderReplicatedFiles+sum.UnreadableFiles == 3 && sum.Health.UnderReplicated == 6
	})
	is.Equal(sum.HealthyFiles, int64(0))           // nothing healthy
	is.Equal(sum.UnderReplicatedFiles, int64(2))   // the replicated files are under-replicated
	is.Equal(sum.UnreadableFiles, int64(1))        // the single copy is gone
	is.Equal(sum.Health.UnderReplicated, int64(6)) // every chunk is short
	is.Equal(sum.Health.Missing, int64(1))         // the single copy has no live copy
	is.Equal(len(bad), 3)                          // every file listed
	for _, f := range bad {
		is.Equal(f.Unreadable, f.Path == "/fsck/single") // only the single copy is unreadable
		is.True(len(f.Chunks) > 0)                       // with its chunks
		for _, ch := range f.Chunks {
			is.Equal(ch.DeadNodes, []string{victim}) // naming the dead node
			is.Equal(len(ch.CorruptNodes), 0)
			if f.Path == "/fsck/single" {
				is.Equal(ch.Live, uint32(0))
			} else {
				is.Equal(ch.Live, uint32(2))        // two live copies
				is.Equal(ch.Replication, uint32(3)) // of three
			}
		}
	}
	bad, sum, err = cl.Fsck(ctx, "/fsck/0")
	is.NoErr(err)                    // fsck of one file
	is.Equal(sum.Files, int64(1))    // checks that file
	is.Equal(len(bad), 1)            // and lists it
	is.Equal(bad[0].Path, "/fsck/0") // by its path
	is.Equal(len(bad[0].Chunks), 4)  // with every chunk

	_, err = c.RestartNode(nodeIndex(t, c, victim))
	is.NoErr(err) // the node comes back
	eventually(t, "fsck healthy again", func() bool {
		bad, sum, err := cl.Fsck(ctx, "/")
		return err == nil && len(bad) == 0 && sum.HealthyFiles == 3
	})
	checkFiles(t, cl, files)
}
