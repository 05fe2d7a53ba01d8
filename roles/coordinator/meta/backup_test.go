package meta

import (
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/rpc"
)

// TestBackupFrameFitsLargestFile pins that a backup can be restored
// whatever its files: the record of a file of rpc.MaxFileChunks chunks of
// the largest encoding, with the longest path, fits in one frame.
func TestBackupFrameFitsLargestFile(t *testing.T) {
	is := is.New(t)
	largest := rpc.MaxFileChunks*MaxChunkRecordSize() + 2*rpc.MaxPathLen + 1024
	is.True(largest > 64<<20)         // more than the old frame limit
	is.True(largest < maxBackupFrame) // fits the frame limit
}
