package e2e

// Process tests for durable coordinator metadata: kill -9 the coordinator
// in the middle of a stream of puts and deletes, restart it on its data
// dir, and check that every confirmed file reads back, that nothing half
// done became visible, and that every chunk nobody needs is collected.

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
	bolt "go.etcd.io/bbolt"
)

func TestProcessMetadata(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	bin := buildDFSBinary(t)
	t.Run("KillCoordinatorDuringPuts", func(t *testing.T) { testKillCoordinatorDuringPuts(t, bin) })
	t.Run("StartupRefusals", func(t *testing.T) { testStartupRefusals(t, bin) })
}

// putOutcome is what a put in the stream did.
type putOutcome struct {
	remote string
	sum    [sha256.Size]byte
	ok     bool // the CLI said it committed
}

func testKillCoordinatorDuringPuts(t *testing.T, bin string) {
	is := is.New(t)
	c := startProcCluster(t, bin, procClusterConfig{
		nodes: 3, suspectAfter: 5 * time.Second, deadAfter: 10 * time.Second,
		// Short sessions so an upload cut off by the kill is collected soon;
		// no GC delay so disk usage settles as soon as deletions run.
		coordFlags: []string{"--chunk-size", "64KiB", "--session-timeout", "3s", "--gc-delay", "0s", "--orphan-grace", "10s"},
	})

	// Files that exist before the stream, some deleted around the kill.
	before := map[string][sha256.Size]byte{}
	for i := range 6 {
		remote := fmt.Sprintf("/before/%d", i)
		before[remote] = c.put(remote, procTestData(100<<10+i*7000, remote))
	}

	// A stream of puts from one goroutine; the coordinator dies during it.
	var mu sync.Mutex
	var outcomes []putOutcome
	stop := make(chan struct{})
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			remote := fmt.Sprintf("/stream/%03d", i)
			data := procTestData(i*13001%(300<<10), remote)
			local := c.writeLocal(fmt.Sprintf("stream-%03d", i), data)
			res := c.dfs(procCLITimeout, "put", "--failover-timeout", "2s", local, remote)
			mu.Lock()
			outcomes = append(outcomes, putOutcome{remote: remote, sum: sha256.Sum256(data), ok: res.code == 0})
			mu.Unlock()
		}
	}()
	waitPuts := func(n int) {
		pollUntil(t, fmt.Sprintf("%d puts in the stream", n), func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return len(outcomes) >= n, fmt.Sprintf("%d puts", len(outcomes))
		})
	}
	waitPuts(5)
	// Delete two files, then kill the coordinator with no pause: their
	// deletions are recorded but most likely not yet carried out.
	for _, remote := range []string{"/before/0", "/before/1"} {
		if res := c.dfs(procCLITimeout, "rm", remote); res.code != 0 {
			t.Fatalf("rm %s: %s", remote, res.stderr)
		}
		delete(before, remote)
	}
	c.kill(c.coordProc)
	time.Sleep(500 * time.Millisecond) // puts fail while it is down
	c.startCoordinator()
	mu.Lock()
	atKill := len(outcomes)
	mu.Unlock()
	waitPuts(atKill + 8)
	close(stop)
	<-streamDone

	// Every confirmed file reads back byte for byte; an unconfirmed one is
	// either absent or whole.
	for remote, sum := range before {
		c.checkFile(remote, sum)
	}
	confirmed := 0
	for _, o := range outcomes {
		if o.ok {
			confirmed++
			c.checkFile(o.remote, o.sum)
			continue
		}
		if res := c.dfs(procCLITimeout, "stat", o.remote); res.code == 0 {
			c.checkFile(o.remote, o.sum) // it did commit; then it is whole
		}
	}
	is.True(confirmed >= 10) // puts succeeded before and after the restart
	for _, remote := range []string{"/before/0", "/before/1"} {
		res := c.dfs(procCLITimeout, "stat", remote)
		is.True(res.code != 0) // a delete confirmed before the kill stays deleted
	}

	// The restarted coordinator waited in safe mode until the datanodes
	// reported, then served.
	log, err := os.ReadFile(c.coordProc.log)
	is.NoErr(err)
	is.True(strings.Contains(string(log), "safe mode")) // safe mode is visible in the log

	// Chunks nobody needs (the deleted files', the cut-off upload's) are
	// collected: the datanodes end up holding exactly three copies of every
	// chunk of every file.
	want := int64(0)
	ls := c.dfs(procCLITimeout, "ls", "-r", "-l", "--json", "/")
	is.Equal(ls.code, 0)
	for _, line := range strings.Split(ls.stdout, "\n") {
		if strings.Contains(line, `"chunks":`) {
			var n int64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), `"chunks":`)), "%d", &n)
			want += 3 * n
		}
	}
	pollUntil(t, "datanodes to hold only the chunks of committed files", func() (bool, string) {
		nodes, err := c.nodes()
		if err != nil {
			return false, err.Error()
		}
		var have int64
		for _, n := range nodes {
			have += n.Chunks
		}
		return have == want, fmt.Sprintf("datanodes hold %d chunks, files need %d", have, want)
	})
}

