package meta_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// TestSynthBackup: a synthetic namespace's backup reads back whole, in
// path order, every file one valid chunk with a distinct ID, as a put
// would have committed it.
func TestSynthBackup(t *testing.T) {
	is := is.New(t)
	s, err := meta.NewSynth(2500, 4<<10, 8<<20, 1<<20, 3, time.Unix(1700000000, 0))
	is.NoErr(err) // the synth is valid
	var buf bytes.Buffer
	n, err := meta.Backup(t.Context(), s, &buf, meta.BackupInfo{ClusterID: uuid.NewString(), Created: time.Now(), Store: "synth"})
	is.NoErr(err)             // the backup is written
	is.Equal(n, uint64(2500)) // one record a file
	info, recs, err := meta.ReadBackup(&buf)
	is.NoErr(err)                        // it reads back and verifies
	is.Equal(info.Records, uint64(2500)) // with every record
	ids := map[rpc.ChunkID]bool{}
	prev := ""
	for _, r := range recs {
		f := r.File
		is.True(f != nil)              // every record is a file
		is.True(string(f.Path) > prev) // in path order
		prev = string(f.Path)
		is.Equal(len(f.Chunks), 1)         // of one chunk
		is.Equal(f.Chunks[0].Size, f.Size) // holding the whole file
		is.Equal(f.Version, uint64(1))     // at its first version
		is.True(f.Session != "")           // committed by a session
		is.True(!ids[f.Chunks[0].ID])      // chunk IDs are distinct
		ids[f.Chunks[0].ID] = true
		is.Equal(rpc.NewChunkID(f.Path, f.Session, 0, 0), f.Chunks[0].ID) // derived as an upload derives it
	}
	is.Equal(s.File(7).Chunks[0], s.Chunk(7)) // Chunk agrees with File
	_, err = meta.NewSynth(1, 9<<20, 8<<20, 1<<20, 3, time.Now())
	is.True(err != nil) // a file larger than a chunk is refused
}
