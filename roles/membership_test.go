package roles_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/datanode"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// nodeStatus returns the coordinator's status of node id, and how many
// nodes it lists.
func nodeStatus(t *testing.T, cc dfspb.CoordinatorClient, id rpc.NodeID) (*dfspb.NodeStatus, int) {
	t.Helper()
	resp, err := cc.ListNodes(t.Context(), &dfspb.ListNodesRequest{})
	if err != nil {
		t.Fatalf("ListNodes: %v", err)
	}
	for _, n := range resp.Nodes {
		if n.NodeId == string(id) {
			return n, len(resp.Nodes)
		}
	}
	return nil, len(resp.Nodes)
}

// putAndGet puts a file of three chunks at path and reads it back.
func putAndGet(t *testing.T, c *roles.Cluster, path string) {
	t.Helper()
	is := is.New(t)
	is.Helper()
	cl := rolestest.Client(t, c)
	data := randomBytes(2*rolestest.ChunkSize + 100)
	_, err := cl.Put(t.Context(), path, bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // put
	got, err := getBytes(t.Context(), cl, path)
	is.NoErr(err)                   // get
	is.True(bytes.Equal(got, data)) // reads back identical
}

// TestForgedRegistration pins that one registration with a live node's ID
// from another address is refused, naming the ID and both addresses: the
// node stays at its address, healthy, flagged in the node list, and puts
// on a cluster that needs every node keep working.
func TestForgedRegistration(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3)
	cc := coordClient(t, c)
	victim := c.Nodes()[0].Node
	const forged = "127.0.0.1:1"

	_, err := cc.RegisterDataNode(t.Context(), &dfspb.RegisterDataNodeRequest{NodeId: string(victim.ID()), Addr: forged})
	is.Equal(statusKind(err), rpc.FailedPrecondition) // refused
	for _, s := range []string{string(victim.ID()), victim.Addr(), forged} {
		is.True(strings.Contains(err.Error(), s)) // the refusal names the ID and both addresses
	}

	refused := time.Now()
	eventually(t, "heartbeats after the forged registration", func() bool {
		st, _ := nodeStatus(t, cc, victim.ID())
		return time.UnixMilli(st.LastHeartbeatUnixMs).After(refused.Add(300 * time.Millisecond))
	})
	st, count := nodeStatus(t, cc, victim.ID())
	is.Equal(count, 3)                                     // no fourth node
	is.Equal(st.Addr, victim.Addr())                       // the node stays at its address
	is.Equal(st.State, dfspb.NodeState_NODE_STATE_HEALTHY) // healthy
	is.Equal(st.ConflictAddr, forged)                      // the conflict is flagged
	putAndGet(t, c, "/forged/file")                        // puts need all three nodes and work
}

// TestCopiedDataDir pins that a datanode started on a copy of a running
// node's data directory is refused while the original answers at its
// address (it logs the refusal, is not ready and keeps retrying), the
// cluster keeps working, and that once the original stops the copy takes
// the node's place at once, without waiting out a suspect timeout.
func TestCopiedDataDir(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) {
		// Only the check that the old address is gone can let the copy in.
		cfg.SuspectAfter, cfg.DeadAfter = 10*time.Minute, 10*time.Minute
	}))
	cc := coordClient(t, c)
	orig := c.Nodes()[0]
	putAndGet(t, c, "/copied/before")

	dir := filepath.Join(t.TempDir(), "copy")
	is.NoErr(copyDir(orig.Dir, dir)) // copy the running node's data dir
	cfg := datanode.DefaultConfig()
	cfg.DataDir, cfg.Listen = dir, "127.0.0.1:0"
	cfg.Coordinators = []string{c.Addr()}
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.ScrubRate = 0
	dn, err := datanode.New(cfg, datanode.Deps{Log: rolestest.Logger(t)})
	is.NoErr(err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dn.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	eventually(t, "the copy refused", func() bool {
		err := dn.Readiness()
		return err != nil && strings.Contains(err.Error(), "refusing the same node ID")
	})
	is.Equal(dn.ID(), orig.Node.ID()) // the copy has the original's ID
	st, count := nodeStatus(t, cc, orig.Node.ID())
	is.Equal(count, 3)                   // no fourth node
	is.Equal(st.Addr, orig.Node.Addr())  // the original stays
	is.Equal(st.ConflictAddr, dn.Addr()) // the copy's address is flagged
	putAndGet(t, c, "/copied/during")

	is.NoErr(c.StopNode(0)) // the original goes away
	eventually(t, "the copy registered in its place", func() bool {
		st, _ := nodeStatus(t, cc, orig.Node.ID())
		return st.Addr == dn.Addr() && dn.Readiness() == nil
	})
	putAndGet(t, c, "/copied/after")
}

// copyDir copies the regular files below src to dst.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
}