// testStartupRefusals: a metadata file that is damaged or not ours, and a
// backup that is truncated or of another cluster, each stop the
// coordinator at start-up with one clear line, and leave the files as
// they were.
func testStartupRefusals(t *testing.T, bin string) {
	dir := t.TempDir()
	run := func(t *testing.T, args ...string) procResult {
		t.Helper()
		return runDFSProc(t, bin, "", procCLITimeout, append([]string{"coordinator", "--listen", "127.0.0.1:0"}, args...)...)
	}
	refused := func(t *testing.T, res procResult, want string) {
		t.Helper()
		is := is.New(t)
		is.True(res.code != 0) // the coordinator refuses to start
		lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
		last := lines[len(lines)-1]
		is.True(strings.HasPrefix(last, "dfs: ")) // with one error line
		is.True(strings.Contains(last, want))     // saying what is wrong
	}
	unchanged := func(t *testing.T, name string, before []byte) {
		t.Helper()
		after, err := os.ReadFile(name)
		if err != nil || string(after) != string(before) {
			t.Errorf("%s changed by a refused start", name)
		}
	}

	t.Run("CorruptBolt", func(t *testing.T) {
		d := filepath.Join(dir, "corrupt")
		os.MkdirAll(d, 0o755)
		garbage := []byte(strings.Repeat("not a database ", 2000))
		name := filepath.Join(d, "metadata.db")
		os.WriteFile(name, garbage, 0o644)
		refused(t, run(t, "--data-dir", d), "metadata.db")
		unchanged(t, name, garbage)
	})
	t.Run("ForeignBolt", func(t *testing.T) {
		d := filepath.Join(dir, "foreign")
		os.MkdirAll(d, 0o755)
		name := filepath.Join(d, "metadata.db")
		db, err := bolt.Open(name, 0o644, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.Update(func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucket([]byte("someone-else"))
			return b.Put([]byte("k"), []byte("v"))
		})
		db.Close()
		before, _ := os.ReadFile(name)
		refused(t, run(t, "--data-dir", d), "metadata.db")
		unchanged(t, name, before)
	})

	// A real backup of a small cluster.
	c := startProcCluster(t, bin, procClusterConfig{nodes: 3, suspectAfter: 5 * time.Second, deadAfter: 10 * time.Second})
	sum := c.put("/kept", procTestData(5000, "/kept"))
	backup := filepath.Join(dir, "backup")
	if res := c.dfs(procCLITimeout, "admin", "backup", backup); res.code != 0 {
		t.Fatalf("admin backup: %s", res.stderr)
	}
	raw, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("TruncatedBackup", func(t *testing.T) {
		cut := filepath.Join(dir, "cut")
		os.WriteFile(cut, raw[:len(raw)-10], 0o644)
		d := filepath.Join(dir, "restore-cut")
		refused(t, run(t, "--data-dir", d, "--restore", cut), "truncated")
		if _, err := os.Stat(filepath.Join(d, "metadata.db")); err == nil {
			db, _ := os.ReadFile(filepath.Join(d, "metadata.db"))
			if strings.Contains(string(db), "/kept") {
				t.Errorf("a refused restore wrote records into the store")
			}
		}
	})
	t.Run("OtherClusterBackup", func(t *testing.T) {
		// Another cluster's store: restoring this backup into it is refused.
		other := startProcCluster(t, bin, procClusterConfig{nodes: 1, suspectAfter: 5 * time.Second, deadAfter: 10 * time.Second})
		other.kill(other.coordProc)
		d := filepath.Join(other.dir, "coordinator")
		name := filepath.Join(d, "metadata.db")
		before, _ := os.ReadFile(name)
		refused(t, run(t, "--data-dir", d, "--restore", backup), "another cluster")
		unchanged(t, name, before)
	})
	t.Run("RestoreServesTheBackup", func(t *testing.T) {
		is := is.New(t)
		// Stop the original coordinator and start one restored from the
		// backup on its address: the datanodes come back to it and the file
		// reads back.
		c.kill(c.coordProc)
		d := filepath.Join(dir, "restored")
		c.coordArgs = []string{"coordinator", "--listen", c.coord, "--data-dir", d, "--restore", backup}
		c.startCoordinator()
		pollUntil(t, "the restored coordinator to see the datanodes", func() (bool, string) {
			nodes, err := c.nodes()
			if err != nil {
				return false, err.Error()
			}
			return len(nodes) == 3, fmt.Sprintf("%d nodes", len(nodes))
		})
		c.checkFile("/kept", sum)
		ls := c.dfs(procCLITimeout, "ls", "/")
		is.Equal(strings.TrimSpace(ls.stdout), "/kept") // exactly what the backup held
	})
}
