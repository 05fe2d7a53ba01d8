package coordinatortest_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/repair"
	"github.com/dfs-project/dfs/roles/coordinator/coordinatortest"
	"github.com/dfs-project/dfs/rpc"
)

// TestNodesContract pins the fake to what coordinator.Datanodes promises,
// so tests built on it test the coordinator and not the fake.
func TestNodesContract(t *testing.T) {
	ctx := t.Context()
	const n1, n2 = rpc.NodeID("n1"), rpc.NodeID("n2")
	const a1, a2 = "127.0.0.1:1", "127.0.0.1:2"
	digest := bytes.Repeat([]byte{7}, rpc.DigestSize)
	copyOf := coordinatortest.Copy{Size: 10, FrameSize: 10, Digest: digest}
	newNodes := func() *coordinatortest.Nodes {
		nodes := coordinatortest.New()
		nodes.Add(n1, a1)
		nodes.Add(n2, a2)
		nodes.Put(a1, "a", copyOf)
		nodes.Put(a1, "b", copyOf)
		return nodes
	}

	t.Run("delete", func(t *testing.T) {
		is := is.New(t)
		nodes := newNodes()
		failed, deleted, freed, err := nodes.Delete(ctx, n1, a1, []rpc.ChunkID{"a", "missing"})
		is.NoErr(err)
		is.Equal(len(failed), 0)                       // a missing chunk counts as deleted
		is.Equal(deleted, int64(1))                    // one chunk removed
		is.Equal(freed, int64(10))                     // its bytes freed
		is.Equal(nodes.Chunks(a1), []rpc.ChunkID{"b"}) // only the named chunks go
		_, _, _, err = nodes.Delete(ctx, n2, a1, []rpc.ChunkID{"b"})
		is.True(errors.Is(err, rpc.NotFound)) // a delete meant for another node is refused
		is.True(nodes.Has(a1, "b"))           // and deletes nothing
	})
	t.Run("replicate", func(t *testing.T) {
		is := is.New(t)
		nodes := newNodes()
		task := repair.Task{Need: repair.Need{Chunk: "a", Size: 10, FrameSize: 10, Digest: digest[:rpc.DigestPrefixSize]},
			Source: placement.Node{ID: n1, Addr: a1}, Target: placement.Node{ID: n2, Addr: a2}}
		is.NoErr(nodes.Replicate(ctx, task)) // copies, the digest named by its prefix
		is.True(nodes.Has(a2, "a"))          // to the target

		other := task
		other.Digest = bytes.Repeat([]byte{8}, rpc.DigestPrefixSize)
		nodes.Lose(a2, "a")
		err := nodes.Replicate(ctx, other)
		is.True(errors.Is(err, rpc.Internal))                        // a source holding another chunk is refused
		is.True(slices.Contains(rpc.FailedNodesOf(err), string(n1))) // and blamed
		is.True(!nodes.Has(a2, "a"))

		nodes.Corrupt(a1, "b")
		task.Chunk = "b"
		err = nodes.Replicate(ctx, task)
		is.True(errors.Is(err, rpc.NotFound))                        // a bad source copy is not copied
		is.True(slices.Contains(rpc.FailedNodesOf(err), string(n1))) // and the source is blamed
		is.True(!nodes.Has(a2, "b"))
	})
	t.Run("verify", func(t *testing.T) {
		is := is.New(t)
		nodes := newNodes()
		nodes.Corrupt(a1, "b")
		present, corrupt, err := nodes.Verify(ctx, a1, "a")
		is.NoErr(err)
		is.True(present && !corrupt) // a good copy
		present, corrupt, err = nodes.Verify(ctx, a1, "b")
		is.NoErr(err)
		is.True(present && corrupt) // a corrupt one
		nodes.Lose(a1, "a")
		present, _, err = nodes.Verify(ctx, a1, "a")
		is.NoErr(err)
		is.True(!present) // a lost one
	})
	t.Run("faults", func(t *testing.T) {
		is := is.New(t)
		nodes := newNodes()
		id, err := nodes.Identify(ctx, a2)
		is.NoErr(err)
		is.Equal(id, n2) // the node at the address
		down := rpc.Errorf(rpc.Unavailable, "down")
		nodes.SetDown(a1, down)
		_, _, err = nodes.Verify(ctx, a1, "a")
		is.True(errors.Is(err, down)) // a node that is down fails every call
		nodes.Remove(a2)
		_, err = nodes.Identify(ctx, a2)
		is.True(errors.Is(err, rpc.Unavailable)) // nothing answers at a removed node's address
		is.True(nodes.Calls(a1) > 0)             // calls are counted
	})
}
