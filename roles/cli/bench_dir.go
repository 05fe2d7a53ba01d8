package cli

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// benchLock is the file in a bench's temp dir that the bench holds a
// lock on (flock) while it runs. The kernel drops the lock when the
// process ends, however it ends, so a dir whose lock another process
// can take belongs to a bench that is gone.
const benchLock = ".bench.lock"

// benchDir makes the temp dir a bench keeps a cluster's data in (named
// by pattern, as os.MkdirTemp), locked while the bench runs; release
// removes it. It first removes the dirs that benches killed before they
// could remove theirs (SIGKILL, or a bench ended by its closed output)
// left behind: a dir of a 1 GiB bench holds 3 GiB of chunks.
func benchDir(pattern string) (dir string, release func(), err error) {
	sweepBenchDirs()
	dir, err = os.MkdirTemp("", pattern)
	if err != nil {
		return "", nil, err
	}
	// The lock is taken before the file has its name: a sweep never
	// sees the dir's lock file unlocked while the bench lives.
	tmp := filepath.Join(dir, benchLock+".new")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			err = os.Rename(tmp, filepath.Join(dir, benchLock))
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, func() {
		os.RemoveAll(dir)
		f.Close()
	}, nil
}

// sweepBenchDirs removes the temp dirs of benches that are gone: those
// whose lock file this process can lock. A dir without one (another
// program's, or an older dfs's) is left alone.
func sweepBenchDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "dfs-bench-*"))
	for _, dir := range dirs {
		f, err := os.Open(filepath.Join(dir, benchLock))
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			os.RemoveAll(dir)
		}
		f.Close()
	}
}
