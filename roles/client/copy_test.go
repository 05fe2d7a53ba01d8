package client_test

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
)

// storedCopies counts the copies of the chunks named that the cluster's
// datanodes hold.
func storedCopies(c *roles.Cluster, ids []string) int {
	n := 0
	for _, node := range c.Nodes() {
		for _, id := range ids {
			if node.Node.Store().Has(rpc.ChunkID(id)) {
				n++
			}
		}
	}
	return n
}

// waitCopies waits (bounded) until the datanodes hold want copies of ids.
func waitCopies(t *testing.T, c *roles.Cluster, ids []string, want int) bool {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if storedCopies(c, ids) == want && c.Coordinator().PendingDeletes() == 0 {
			return true
		}
	}
	return false
}

// TestCopyGC pins the GC interplay of a server-side copy on a real
// cluster: the copy shares the source's chunks (no byte moves), removing
// the source leaves every chunk for the copy, a reader of the copy that
// is mid-read when the copy is removed finishes while the source holds
// the chunks, and the chunks go only when the last file using them does.
func TestCopyGC(t *testing.T) {
	t.Parallel()
	c, cl := startCluster(t)
	ctx := t.Context()
	data := randomBytes(3*rolestest.ChunkSize + 99)

	t.Run("remove the source, then the copy", func(t *testing.T) {
		is := is.New(t)
		_, err := cl.Put(ctx, "/gc/src", bytes.NewReader(data), int64(len(data)), nil)
		is.NoErr(err)
		src, err := cl.Stat(ctx, "/gc/src")
		is.NoErr(err)
		var ids []string
		for _, ch := range src.Chunks {
			ids = append(ids, ch.ID)
		}
		is.True(waitCopies(t, c, ids, 3*len(ids))) // three copies of each chunk

		cp, err := cl.Copy(ctx, "/gc/src", "/gc/copy", nil)
		is.NoErr(err)
		is.Equal(cp.Size, int64(len(data)))
		is.Equal(storedCopies(c, ids), 3*len(ids)) // no chunk was copied

		is.NoErr(cl.Remove(ctx, "/gc/src"))
		time.Sleep(200 * time.Millisecond)         // GC runs with no delay in tests: give it the chance to err
		is.True(waitCopies(t, c, ids, 3*len(ids))) // the copy keeps every chunk
		got, _, err := getBytes(t, cl, "/gc/copy")
		is.NoErr(err)
		is.True(bytes.Equal(got, data)) // and reads byte for byte

		is.NoErr(cl.Remove(ctx, "/gc/copy"))
		is.True(waitCopies(t, c, ids, 0)) // the last user gone, the chunks go
	})

	t.Run("remove the copy mid-read", func(t *testing.T) {
		is := is.New(t)
		_, err := cl.Put(ctx, "/gc2/src", bytes.NewReader(data), int64(len(data)), nil)
		is.NoErr(err)
		_, err = cl.Copy(ctx, "/gc2/src", "/gc2/copy", nil)
		is.NoErr(err)
		r, err := cl.Open(ctx, "/gc2/copy")
		is.NoErr(err)
		defer r.Close()
		half := make([]byte, len(data)/2)
		_, err = io.ReadFull(r, half)
		is.NoErr(err)
		is.NoErr(cl.Remove(ctx, "/gc2/copy"))
		time.Sleep(200 * time.Millisecond)
		rest, err := io.ReadAll(r)
		is.NoErr(err) // the source still holds the chunks: the read ends, verified
		is.True(bytes.Equal(append(half, rest...), data))
		got, _, err := getBytes(t, cl, "/gc2/src")
		is.NoErr(err)
		is.True(bytes.Equal(got, data)) // the source is whole
	})
}
