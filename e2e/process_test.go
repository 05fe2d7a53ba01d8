package e2e

// Process tests, the third testing layer of DESIGN.md: build the dfs
// binary, run a coordinator and datanodes as real processes on 127.0.0.1
// with their own data dirs, drive them with the CLI the way a user does,
// kill -9 them and restart them, and read every file back byte for byte.
//
// The binary is built without -race. Measured on the 2-core dev machine,
// the race-enabled servers make a 3-replica put about six times slower
// (~5 MB/s instead of ~30 MB/s with 1 MiB chunks): this test took 55-75 s
// with -race on a quiet machine and 105-140 s on a busy one, against 22-31
// s without; and the slow-down pushes the servers towards their own
// timeouts (heartbeats, confirm), which makes a noisy machine flaky. The
// same server code runs under -race in the in-process cluster tests; these
// tests are about what only real processes show: SIGKILL, restarts on a
// data dir, exit codes. Set DFS_TEST_PROCESS_RACE=1 to build with -race
// anyway; a race report in any process's output then fails the test.
//
// Every wait polls with a deadline; nothing asserts how long anything took.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/matryer/is"
)

const (
	// procHeartbeat is the datanodes' heartbeat interval.
	procHeartbeat = 200 * time.Millisecond
	// procCLITimeout bounds one CLI command on small data; a CLI that hangs
	// fails the test instead of hanging it.
	procCLITimeout = time.Minute
	// procTransferTimeout bounds a put or get of a large file.
	procTransferTimeout = 3 * time.Minute
	// procWaitTimeout bounds polling for a cluster state.
	procWaitTimeout = time.Minute
	// procStopTimeout bounds a graceful stop of the servers at cleanup.
	procStopTimeout = 20 * time.Second
	// raceReport is what the race detector prints.
	raceReport = "WARNING: DATA RACE"
)

func TestProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	bin := buildDFSBinary(t)
	t.Run("KillDatanodeDuringPut", func(t *testing.T) { testKillDatanodeDuringPut(t, bin) })
	t.Run("RestartDatanode", func(t *testing.T) { testRestartDatanode(t, bin) })
	t.Run("KillDatanodeDuringSmallPuts", func(t *testing.T) { testKillDatanodeDuringSmallPuts(t, bin) })
	t.Run("ExitCodes", func(t *testing.T) { testExitCodes(t, bin) })
}

