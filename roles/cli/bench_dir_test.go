package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/matryer/is"
)

// TestBenchDirSweep: a bench's temp dir is removed by the next bench once
// the bench that made it is gone (its lock file can be locked), never
// while it runs, and a dir without a lock file (not a bench's) is left
// alone; release removes the bench's own.
func TestBenchDirSweep(t *testing.T) {
	is := is.New(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	mk := func(name string, lock bool) string {
		dir := filepath.Join(tmp, name)
		is.NoErr(os.MkdirAll(filepath.Join(dir, "datanode-0"), 0o755))
		if lock {
			is.NoErr(os.WriteFile(filepath.Join(dir, benchLock), nil, 0o600)) // no process holds it: its bench is gone
		}
		return dir
	}
	gone := mk("dfs-bench-gone", true)
	other := mk("dfs-bench-other", false)
	live, releaseLive, err := benchDir("dfs-bench-*") // a bench running
	is.NoErr(err)

	mine, release, err := benchDir("dfs-bench-*")
	is.NoErr(err)
	exists := func(dir string) bool { _, err := os.Stat(dir); return err == nil }
	is.True(!exists(gone)) // a dead bench's dir is removed
	is.True(exists(other)) // a dir without a lock file is not ours to judge
	is.True(exists(live))  // a running bench's dir stays
	is.True(exists(mine))  // the new one is there
	is.True(mine != live)  // and its own

	release()
	is.True(!exists(mine)) // release removes it
	releaseLive()
	is.True(!exists(live))
}
