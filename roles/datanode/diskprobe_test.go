package datanode

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore"
	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// breakProbe makes the writability probe fail as on a read-only disk (the
// tests run as root, so permissions cannot): a non-empty directory where
// the probe writes its file. It returns the repair.
func breakProbe(t *testing.T, dir string) func() {
	t.Helper()
	p := filepath.Join(dir, chunkstore.ProbeFile)
	// The probe's own file may be there for a moment: try again.
	eventually(t, "the probe's path is made a directory", func() bool { return os.MkdirAll(filepath.Join(p, "x"), 0o700) == nil })
	return func() {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiskNotWritable: a node whose data dir stops taking writes says so
// in its heartbeats, refuses new chunks naming itself (so the client
// places them elsewhere), still serves what it has, and takes chunks
// again once the disk is writable.
func TestDiskNotWritable(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	n := startNode(t, coord)
	dn := client(t, n)
	a, b := chunkID(t, 1), chunkID(t, 2)
	data := chunkData(3*testFrame, 1)
	digest := upload(t, dn, a, data, testFrame)

	repair := breakProbe(t, n.cfg.DataDir)
	eventually(t, "the heartbeat reports the disk error", func() bool { return coord.DiskError(n.ID()) != "" })

	st, err := dn.UploadChunkStream(t.Context())
	is.NoErr(err)
	prep := &dfspb.PrepareChunkUploadRequest{ChunkId: string(b), Size: int64(len(data)), FrameSize: testFrame}
	_, _, err = chunkstream.SendChunk(t.Context(), st, "", prep, b, data, testFrame, chunkstream.DefaultWindow)
	is.Equal(rpc.KindOf(err), rpc.Unavailable)                       // a new chunk is refused
	is.True(slices.Contains(rpc.FailedNodesOf(err), string(n.ID()))) // naming this node
	is.True(!n.Store().Has(b))                                       // and not stored

	got, err := download(t.Context(), dn, chunkstream.Expect{ChunkID: a, Size: int64(len(data)), FrameSize: testFrame, Digest: digest})
	is.NoErr(err)                   // reads still served
	is.True(bytes.Equal(got, data)) // byte for byte

	repair()
	eventually(t, "the heartbeat clears the disk error", func() bool { return coord.DiskError(n.ID()) == "" })
	upload(t, dn, b, data, testFrame) // takes new chunks again
	is.True(n.Store().Has(b))
}