// testKillDatanodeDuringPut kills -9 one of four datanodes in the middle
// of a put (and likely of a second one): the puts must succeed, every file
// must read back identical, and no chunk of the interrupted upload may
// count the dead node as a replica.
func testKillDatanodeDuringPut(t *testing.T, bin string) {
	is := is.New(t)
	c := startProcCluster(t, bin, procClusterConfig{nodes: 4, suspectAfter: 3 * time.Second, deadAfter: 6 * time.Second})

	// Files committed before anything fails: empty, one byte, exactly one
	// chunk, one chunk and a byte, several chunks.
	files := map[string][sha256.Size]byte{}
	replicas := 0
	for _, n := range []int{0, 1, 1 << 20, 1<<20 + 1, 3<<20 + 4321} {
		remote := fmt.Sprintf("/small/%d", n)
		files[remote] = c.put(remote, procTestData(n, remote), "--chunk-size", "1MiB")
		for _, ch := range c.stat(remote).Chunks {
			replicas += len(ch.Replicas)
		}
	}
	// Wait for the heartbeats to report those chunks, so that new chunks
	// on a node below show the large puts moving.
	var before map[string]int64
	pollUntil(t, "heartbeats to report the small files' chunks", func() (bool, string) {
		nodes, err := c.nodes()
		if err != nil {
			return false, err.Error()
		}
		before = map[string]int64{}
		var sum int64
		for _, n := range nodes {
			before[n.NodeID] = n.Chunks
			sum += n.Chunks
		}
		return sum >= int64(replicas), fmt.Sprintf("%d chunk replicas reported, want %d", sum, replicas)
	})

	// /big (64 MiB in 1 MiB chunks) comes through stdin, so the test
	// decides when the put ends: it feeds the first part, kills a node
	// once chunks are landing, then feeds the rest. The put is in flight
	// at the kill for sure, whatever the machine's speed.
	big := procTestData(64<<20, "/big")
	files["/big"] = sha256.Sum256(big)
	bigPut := c.startDFS(procTransferTimeout, true, "put", "--chunk-size", "1MiB", "-", "/big")
	released := make(chan struct{})
	release := sync.OnceFunc(func() { close(released) })
	t.Cleanup(release)
	fed := make(chan error, 1)
	go func() {
		const first = 24 << 20
		_, err := bigPut.stdin.Write(big[:first])
		if err == nil {
			<-released
			_, err = bigPut.stdin.Write(big[first:])
		}
		fed <- errors.Join(err, bigPut.stdin.Close())
	}()
	// /mid (8 MiB, size known) is planned ahead by the coordinator; it
	// runs beside /big and is likely, not certainly, in flight at the kill.
	mid := procTestData(8<<20, "/mid")
	files["/mid"] = sha256.Sum256(mid)
	midPut := c.startDFS(procTransferTimeout, false, "put", "--chunk-size", "1MiB", c.writeLocal("mid", mid), "/mid")

	var victimID string
	pollUntil(t, "chunks of the large puts to land on a datanode", func() (bool, string) {
		nodes, err := c.nodes()
		if err != nil {
			return false, err.Error()
		}
		var most int64
		for _, n := range nodes {
			if d := n.Chunks - before[n.NodeID]; d > most {
				most, victimID = d, n.NodeID
			}
		}
		return most >= 2, fmt.Sprintf("at most %d new chunks on a node", most)
	})
	victim := c.nodeByID(victimID)
	c.kill(victim.proc)
	t.Logf("killed datanode %s (%s) with %s still being fed", victimID, victim.addr, "/big")
	release()

	// Both puts succeed: the chunk in flight at the kill is placed again,
	// and chunks the victim had already acknowledged still have two live
	// copies (restoring the third is re-replication's job).
	for remote, put := range map[string]*procRun{"/big": bigPut, "/mid": midPut} {
		res := put.wait(t)
		is.Equal(res.code, 0) // put with a datanode killed mid-way succeeds
		if res.code != 0 {
			t.Logf("put %s: %s", remote, res.stderr)
		}
	}
	is.NoErr(<-fed) // the whole of /big was fed to the put

	// Every file reads back byte for byte.
	for remote, sum := range files {
		c.checkFile(remote, sum)
	}
	// Every chunk lists its replicas on distinct nodes: three for the files
	// stored before the kill, and for the files being written at least two
	// on live nodes.
	for remote := range files {
		if strings.HasPrefix(remote, "/small/") {
			continue
		}
		st := c.stat(remote)
		if remote != "/big" && remote != "/mid" {
			checkProcReplicas(t, st, 3)
			continue
		}
		for _, ch := range st.Chunks {
			ids := procReplicaIDs(ch)
			live := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == victimID })
			if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != len(ids) || len(live) < 2 {
				t.Errorf("%s chunk %d: replicas %v (victim %s), want at least 2 live on distinct nodes", remote, ch.Index, ids, victimID)
			}
		}
	}
}

