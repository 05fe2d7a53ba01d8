package e2e

// Process tests for what an operator meets at start-up: an empty or
// damaged metadata file stops the coordinator at once with one line that
// says what is wrong and what to do, and `dfs admin salvage` copies what
// is readable.

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"
	bolt "go.etcd.io/bbolt"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/boltstore"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
)

func TestProcessDamagedMetadata(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	bin := buildDFSBinary(t)
	coordinator := func(t *testing.T, dir string) procResult {
		t.Helper()
		// A coordinator that waited or retried would be killed by the
		// timeout, which fails the test.
		return runDFSProc(t, bin, "", 30*time.Second, "coordinator", "--listen", "127.0.0.1:0", "--data-dir", dir)
	}
	lastLine := func(s string) string {
		lines := strings.Split(strings.TrimSpace(s), "\n")
		return lines[len(lines)-1]
	}

	t.Run("EmptyMetadataFile", func(t *testing.T) {
		is := is.New(t)
		dir := t.TempDir()
		name := filepath.Join(dir, "metadata.db")
		is.NoErr(os.WriteFile(name, nil, 0o600))
		res := coordinator(t, dir)
		last := lastLine(res.stderr)
		t.Log(last)
		is.True(res.code != 0)                             // the coordinator refuses to start
		is.True(strings.HasPrefix(last, "dfs: "))          // with one error line
		is.True(strings.Contains(last, name))              // naming the file
		is.True(strings.Contains(last, "empty (0 bytes)")) // saying what is wrong
		is.True(strings.Contains(last, "--restore"))       // and what to do
		fi, err := os.Stat(name)
		is.NoErr(err)
		is.Equal(fi.Size(), int64(0)) // the file is left as it was
	})

	t.Run("DamagedRecord", func(t *testing.T) {
		is := is.New(t)
		dir := t.TempDir()
		name := filepath.Join(dir, "metadata.db")
		s, err := boltstore.Open(name, boltstore.DefaultOptions())
		is.NoErr(err)
		cluster := uuid.NewString()
		var recs []meta.Record
		for _, p := range []string{"/a", "/b", "/c"} {
			recs = append(recs, meta.Record{File: metatest.NewFile(p, 2, 1)})
		}
		is.NoErr(s.Init(context.Background(), cluster, recs))
		is.NoErr(s.Close())
		db, err := bolt.Open(name, 0o600, nil)
		is.NoErr(err)
		is.NoErr(db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("files")).Put([]byte("/b"), []byte("\xff\xffdamaged"))
		}))
		is.NoErr(db.Close())

		res := coordinator(t, dir)
		last := lastLine(res.stderr)
		t.Log(last)
		is.True(res.code != 0)                                             // the coordinator stops at once
		is.True(strings.HasPrefix(last, "dfs: "))                          // with one error line
		is.True(strings.Contains(last, `bucket "files", the record "/b"`)) // naming the damaged record
		is.True(strings.Contains(last, "dfs admin salvage --from "+name))  // and the way out

		to := filepath.Join(dir, "metadata.db.salvaged")
		res = runDFSProc(t, bin, "", procCLITimeout, "admin", "salvage", "--from", name, "--to", to)
		t.Log(res.stdout, res.stderr)
		is.Equal(res.code, 1)                                            // records were lost
		is.True(strings.Contains(res.stdout, `lost files record "/b"`))  // one line per lost record
		is.True(strings.Contains(res.stdout, "files: 2 copied, 1 lost")) // a summary per bucket
		is.True(strings.Contains(lastLine(res.stderr), "1 records or runs of records were lost"))

		s, err = boltstore.Open(to, boltstore.DefaultOptions())
		is.NoErr(err) // the salvaged store opens
		defer s.Close()
		is.Equal(s.ClusterID(), cluster) // as the same cluster
		for _, p := range []string{"/a", "/c"} {
			_, err := s.Get(context.Background(), rpc.Path(p))
			is.NoErr(err) // with every readable record
		}
		_, err = s.Get(context.Background(), "/b")
		is.True(err != nil) // and without the damaged one
	})
}

// notifySocket is a unixgram socket standing in for systemd's
// $NOTIFY_SOCKET; messages carries every datagram received.
type notifySocket struct {
	path     string
	messages chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &notifySocket{path: path, messages: make(chan string, 16)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(s.messages)
				return
			}
			s.messages <- string(buf[:n])
		}
	}()
	return s
}

// expect waits for a datagram holding want.
func (s *notifySocket) expect(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case m, ok := <-s.messages:
			if !ok {
				t.Fatalf("notify socket closed before %q", want)
			}
			if strings.Contains(m, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no %q on the notify socket after a minute", want)
		}
	}
}

// Started with $NOTIFY_SOCKET (by a Type=notify unit), the coordinator and
// the datanode tell systemd READY=1 once they serve, and STOPPING=1 when
// a SIGTERM begins their graceful stop.
func TestProcessSystemdNotify(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	bin := buildDFSBinary(t)
	start := func(t *testing.T, sock *notifySocket, args ...string) *exec.Cmd {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(procChildEnv(), "NOTIFY_SOCKET="+sock.path)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	stop := func(t *testing.T, cmd *exec.Cmd, sock *notifySocket) {
		t.Helper()
		is := is.New(t)
		is.NoErr(cmd.Process.Signal(syscall.SIGTERM))
		sock.expect(t, "STOPPING=1")
		is.NoErr(cmd.Wait()) // a clean stop
	}

	coordSock := newNotifySocket(t)
	coord := rolestest.FreeAddr(t)
	c := start(t, coordSock, "coordinator", "--listen", coord, "--data-dir", t.TempDir())
	coordSock.expect(t, "READY=1")

	nodeSock := newNotifySocket(t)
	n := start(t, nodeSock, "datanode", "--listen", rolestest.FreeAddr(t), "--data-dir", t.TempDir(), "--coordinator", coord)
	nodeSock.expect(t, "READY=1")

	stop(t, n, nodeSock)
	stop(t, c, coordSock)
}
