package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childrenOf returns the processes pid started, from every thread's
// children list.
func childrenOf(pid int) []int {
	tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "children"))
	var kids []int
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(s); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

// running reports whether pid is a live process (not gone, not a zombie).
func running(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// TestProcessBenchKilledStopsItsCluster: a `dfs bench --dev` killed
// with SIGKILL, which cannot stop its cluster itself, leaves no
// coordinator or datanode process running behind it.
func TestProcessBenchKilledStopsItsCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	bin := buildDFSBinary(t)
	cmd := exec.Command(bin, "--insecure", "bench", "--dev", "--nodes", "1", "--size", "0B",
		"--files", "1000000", "--range-reads", "0", "--recursive-files", "0")
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	// A file, not a pipe: the cluster's processes share it, and one that
	// outlives the bench must not hold up the wait for the bench.
	errFile, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	cmd.Stderr = errFile
	stderr := func() string {
		b, _ := os.ReadFile(errFile.Name())
		return string(b)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var kids []int
	t.Cleanup(func() {
		cmd.Process.Kill()
		for _, k := range kids {
			syscall.Kill(k, syscall.SIGKILL)
		}
	})
	pollFor(t, 60*time.Second, 100*time.Millisecond, "the bench putting small files on its cluster", func() (bool, string) {
		kids = childrenOf(cmd.Process.Pid)
		return len(kids) == 2 && strings.Contains(stderr(), "small files..."), stderr()
	})
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Wait()
	pollFor(t, 30*time.Second, 100*time.Millisecond, "the coordinator and the datanode to exit", func() (bool, string) {
		var alive []string
		for _, k := range kids {
			if running(k) {
				alive = append(alive, strconv.Itoa(k))
			}
		}
		return len(alive) == 0, "still running: " + strings.Join(alive, ", ")
	})
}