// TestRegistrationFlood pins that a flood of registrations of made-up
// nodes gets replies that do not grow with the cluster, that registrations
// beyond the burst are refused with ResourceExhausted, and that the fake
// nodes, dead, are forgotten after --forget-dead-after with the deletions
// recorded for them: gone from the node list, GC's queue, the metadata
// store and the real datanodes' membership.
func TestRegistrationFlood(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	const fakes = 2000
	c := rolestest.Start(t, 3, rolestest.WithLogLevel(zerolog.ErrorLevel), rolestest.WithCoordinator(func(cfg *coordinator.Config) {
		cfg.SuspectAfter, cfg.DeadAfter, cfg.ForgetDeadAfter = 10*time.Second, 10*time.Second, 2*time.Second
		cfg.RegisterRate, cfg.RegisterBurst = 0.01, fakes+20
	}))
	ctx := t.Context()
	cc := coordClient(t, c)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	is.NoErr(err)
	nowhere := lis.Addr().String() // nothing listens here
	lis.Close()

	register := func(id string) (*dfspb.RegisterDataNodeResponse, error) {
		return cc.RegisterDataNode(ctx, &dfspb.RegisterDataNodeRequest{NodeId: id, Addr: nowhere, Capacity: 1 << 50, Free: 1 << 50})
	}
	fakeDeletions := func() int {
		n := 0
		for _, r := range backupRecords(t, cc) {
			if r.Deletion != nil && !isReal(c, r.Deletion.Node) {
				n++
			}
		}
		return n
	}

	// The first fakes get uploads placed on them (they have the most free
	// space), aborted: deletions are recorded for them.
	const placed = 10
	for range placed {
		_, err := register(string(rpc.NewSessionID()))
		is.NoErr(err) // a fake registers
	}
	for i := range 5 {
		up, err := cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: fmt.Sprintf("/flood/%d", i), Size: 2 * rolestest.ChunkSize})
		is.NoErr(err) // upload placed
		_, err = cc.AbortUpload(ctx, &dfspb.AbortUploadRequest{SessionId: up.SessionId})
		is.NoErr(err) // and aborted
	}
	is.True(fakeDeletions() > 0) // deletions recorded for fake nodes

	// The flood.
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures int
		first    error // of the failures
		biggest  int
	)
	const workers = 8
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < fakes-placed; i += workers {
				resp, err := register(string(rpc.NewSessionID()))
				if err == nil && len(resp.Nodes) != 0 {
					err = fmt.Errorf("register reply lists %d nodes", len(resp.Nodes))
				}
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if err != nil {
					failures++
				} else {
					biggest = max(biggest, proto.Size(resp))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	is.NoErr(first) // every fake registered, no reply listing the nodes
	is.Equal(failures, 0)
	is.True(biggest < 128) // replies stay small however many nodes there are

	var refusal error
	for range 40 {
		if _, err := register(string(rpc.NewSessionID())); err != nil {
			refusal = err
			break
		}
	}
	is.Equal(statusKind(refusal), rpc.ResourceExhausted)   // registrations beyond the burst are refused
	is.True(strings.Contains(refusal.Error(), "retry in")) // with a hint when to retry

	eventually(t, "the fake nodes forgotten", func() bool {
		_, count := nodeStatus(t, cc, "")
		return count == 3
	})
	eventually(t, "their deletions dropped", func() bool { return c.Coordinator().PendingDeletes() == 0 })
	is.Equal(fakeDeletions(), 0) // and gone from the store
	for _, n := range c.Nodes() {
		eventually(t, "the datanodes forget them too", func() bool { return len(n.Node.Peers()) == 3 })
	}
	putAndGet(t, c, "/flood/after") // the cluster works
}

func isReal(c *roles.Cluster, id rpc.NodeID) bool {
	for _, n := range c.Nodes() {
		if n.Node.ID() == id {
			return true
		}
	}
	return false
}

// backupRecords reads every record of a backup of the metadata store.
func backupRecords(t *testing.T, cc dfspb.CoordinatorClient) []meta.Record {
	t.Helper()
	st, err := cc.Backup(t.Context(), &dfspb.BackupRequest{})
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	var buf bytes.Buffer
	for {
		ch, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Backup: %v", err)
		}
		buf.Write(ch.Data)
	}
	_, recs, err := meta.ReadBackup(&buf)
	if err != nil {
		t.Fatalf("read backup: %v", err)
	}
	return recs
}

// TestRateLimitedDatanodeRetries: a datanode whose registration is turned
// away by the rate limit retries and gets in once the budget refills.
func TestRateLimitedDatanodeRetries(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := rolestest.Start(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) {
		cfg.RegisterRate, cfg.RegisterBurst = 0.3, 3
	}))
	cc := coordClient(t, c)
	var refused error
	for range 20 { // use the budget up
		_, err := cc.RegisterDataNode(t.Context(), &dfspb.RegisterDataNodeRequest{NodeId: string(rpc.NewSessionID()), Addr: "127.0.0.1:1"})
		if err != nil {
			refused = err
			break
		}
	}
	is.Equal(statusKind(refused), rpc.ResourceExhausted) // the budget is used up
	n, err := c.AddNode()
	is.NoErr(err) // a new datanode gets in after being turned away
	st, _ := nodeStatus(t, cc, n.Node.ID())
	is.Equal(st.State, dfspb.NodeState_NODE_STATE_HEALTHY) // and is healthy
}
