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
// coordinator, datanode or S3 gateway process running behind it; the
// data it leaves in its temp dir is removed by the next bench.
func TestProcessBenchKilledStopsItsCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	bin := buildDFSBinary(t)
	for _, tc := range []struct {
		name  string
		args  []string
		kids  int    // processes the bench has started by then
		phase string // what the bench says it is doing by then
	}{
		{"Cluster", []string{"--files", "1000000"}, 2, "putting 1000000 small files..."},
		{"Gateway", []string{"--files", "2000", "--s3"}, 3, "small objects through S3..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			killedBench(t, bin, tmp, tc.args, tc.kids, tc.phase)
			left, _ := filepath.Glob(filepath.Join(tmp, "dfs-bench-*"))
			if len(left) != 1 {
				t.Fatalf("the killed bench left %v in its temp dir, want its cluster's dir", left)
			}
			next := exec.Command(bin, "--insecure", "bench", "--dev", "--nodes", "1", "--size", "0B", "--files", "0",
				"--range-reads", "0", "--recursive-files", "0", "--meta-ops", "0")
			next.Env = append(os.Environ(), "TMPDIR="+tmp)
			if out, err := next.CombinedOutput(); err != nil {
				t.Fatalf("the next bench: %v\n%s", err, out)
			}
			if left, _ = filepath.Glob(filepath.Join(tmp, "dfs-bench-*")); len(left) != 0 {
				t.Fatalf("after the next bench, %v is still in the temp dir", left)
			}
		})
	}
}

// killedBench starts `dfs bench --dev` with one datanode, args and tmp
// as its TMPDIR, waits for its kids children and phase on its stderr,
// kills it with SIGKILL and waits for the children to exit.
func killedBench(t *testing.T, bin, tmp string, args []string, kids int, phase string) {
	cmd := exec.Command(bin, append([]string{"--insecure", "bench", "--dev", "--nodes", "1", "--size", "0B",
		"--range-reads", "0", "--recursive-files", "0"}, args...)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
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
	var started []int
	t.Cleanup(func() {
		cmd.Process.Kill()
		for _, k := range started {
			syscall.Kill(k, syscall.SIGKILL)
		}
	})
	pollFor(t, 90*time.Second, 100*time.Millisecond, "the bench at "+phase, func() (bool, string) {
		started = childrenOf(cmd.Process.Pid)
		return len(started) == kids && strings.Contains(stderr(), phase), stderr()
	})
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Wait()
	pollFor(t, 30*time.Second, 100*time.Millisecond, "the processes the bench started to exit", func() (bool, string) {
		var alive []string
		for _, k := range started {
			if running(k) {
				alive = append(alive, strconv.Itoa(k))
			}
		}
		return len(alive) == 0, "still running: " + strings.Join(alive, ", ")
	})
}