// testRestartDatanode kills -9 a datanode, restarts it on the same data
// dir and address, and checks it is the same node again and serves its
// chunks: with two other nodes killed, some chunks live only on it.
func testRestartDatanode(t *testing.T, bin string) {
	is := is.New(t)
	// A node is dead after 4s: long enough that a live node starved of
	// CPU on a busy machine is not taken for dead, short for the test.
	c := startProcCluster(t, bin, procClusterConfig{nodes: 4, suspectAfter: 2 * time.Second, deadAfter: 4 * time.Second})

	files := map[string][sha256.Size]byte{}
	held := map[string]int64{} // chunks per node ID, from stat
	var stats []procStat
	for i := range 3 {
		remote := fmt.Sprintf("/restart/%d", i)
		files[remote] = c.put(remote, procTestData(2<<20+17*i, remote), "--chunk-size", "256KiB")
		st := c.stat(remote)
		checkProcReplicas(t, st, 3)
		stats = append(stats, st)
		for _, ch := range st.Chunks {
			for _, r := range ch.Replicas {
				held[r.NodeID]++
			}
		}
	}
	victimID := ""
	for id, n := range held {
		if victimID == "" || n > held[victimID] {
			victimID = id
		}
	}
	victim := c.nodeByID(victimID)

	c.kill(victim.proc)
	c.waitState(victimID, "dead")
	for remote, sum := range files {
		c.checkFile(remote, sum) // readable from the other replicas
	}

	c.startNode(victim)
	pollUntil(t, "the restarted datanode to be healthy under its old ID", func() (bool, string) {
		nodes, err := c.nodes()
		if err != nil {
			return false, err.Error()
		}
		for _, n := range nodes {
			if n.NodeID == victimID {
				ok := len(nodes) == 4 && n.State == "healthy" && n.Addr == victim.addr && n.Chunks == held[victimID]
				return ok, fmt.Sprintf("%d nodes; %s at %s is %s with %d chunks, want 4 nodes and it healthy at %s with %d",
					len(nodes), n.NodeID, n.Addr, n.State, n.Chunks, victim.addr, held[victimID])
			}
		}
		return false, fmt.Sprintf("node %s not listed among %d nodes", victimID, len(nodes))
	})

	// Keep one other node (one that lacks a chunk the victim holds) and
	// kill the two others: every chunk keeps a live replica, and some are
	// only on the restarted node.
	keep := ""
	for _, st := range stats {
		for _, ch := range st.Chunks {
			ids := procReplicaIDs(ch)
			if !slices.Contains(ids, victimID) {
				continue
			}
			for _, n := range c.dns {
				if id := c.idOf(n); !slices.Contains(ids, id) {
					keep = id
				}
			}
		}
	}
	is.True(keep != "") // some chunk of the victim lacks another node
	for _, n := range c.dns {
		if id := c.idOf(n); id != victimID && id != keep {
			c.kill(n.proc)
		}
	}
	for remote, sum := range files {
		c.checkFile(remote, sum) // served by the restarted node where it holds the only live replica
	}
}

// testKillDatanodeDuringSmallPuts kills -9 a datanode while several
// clients put small files (packed chunks, group-committed), restarts it,
// and reads back, served by that node alone, every acknowledged file it
// holds a copy of: an acknowledged packed chunk survives the crash.
func testKillDatanodeDuringSmallPuts(t *testing.T, bin string) {
	is := is.New(t)
	// The victim comes back before it counts as dead: its copies are not
	// made again elsewhere meanwhile, so they still count when it returns.
	c := startProcCluster(t, bin, procClusterConfig{nodes: 4, suspectAfter: 2 * time.Second, deadAfter: 2 * time.Minute})
	victim := c.dns[0]
	victimID := c.idOf(victim)

	var mu sync.Mutex
	acked := map[string][sha256.Size]byte{}
	killed := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := range 40 {
				select {
				case <-killed:
					if i%10 == 0 {
						return // a few puts after the kill, then stop
					}
				default:
				}
				remote := fmt.Sprintf("/packed/%d-%d", w, i)
				data := procTestData(1+(w*40+i)*997%(32<<10), remote)
				local := c.writeLocal(strings.ReplaceAll(remote[1:], "/", "_"), data)
				if res := c.startDFS(procTransferTimeout, false, "put", local, remote).wait(t); res.code == 0 {
					mu.Lock()
					acked[remote] = sha256.Sum256(data)
					mu.Unlock()
				}
			}
		})
	}
	pollUntil(t, "small puts to be acknowledged", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 30, fmt.Sprintf("%d acknowledged", len(acked))
	})
	c.kill(victim.proc)
	close(killed)
	wg.Wait()
	t.Logf("killed datanode %s during small puts; %d puts acknowledged", victimID, len(acked))

	c.startNode(victim)
	pollUntil(t, "the restarted datanode to be healthy", func() (bool, string) {
		nodes, err := c.nodes()
		if err != nil {
			return false, err.Error()
		}
		for _, n := range nodes {
			if n.NodeID == victimID {
				return n.State == "healthy", n.State
			}
		}
		return false, "not listed"
	})
	var onVictim []string
	for remote := range acked {
		for _, ch := range c.stat(remote).Chunks {
			if slices.Contains(procReplicaIDs(ch), victimID) {
				onVictim = append(onVictim, remote)
				break
			}
		}
	}
	t.Logf("%d acknowledged files have a copy on the restarted datanode", len(onVictim))
	is.True(len(onVictim) > 10) // the victim held copies of acknowledged files
	for _, n := range c.dns[1:] {
		c.kill(n.proc)
	}
	for _, remote := range onVictim {
		c.checkFile(remote, acked[remote]) // served by the restarted node alone, byte for byte
	}
}

