package boltstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/internal/testdisk"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/rpc"
)

// makeRealStore writes a store like a coordinator's after some use:
// files small and large (a record of many chunks spills over pages),
// open uploads, pending deletions and a drain. It returns the cluster ID
// and how many records it holds (the directories Init creates included).
func makeRealStore(t *testing.T, path string) (cluster string, records int) {
	t.Helper()
	s, err := Open(path, quietOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	node := rpc.NodeID(uuid.NewSHA1(uuid.NameSpaceURL, []byte("node")).String())
	var recs []meta.Record
	for i := range 80 {
		recs = append(recs, meta.Record{File: metatest.NewFile(fmt.Sprintf("/data/%03d/file-%d", i/10, i), 1+(i*7)%40, 1)})
	}
	for i := range 5 {
		recs = append(recs, meta.Record{Upload: &meta.Upload{ID: rpc.SessionID(uuid.NewSHA1(uuid.NameSpaceURL, []byte{byte(i)}).String()),
			Path: rpc.Path(fmt.Sprintf("/up/%d", i)), ChunkSize: 1 << 20, Replication: 3, Created: time.Unix(1700000000, 0)}})
	}
	for i := range 30 {
		recs = append(recs, meta.Record{Deletion: &meta.Deletion{Node: node, Chunk: rpc.NewChunkID("/old", "s", 0, uint32(i))}})
	}
	recs = append(recs, meta.Record{Drain: &node})
	cluster = uuid.NewSHA1(uuid.NameSpaceURL, []byte("cluster")).String()
	if err := s.Init(context.Background(), cluster, recs); err != nil {
		t.Fatal(err)
	}
	records = len(recs)
	if err := s.Snapshot(context.Background(), func(r meta.Record) error {
		if r.Dir != nil {
			records++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return cluster, records
}

func quietOptions() Options {
	o := DefaultOptions()
	o.Log = zerolog.Nop()
	return o
}

// load reads every record the way a coordinator starting a term does,
// and the directories.
func load(s *Store) (int, error) {
	ctx := context.Background()
	n := 0
	if err := s.Files(ctx, func(*meta.File) error { n++; return nil }); err != nil {
		return n, err
	}
	err := s.walk("load", bucketFiles, nil, func(k, v []byte) (bool, error) {
		if !isDirKey(k) {
			return true, nil
		}
		n++
		_, err := decodeDir(k, v)
		return true, err
	})
	if err != nil {
		return n, err
	}
	ups, err := s.Uploads(ctx)
	if err != nil {
		return n, err
	}
	dels, err := s.Deletions(ctx)
	if err != nil {
		return n, err
	}
	drains, err := s.Drains(ctx)
	return n + len(ups) + len(dels) + len(drains), err
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedStore flips one byte at each of many positions of a real
// store file. Every trial ends one of three ways, never in a wait or a
// crash: the store opens and loads (the byte was unused, or in a value
// that still decodes); Open refuses the file as damaged; or loading
// fails at once with an internal error naming the file, the bucket and
// the record. In the last two, Salvage copies every readable record into
// a new store that opens and loads, and says what was lost.
func TestDamagedStore(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.db")
	cluster, records := makeRealStore(t, orig)
	fi, err := os.Stat(orig)
	is.NoErr(err)
	var size int64
	{
		s, err := Open(orig, quietOptions())
		is.NoErr(err)
		is.NoErr(s.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }))
		n, err := load(s)
		is.NoErr(err)        // the undamaged store loads
		is.Equal(n, records) // every record
		is.NoErr(s.Close())
	}
	is.True(size <= fi.Size())

	// Deterministic positions: spread over the whole database, each at a
	// different offset within its page; and in every page's header and
	// first element headers (bolt's page structure: 16-byte header, then
	// 16-byte leaf or branch elements), the meta pages included.
	var offsets []int64
	const spread = 80
	for i := range int64(spread) {
		offsets = append(offsets, (i*size/spread+i*37)%size)
	}
	for p := range size / 4096 {
		offsets = append(offsets, p*4096+(p*5)%48)
	}
	outcomes := map[string]int{}
	for _, off := range offsets {
		t.Run(fmt.Sprintf("offset %d", off), func(t *testing.T) {
			is := is.New(t)
			path := filepath.Join(t.TempDir(), "metadata.db")
			copyFile(t, orig, path)
			testdisk.FlipByte(t, path, off)

			outcome := "loads"
			s, err := Open(path, quietOptions())
			switch {
			case err != nil:
				outcome = "refused at open"
				is.True(errors.Is(err, rpc.FailedPrecondition)) // refused as damaged
				is.True(strings.Contains(err.Error(), path))    // naming the file
			default:
				_, err = load(s)
				s.Close()
				if err != nil {
					outcome = "load fails"
					t.Log(err)
					is.True(errors.Is(err, rpc.Internal))                                               // a damaged record is an internal error
					is.True(strings.Contains(err.Error(), "damaged metadata file "+path+": bucket \"")) // naming the file and the bucket
				}
			}
			outcomes[outcome]++
			if outcome == "loads" {
				return
			}
			to := filepath.Join(t.TempDir(), "salvaged.db")
			var lost []Lost
			rep, err := Salvage(context.Background(), path, to, SalvageOptions{Lost: func(l Lost) { lost = append(lost, l) }})
			if err != nil && errors.Is(err, rpc.FailedPrecondition) && strings.Contains(err.Error(), "cluster id") {
				// The cluster id itself is damaged: the operator gives it.
				rep, err = Salvage(context.Background(), path, to, SalvageOptions{ClusterID: cluster, Lost: func(l Lost) { lost = append(lost, l) }})
			}
			if err != nil && errors.Is(err, rpc.FailedPrecondition) && strings.Contains(err.Error(), "not a bolt database") {
				outcomes["unsalvageable: bolt refuses the file"]++
				return
			}
			is.NoErr(err) // salvage succeeds
			for _, l := range lost {
				t.Log(l)
			}
			copied := 0
			for _, n := range rep.Copied {
				copied += n
			}
			is.True(copied <= records) // nothing is invented
			s, err = Open(to, quietOptions())
			is.NoErr(err) // the salvaged store opens
			defer s.Close()
			is.Equal(s.ClusterID(), cluster) // as the same cluster
			n, err := load(s)
			is.NoErr(err)        // and loads
			is.True(n >= copied) // every record salvage copied (and the parents of files whose directory was lost)
			if len(lost) == 0 {
				is.Equal(copied, records) // nothing lost: everything copied
			}
		})
	}
	t.Logf("outcomes of %d one-byte flips in a file of %d pages: %v", len(offsets), size/4096, outcomes)
}

func TestSalvageRefuses(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.db")
	makeRealStore(t, orig)
	_, err := Salvage(context.Background(), orig, orig, SalvageOptions{})
	is.True(errors.Is(err, rpc.Exists)) // an existing target is refused
	garbage := filepath.Join(dir, "garbage")
	is.NoErr(os.WriteFile(garbage, []byte(strings.Repeat("x", 10000)), 0o600))
	to := filepath.Join(dir, "new.db")
	_, err = Salvage(context.Background(), garbage, to, SalvageOptions{})
	is.True(errors.Is(err, rpc.FailedPrecondition)) // a file bolt cannot read is refused
	_, err = os.Stat(to)
	is.True(errors.Is(err, os.ErrNotExist)) // and nothing is left behind
	_, err = Salvage(context.Background(), orig, to, SalvageOptions{ClusterID: "nope"})
	is.True(errors.Is(err, rpc.Invalid)) // a cluster id that is not a UUID is refused
}
