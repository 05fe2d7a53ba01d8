package gctest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/gc/gctest"
	"github.com/dfs-project/dfs/rpc"
)

// TestNodesContract pins the fake to the gc.Deleter contract, so tests
// built on it test the collector and not the fake.
func TestNodesContract(t *testing.T) {
	ctx := context.Background()
	const n1, n2 = rpc.NodeID("n1"), rpc.NodeID("n2")

	t.Run("deletes", func(t *testing.T) {
		is := is.New(t)
		nodes := gctest.New()
		nodes.Add(n1, "a", "b", "c")
		nodes.Add(n2, "a")
		failed, err := nodes.DeleteChunks(ctx, n1, []rpc.ChunkID{"a", "c", "missing"})
		is.NoErr(err)                                  // call succeeds
		is.Equal(len(failed), 0)                       // a missing chunk counts as deleted
		is.Equal(nodes.Chunks(n1), []rpc.ChunkID{"b"}) // only the named chunks go
		is.True(nodes.Has(n2, "a"))                    // other nodes are untouched
		is.Equal(nodes.Calls(n1), 1)                   // one call
		is.Equal(nodes.MaxBatch(n1), 3)                // of three IDs
	})
	t.Run("unknown node", func(t *testing.T) {
		is := is.New(t)
		nodes := gctest.New()
		nodes.Add(n1, "a")
		nodes.Remove(n1)
		_, err := nodes.DeleteChunks(ctx, n1, []rpc.ChunkID{"a"})
		is.True(errors.Is(err, rpc.NotFound))          // a node gone from the cluster is NotFound
		is.Equal(nodes.Chunks(n1), []rpc.ChunkID(nil)) // and holds nothing
	})
	t.Run("down", func(t *testing.T) {
		is := is.New(t)
		nodes := gctest.New()
		nodes.Add(n1, "a")
		nodes.SetDown(n1, rpc.Errorf(rpc.Unavailable, "down"))
		_, err := nodes.DeleteChunks(ctx, n1, []rpc.ChunkID{"a"})
		is.True(errors.Is(err, rpc.Unavailable)) // down node errors
		is.True(nodes.Has(n1, "a"))              // and deletes nothing
		nodes.SetDown(n1, nil)
		_, err = nodes.DeleteChunks(ctx, n1, []rpc.ChunkID{"a"})
		is.NoErr(err)                // back up
		is.True(!nodes.Has(n1, "a")) // deleted
	})
	t.Run("fail next", func(t *testing.T) {
		is := is.New(t)
		nodes := gctest.New()
		nodes.Add(n1, "a")
		nodes.FailNext(n1, 2)
		for range 2 {
			_, err := nodes.DeleteChunks(ctx, n1, []rpc.ChunkID{"a"})
			is.True(errors.Is(err, rpc.Unavailable)) // the next two calls fail
		}
		_, err := nodes.DeleteChunks(ctx, n1, []rpc.ChunkID{"a"})
		is.NoErr(err) // then it works
	})
	t.Run("stuck", func(t *testing.T) {
		is := is.New(t)
		nodes := gctest.New()
		nodes.Add(n1, "a", "b")
		nodes.SetStuck(n1, "b", true)
		failed, err := nodes.DeleteChunks(ctx, n1, []rpc.ChunkID{"a", "b"})
		is.NoErr(err)                                  // the call works
		is.Equal(failed, []rpc.ChunkID{"b"})           // the stuck chunk is reported
		is.Equal(nodes.Chunks(n1), []rpc.ChunkID{"b"}) // and kept
	})
	t.Run("hang and context", func(t *testing.T) {
		is := is.New(t)
		nodes := gctest.New()
		nodes.Add(n1, "a")
		nodes.SetHang(n1, true)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
		defer cancel()
		_, err := nodes.DeleteChunks(cctx, n1, []rpc.ChunkID{"a"})
		is.Equal(rpc.KindOf(err), rpc.DeadlineExceeded) // a hung node ends with the deadline
		is.True(nodes.Has(n1, "a"))                     // having deleted nothing
		canceled, cancel2 := context.WithCancel(ctx)
		cancel2()
		_, err = nodes.DeleteChunks(canceled, n1, []rpc.ChunkID{"a"})
		is.Equal(rpc.KindOf(err), rpc.Canceled) // a canceled call is not attempted
	})
}