// testExitCodes checks that failing CLI commands exit non-zero with exactly
// one line on stderr, and return (within a generous bound) when the
// coordinator is unreachable.
func testExitCodes(t *testing.T, bin string) {
	c := startProcCluster(t, bin, procClusterConfig{nodes: 0, suspectAfter: time.Second, deadAfter: 2 * time.Second})
	local := c.writeLocal("hello", []byte("hello\n"))
	missing := filepath.Join(c.dir, "no-such-file")
	refused := rolestest.FreeAddr(t) // nothing listens there
	silent := rolestest.SilentListener(t)

	for _, tc := range []struct {
		name  string
		coord string
		args  []string
	}{
		{"put missing local file", c.coord, []string{"put", missing, "/x"}},
		{"put relative remote path", c.coord, []string{"put", local, "relative/x"}},
		{"put remote path with dot-dot", c.coord, []string{"put", local, "/a/../x"}},
		{"put remote path with empty segment", c.coord, []string{"put", local, "/a//x"}},
		{"put chunk size above 64MiB", c.coord, []string{"put", "--chunk-size", "65MiB", local, "/x"}},
		{"put without datanodes", c.coord, []string{"put", local, "/x"}},
		{"put unknown flag", c.coord, []string{"put", "--no-such-flag", local, "/x"}},
		{"put one argument", c.coord, []string{"put", local}},
		{"get missing remote path", c.coord, []string{"get", "/missing", "OUT"}},
		{"stat missing remote path", c.coord, []string{"stat", "/missing"}},
		{"rm missing remote path", c.coord, []string{"rm", "/missing"}},
		{"ls invalid path", c.coord, []string{"ls", "/a/../b"}},
		{"unknown command", c.coord, []string{"no-such-command"}},
		{"ls coordinator refused", refused, []string{"ls", "/"}},
		{"nodes coordinator refused", refused, []string{"nodes"}},
		{"put coordinator refused", refused, []string{"put", local, "/x"}},
		{"get coordinator refused", refused, []string{"get", "/x", "OUT"}},
		{"put coordinator silent", silent, []string{"put", "--rpc-timeout", "2s", local, "/x"}},
		{"get coordinator silent", silent, []string{"get", "--rpc-timeout", "2s", "/x", "OUT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			is := is.New(t)
			out := filepath.Join(t.TempDir(), "out")
			args := slices.Clone(tc.args)
			for i, a := range args {
				if a == "OUT" {
					args[i] = out
				}
			}
			// The timeout is a hang detector, not a timing assertion.
			res := runDFSProc(t, bin, tc.coord, 30*time.Second, args...)
			is.True(res.code != 0)                          // failing command exits non-zero
			is.Equal(strings.Count(res.stderr, "\n"), 1)    // exactly one line on stderr
			is.True(strings.HasSuffix(res.stderr, "\n"))    // ... ending in a newline
			is.True(strings.HasPrefix(res.stderr, "dfs: ")) // ... saying who speaks
			_, err := os.Stat(out)
			is.True(errors.Is(err, os.ErrNotExist)) // a failed get leaves no output file
		})
	}
}

// checkProcReplicas checks that every chunk of st has want replicas on
// distinct nodes.
func checkProcReplicas(t *testing.T, st procStat, want int) {
	t.Helper()
	for _, ch := range st.Chunks {
		ids := procReplicaIDs(ch)
		if distinct := slices.Compact(slices.Sorted(slices.Values(ids))); len(ids) != want || len(distinct) != want {
			t.Errorf("%s chunk %d: replicas %v, want %d on distinct nodes", st.Path, ch.Index, ids, want)
		}
	}
}

func procReplicaIDs(ch procStatChunk) []string {
	var ids []string
	for _, r := range ch.Replicas {
		ids = append(ids, r.NodeID)
	}
	return ids
}

// procTestData returns n pseudo-random bytes, the same for the same name.
func procTestData(n int, name string) []byte {
	b := make([]byte, n)
	rand.NewChaCha8(sha256.Sum256([]byte(name))).Read(b)
	return b
}

