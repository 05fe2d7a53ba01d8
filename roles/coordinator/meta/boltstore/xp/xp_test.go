package xp

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func pct(ds []time.Duration) string {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	n := len(ds)
	return fmt.Sprintf("p10 %v p50 %v p90 %v", ds[n/10], ds[n/2], ds[n*9/10])
}

func TestUpdateCost(t *testing.T) {
	for _, dir := range []string{t.TempDir(), "/work/main/.xp"} {
		os.MkdirAll(dir, 0o755)
		defer os.RemoveAll("/work/main/.xp")
		db, err := bolt.Open(filepath.Join(dir, "x.db"), 0o600, &bolt.Options{InitialMmapSize: 1 << 30, FreelistType: bolt.FreelistMapType})
		if err != nil {
			t.Fatal(err)
		}
		db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err })
		var ds []time.Duration
		val := make([]byte, 300)
		for i := 0; i < 400; i++ {
			st := time.Now()
			db.Update(func(tx *bolt.Tx) error {
				for j := 0; j < 16; j++ {
					tx.Bucket([]byte("b")).Put([]byte(fmt.Sprintf("/k/%06d/%02d", i, j)), val)
				}
				return nil
			})
			ds = append(ds, time.Since(st))
		}
		t.Logf("%s update(16 puts): %s", dir, pct(ds))
		db.Close()
		// raw fdatasync: overwrite vs append
		f, _ := os.OpenFile(filepath.Join(dir, "raw"), os.O_CREATE|os.O_RDWR, 0o600)
		b := make([]byte, 4096)
		ds = nil
		for i := 0; i < 400; i++ {
			st := time.Now()
			f.WriteAt(b, int64(i%4)*4096)
			syscall.Fdatasync(int(f.Fd()))
			ds = append(ds, time.Since(st))
		}
		t.Logf("%s overwrite fdatasync: %s", dir, pct(ds))
		ds = nil
		for i := 0; i < 400; i++ {
			st := time.Now()
			f.WriteAt(b, int64(i+10)*4096)
			syscall.Fdatasync(int(f.Fd()))
			ds = append(ds, time.Since(st))
		}
		t.Logf("%s append fdatasync: %s", dir, pct(ds))
		f.Close()
	}
}