// buildDFSBinary builds the dfs binary into a temp dir once for all subtests.
func buildDFSBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("process tests need the go command to build dfs: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "dfs")
	args := []string{"build", "-o", bin}
	if os.Getenv("DFS_TEST_PROCESS_RACE") != "" {
		args = append(args, "-race")
	}
	args = append(args, root)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, goTool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("go %s: %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return bin
}

// procChildEnv is this process's environment without DFS_ settings, so a
// developer's shell cannot change what the tests run. A race-enabled
// binary sleeps a second at exit by default (atexit_sleep_ms), which would
// add a second to every CLI command; races are reported when they happen,
// so the tests turn it off.
func procChildEnv() []string {
	var env []string
	gorace := "atexit_sleep_ms=0"
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, "DFS_"):
		case strings.HasPrefix(kv, "GORACE="):
			gorace = strings.TrimPrefix(kv, "GORACE=") + " " + gorace
		default:
			env = append(env, kv)
		}
	}
	// The process tests run their clusters in plain text; the secure
	// ones give --insecure=false and their certificates.
	return append(env, "GORACE="+gorace, "DFS_INSECURE=true")
}

// pollUntil polls cond until it holds, failing the test after procWaitTimeout
// with the last detail cond gave.
func pollUntil(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	pollFor(t, procWaitTimeout, 100*time.Millisecond, what, cond)
}

// serverProc is one dfs server process; its output goes to a log file.
type serverProc struct {
	name   string
	log    string
	cmd    *exec.Cmd
	done   chan struct{} // closed once the process has exited
	err    error         // from Wait, valid once done is closed
	killed bool          // killed on purpose by the test
}

func (p *serverProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// exited waits up to d for p to exit.
func (p *serverProc) exited(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

type procClusterConfig struct {
	nodes        int
	suspectAfter time.Duration
	deadAfter    time.Duration
	// coordFlags are extra flags for the coordinator.
	coordFlags []string
	// nodeFlags are extra flags for every datanode.
	nodeFlags []string
	// standbys start that many more coordinators with the same flags (for
	// etcd: they stand by); clients and datanodes get every address.
	standbys int
	// tls runs the cluster with TLS: a CA and certificates made with
	// dfs admin ca init and dfs admin cert issue (procCluster.pki), a
	// revocation list every server reads, and the clients as the
	// superuser admin.
	tls bool
}

// procCluster is a coordinator and datanodes running as processes.
type procCluster struct {
	clusterCLI
	bin   string
	dir   string
	coord string
	// coordArgs start the coordinator; coordProc is the running one.
	coordArgs []string
	coordProc *serverProc
	// standbys are the other coordinators, by address.
	standbys  map[string]*serverProc
	dns       []*datanodeProc
	nodeFlags []string      // extra flags of every datanode
	procs     []*serverProc // every process started, restarts included
	ids       map[*datanodeProc]string
	// pki is the directory of the CA (pki/ca) and the certificates, with
	// procClusterConfig.tls; clientTLS are the global flags the clients
	// get (the superuser's certificate).
	pki       string
	clientTLS []string
	nodeTLS   []string
}

// datanodeProc is one datanode: its address and data dir stay across restarts.
type datanodeProc struct {
	name string
	addr string
	dir  string
	proc *serverProc
}

// startProcCluster starts a coordinator and cfg.nodes datanodes and waits
// until every datanode is healthy. Cleanup stops them all, gracefully when
// the test passed (and checks they stop cleanly), with SIGKILL when it
// failed; then it dumps their logs if the test failed.
func startProcCluster(t *testing.T, bin string, cfg procClusterConfig) *procCluster {
	t.Helper()
	c := &procCluster{bin: bin, dir: t.TempDir(), ids: map[*datanodeProc]string{}, nodeFlags: cfg.nodeFlags}
	c.clusterCLI = clusterCLI{t: t, cmdTimeout: procCLITimeout, waitFor: procWaitTimeout, waitEvery: 100 * time.Millisecond, alive: c.alive,
		client: func(timeout time.Duration, stdin []byte, args ...string) procResult {
			t.Helper()
			args = append(append([]string(nil), c.clientTLS...), args...)
			if stdin == nil {
				return runDFSProc(t, c.bin, c.coord, timeout, args...)
			}
			r := startDFSProc(t, c.bin, c.coord, timeout, true, args...)
			defer r.cancel()
			if _, err := r.stdin.Write(stdin); err != nil {
				t.Errorf("dfs %s: stdin: %v", strings.Join(args, " "), err)
			}
			r.stdin.Close()
			return r.wait(t)
		}}
	if err := os.Mkdir(filepath.Join(c.dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop) // runs before the temp dir is removed
	var coordTLS []string
	if cfg.tls {
		coordTLS = c.makePKI()
	}
	c.coord = rolestest.FreeAddr(t)
	c.coordArgs = append(append(coordTLS, "coordinator", "--listen", c.coord, "--data-dir", filepath.Join(c.dir, "coordinator"),
		"--suspect-after", cfg.suspectAfter.String(), "--dead-after", cfg.deadAfter.String()), cfg.coordFlags...)
	c.startCoordinator()
	c.standbys = map[string]*serverProc{}
	for i := range cfg.standbys {
		addr := rolestest.FreeAddr(t)
		c.standbys[addr] = c.start(fmt.Sprintf("coordinator-%d", i+1), append([]string{"coordinator", "--listen", addr,
			"--data-dir", filepath.Join(c.dir, fmt.Sprintf("coordinator-%d", i+1)),
			"--suspect-after", cfg.suspectAfter.String(), "--dead-after", cfg.deadAfter.String()}, cfg.coordFlags...)...)
		c.coord += "," + addr
	}
	for i := range cfg.nodes {
		n := &datanodeProc{name: fmt.Sprintf("datanode-%d", i), addr: rolestest.FreeAddr(t), dir: filepath.Join(c.dir, fmt.Sprintf("datanode-%d", i))}
		c.dns = append(c.dns, n)
		c.startNode(n)
	}
	pollUntil(t, fmt.Sprintf("%d healthy datanodes", cfg.nodes), func() (bool, string) {
		nodes, err := c.nodes()
		if err != nil {
			return false, err.Error()
		}
		healthy := 0
		for _, n := range nodes {
			if n.State == "healthy" {
				healthy++
			}
		}
		return healthy == cfg.nodes, fmt.Sprintf("%d healthy of %d listed", healthy, len(nodes))
	})
	return c
}

// makePKI makes the cluster's CA, a certificate for the coordinator, one
// for the datanodes, the superuser's, and an empty revocation list, with
// the binary's own commands; it sets the clients' and datanodes' TLS flags
// and returns the coordinator's.
func (c *procCluster) makePKI() []string {
	c.t.Helper()
	c.pki = filepath.Join(c.dir, "pki")
	ca := filepath.Join(c.pki, "ca")
	admin := func(args ...string) {
		if r := runDFSProc(c.t, c.bin, "", procCLITimeout, append([]string{"admin"}, args...)...); r.code != 0 {
			c.t.Fatalf("dfs admin %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	admin("ca", "init", "--dir", ca)
	admin("cert", "revoke", "--ca", ca, "--serial", "1") // makes the (otherwise empty) list
	for _, r := range []struct{ role, name string }{{"coordinator", "coordinator"}, {"datanode", "datanode"}, {"client", "admin"}} {
		admin("cert", "issue", "--ca", ca, "--role", r.role, "--name", r.name, "--out", c.pki)
	}
	c.clientTLS = c.tlsFlags("admin")
	c.nodeTLS = c.tlsFlags("datanode")
	return c.tlsFlags("coordinator")
}

// tlsFlags are the global flags that give a process the certificate
// called name, the CA and the revocation list.
func (c *procCluster) tlsFlags(name string) []string {
	return []string{"--insecure=false", "--tls-ca", filepath.Join(c.pki, "ca", "ca.crt"), "--tls-crl", filepath.Join(c.pki, "ca", "ca.crl"),
		"--tls-cert", filepath.Join(c.pki, name+".crt"), "--tls-key", filepath.Join(c.pki, name+".key")}
}

// start runs the dfs binary with args as a server process named name.
func (c *procCluster) start(name string, args ...string) *serverProc {
	c.t.Helper()
	p := &serverProc{name: name, done: make(chan struct{})}
	p.log = filepath.Join(c.dir, "logs", fmt.Sprintf("%02d-%s.log", len(c.procs), name))
	f, err := os.Create(p.log)
	if err != nil {
		c.t.Fatal(err)
	}
	p.cmd = exec.Command(c.bin, args...)
	p.cmd.Env = procChildEnv()
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		c.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	return p
}

// alive fails the test if a server process that was not killed has
// exited.
func (c *procCluster) alive() {
	c.t.Helper()
	for _, p := range c.procs {
		if !p.killed && !p.running() {
			c.t.Fatalf("%s exited unexpectedly (%v); its log:\n%s", p.name, p.err, tailFile(p.log, 8<<10))
		}
	}
}

// startCoordinator starts (or restarts) the coordinator on its address and
// data dir.
func (c *procCluster) startCoordinator() {
	c.t.Helper()
	c.coordProc = c.start("coordinator", c.coordArgs...)
}

// startNode starts (or restarts) datanode n on its address and data dir.
func (c *procCluster) startNode(n *datanodeProc) {
	c.t.Helper()
	n.proc = c.start(n.name, append(append(append([]string(nil), c.nodeTLS...), "datanode", "--listen", n.addr, "--coordinator", c.coord,
		"--data-dir", n.dir, "--heartbeat-interval", procHeartbeat.String()), c.nodeFlags...)...)
}

// kill sends SIGKILL to p and waits for it to be gone.
func (c *procCluster) kill(p *serverProc) {
	c.t.Helper()
	p.killed = true
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.t.Fatalf("kill %s: %v", p.name, err)
	}
	if !p.exited(10 * time.Second) {
		c.t.Fatalf("%s still running 10s after SIGKILL", p.name)
	}
}

func (c *procCluster) stop() {
	t := c.t
	var live []*serverProc
	for _, p := range c.procs {
		if !p.running() {
			continue
		}
		live = append(live, p)
		if t.Failed() {
			p.killed = true
			p.cmd.Process.Kill()
		} else {
			p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(procStopTimeout)
	for _, p := range live {
		if !p.exited(time.Until(deadline)) {
			t.Errorf("%s did not stop within %s of SIGTERM; killing it", p.name, procStopTimeout)
			p.killed = true
			p.cmd.Process.Kill()
			if !p.exited(10 * time.Second) {
				t.Errorf("%s still running 10s after SIGKILL", p.name)
			}
		}
	}
	for _, p := range c.procs {
		if !p.killed && p.err != nil {
			t.Errorf("%s: %v, want a clean exit (see its log)", p.name, p.err)
		}
		if b, err := os.ReadFile(p.log); err == nil && bytes.Contains(b, []byte(raceReport)) {
			t.Errorf("%s: data race (see its log)", p.name)
		}
	}
	if t.Failed() {
		for _, p := range c.procs {
			t.Logf("==== log of %s (%s) ====\n%s", p.name, p.cmd.String(), tailFile(p.log, 32<<10))
		}
	}
}

// tailFile returns the last n bytes of a file.
func tailFile(name string, n int64) string {
	f, err := os.Open(name)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(info.Size()-n, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, info.Size()-off))
	if err != nil {
		return err.Error()
	}
	if off > 0 {
		return fmt.Sprintf("[... %d bytes before]\n%s", off, b)
	}
	return string(b)
}

// writeLocal writes data to a local file in the cluster's dir.
func (c *procCluster) writeLocal(name string, data []byte) string {
	c.t.Helper()
	dir := filepath.Join(c.dir, "local")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// put stores data at remote with `dfs put` and returns its SHA-256.
func (c *procCluster) put(remote string, data []byte, flags ...string) [sha256.Size]byte {
	c.t.Helper()
	local := c.writeLocal(strings.ReplaceAll(strings.TrimPrefix(remote, "/"), "/", "_"), data)
	args := append(append([]string{"put"}, flags...), local, remote)
	if res := c.dfs(procTransferTimeout, args...); res.code != 0 {
		c.t.Fatalf("dfs %s: exit %d: %s", strings.Join(args, " "), res.code, res.stderr)
	}
	return sha256.Sum256(data)
}

// checkFile reads remote with `dfs get` and checks its SHA-256, and that
// `dfs stat` reports the same.
func (c *procCluster) checkFile(remote string, want [sha256.Size]byte) {
	c.t.Helper()
	out := filepath.Join(c.dir, "get-"+strings.ReplaceAll(strings.TrimPrefix(remote, "/"), "/", "_"))
	res := c.dfs(procTransferTimeout, "get", remote, out)
	if res.code != 0 {
		c.t.Errorf("dfs get %s: exit %d: %s", remote, res.code, res.stderr)
		return
	}
	defer os.Remove(out)
	f, err := os.Open(out)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		c.t.Fatal(err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		c.t.Errorf("dfs get %s: sha256 %x, stored %x", remote, got, want)
	}
	if st := c.stat(remote); st.SHA256 != hex.EncodeToString(want[:]) {
		c.t.Errorf("dfs stat %s: sha256 %s, stored %x", remote, st.SHA256, want)
	}
}

// nodeByID finds the datanode process with the given node ID.
func (c *procCluster) nodeByID(id string) *datanodeProc {
	c.t.Helper()
	nodes, err := c.nodes()
	if err != nil {
		c.t.Fatal(err)
	}
	for _, n := range nodes {
		for _, dn := range c.dns {
			if n.NodeID == id && n.Addr == dn.addr {
				c.ids[dn] = id
				return dn
			}
		}
	}
	c.t.Fatalf("no datanode process has node ID %s", id)
	return nil
}

// idOf returns datanode n's node ID as the coordinator lists it.
func (c *procCluster) idOf(n *datanodeProc) string {
	c.t.Helper()
	if id, ok := c.ids[n]; ok {
		return id
	}
	nodes, err := c.nodes()
	if err != nil {
		c.t.Fatal(err)
	}
	for _, ni := range nodes {
		if ni.Addr == n.addr {
			c.ids[n] = ni.NodeID
			return ni.NodeID
		}
	}
	c.t.Fatalf("%s at %s is not listed by dfs nodes", n.name, n.addr)
	return ""
}

// waitState waits until the coordinator lists node id in state.
func (c *procCluster) waitState(id, state string) {
	c.t.Helper()
	pollUntil(c.t, fmt.Sprintf("node %s to be %s", id, state), func() (bool, string) {
		nodes, err := c.nodes()
		if err != nil {
			return false, err.Error()
		}
		for _, n := range nodes {
			if n.NodeID == id {
				return n.State == state, "it is " + n.State
			}
		}
		return false, "it is not listed"
	})
}

type procResult struct {
	stdout, stderr string
	code           int
}

// procRun is a CLI command running in the background.
type procRun struct {
	args           []string
	stdin          io.WriteCloser // set when started with a stdin pipe
	stdout, stderr bytes.Buffer
	cmd            *exec.Cmd
	ctx            context.Context
	cancel         context.CancelFunc
	done           chan struct{}
	err            error
}

// startDFS starts the CLI against the cluster's coordinator in the
// background. The command is killed after timeout and at cleanup.
func (c *procCluster) startDFS(timeout time.Duration, withStdin bool, args ...string) *procRun {
	c.t.Helper()
	r := startDFSProc(c.t, c.bin, c.coord, timeout, withStdin, args...)
	c.t.Cleanup(func() {
		r.cancel()
		<-r.done // bounded: canceling kills it and WaitDelay bounds the pipes
	})
	return r
}

// startDFSProc starts the CLI with DFS_COORDINATOR set to coord; the caller
// must call r.cancel once done with it.
func startDFSProc(t *testing.T, bin, coord string, timeout time.Duration, withStdin bool, args ...string) *procRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	r := &procRun{args: args, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	r.cmd = exec.CommandContext(ctx, bin, args...)
	r.cmd.Env = append(procChildEnv(), "DFS_COORDINATOR="+coord)
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	r.cmd.WaitDelay = 10 * time.Second
	if withStdin {
		var err error
		if r.stdin, err = r.cmd.StdinPipe(); err != nil {
			cancel()
			t.Fatal(err)
		}
	}
	if err := r.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start dfs %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	return r
}

// wait waits for the command and returns its output and exit code. A
// command killed by its timeout fails the test.
func (r *procRun) wait(t *testing.T) procResult {
	t.Helper()
	<-r.done
	what := "dfs " + strings.Join(r.args, " ")
	if r.ctx.Err() != nil {
		t.Fatalf("%s did not finish in time (hung?); stderr: %s", what, r.stderr.String())
	}
	res := procResult{stdout: r.stdout.String(), stderr: r.stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(r.err, &ee):
		res.code = ee.ExitCode()
	case r.err != nil:
		t.Fatalf("%s: %v", what, r.err)
	}
	if strings.Contains(res.stderr, raceReport) {
		t.Errorf("%s: data race:\n%s", what, res.stderr)
	}
	return res
}

func runDFSProc(t *testing.T, bin, coord string, timeout time.Duration, args ...string) procResult {
	t.Helper()
	r := startDFSProc(t, bin, coord, timeout, false, args...)
	defer r.cancel()
	return r.wait(t)
}
