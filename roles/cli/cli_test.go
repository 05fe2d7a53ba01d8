package cli

// In-process CLI tests: every client command runs through App, as the
// binary would run it, against a cluster started with roles.StartCluster
// on 127.0.0.1. They pin the command-line contract: arguments, --json
// output, stdin/stdout, and one readable line for every error.
//
// They do not run in parallel: App sets zerolog's global time format.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// startInprocCluster starts a coordinator and three datanodes in this
// process with 64 KiB chunks; it stops when the test ends. Its logs carry
// no timestamps: App sets zerolog's global time format, which the
// timestamp hook reads.
func startInprocCluster(t *testing.T, tune ...func(*roles.ClusterConfig)) *roles.Cluster {
	t.Helper()
	cfg := rolestest.Config(t, 3)
	cfg.Log = rolestest.PlainLogger(t)
	cfg.Coordinator.GCDelay = coordinator.DefaultConfig().GCDelay
	cfg.Coordinator.SuspectAfter = coordinator.DefaultConfig().SuspectAfter
	cfg.Coordinator.DeadAfter = coordinator.DefaultConfig().DeadAfter
	for _, f := range tune {
		f(&cfg)
	}
	return rolestest.StartWith(t, cfg)
}

// cmdResult is what one command printed and returned.
type cmdResult struct {
	out    string
	errOut string
	err    error
}

// dfsRun runs `dfs args...` in process with stdin as its input.
func dfsRun(ctx context.Context, stdin []byte, args ...string) cmdResult {
	var out, errOut bytes.Buffer
	app := App(Version{}, IO{In: bytes.NewReader(stdin), Out: &out, Err: &errOut}, io.Discard)
	err := app.RunContext(ctx, append([]string{"dfs"}, args...))
	return cmdResult{out: out.String(), errOut: errOut.String(), err: err}
}

// inprocCLI runs client commands against one cluster.
type inprocCLI struct {
	t    *testing.T
	addr string
}

// run runs `dfs cmd --coordinator ADDR args...`.
func (c inprocCLI) run(stdin []byte, cmd string, args ...string) cmdResult {
	ctx, cancel := context.WithTimeout(c.t.Context(), 2*time.Minute)
	defer cancel()
	return dfsRun(ctx, stdin, append([]string{cmd, "--coordinator", c.addr}, args...)...)
}

// ok runs a command that must succeed and returns its output.
func (c inprocCLI) ok(stdin []byte, cmd string, args ...string) string {
	c.t.Helper()
	r := c.run(stdin, cmd, args...)
	if r.err != nil {
		c.t.Fatalf("dfs %s %s: %v", cmd, strings.Join(args, " "), r.err)
	}
	return r.out
}

func randomData(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func writeLocal(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// The JSON shapes of stat, ls and nodes, as scripts read them.
type (
	jsonStat struct {
		Path        string    `json:"path"`
		Size        int64     `json:"size"`
		SHA256      string    `json:"sha256"`
		ChunkSize   int64     `json:"chunk_size"`
		Replication int       `json:"replication"`
		Version     int       `json:"version"`
		Modified    time.Time `json:"modified"`
		Owner       string    `json:"owner"`
		Group       string    `json:"group"`
		Mode        string    `json:"mode"`
		Chunks      []struct {
			Index     int    `json:"index"`
			ID        string `json:"id"`
			Offset    int64  `json:"offset"`
			Size      int64  `json:"size"`
			Digest    string `json:"digest"`
			FrameSize int64  `json:"frame_size"`
			Replicas  []struct {
				NodeID string `json:"node_id"`
				Addr   string `json:"addr"`
				State  string `json:"state"`
			} `json:"replicas"`
		} `json:"chunks"`
	}
	jsonEntry struct {
		Path        string    `json:"path"`
		Dir         bool      `json:"dir"`
		Size        int64     `json:"size"`
		Chunks      int       `json:"chunks"`
		Replication int       `json:"replication"`
		Modified    time.Time `json:"modified"`
		Owner       string    `json:"owner"`
		Group       string    `json:"group"`
		Mode        string    `json:"mode"`
	}
	jsonNode struct {
		NodeID        string    `json:"node_id"`
		Addr          string    `json:"addr"`
		State         string    `json:"state"`
		Capacity      int64     `json:"capacity"`
		Used          int64     `json:"used"`
		Free          int64     `json:"free"`
		Chunks        int64     `json:"chunks"`
		LastHeartbeat time.Time `json:"last_heartbeat"`
		ConflictAddr  string    `json:"conflict_addr"`
	}
)

// jsonNodes is `nodes --json`: the coordinator's state, the cluster's
// health, and the nodes in the shape N a test reads.
type jsonNodes[N any] struct {
	Leader         string           `json:"leader"`
	SafeMode       bool             `json:"safe_mode"`
	SafeModeStatus string           `json:"safe_mode_status"`
	WritesRefused  string           `json:"writes_refused"`
	Nodes          []N              `json:"nodes"`
	Health         map[string]int64 `json:"health"`
}

// decodeNodes returns the nodes of `nodes --json`'s output s.
func decodeNodes[N any](t *testing.T, s string) []N {
	t.Helper()
	var j jsonNodes[N]
	decodeJSON(t, s, &j)
	return j.Nodes
}

func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
}

func TestCLI(t *testing.T) {
	c := startInprocCluster(t)
	cli := inprocCLI{t: t, addr: c.Addr()}

	t.Run("put and get files", func(t *testing.T) {
		cli := inprocCLI{t: t, addr: c.Addr()}
		for _, n := range []int{0, 1, 64 << 10, 64<<10 + 1, 300<<10 + 7} {
			is := is.New(t)
			data := randomData(n)
			local := writeLocal(t, "in", data)
			remote := "/cli/files/" + strings.ReplaceAll(rpc.FormatBytes(int64(n)), " ", "")
			is.Equal(cli.ok(nil, "put", "--frame-size", "16KiB", local, remote), "") // put prints nothing
			out := filepath.Join(t.TempDir(), "out")
			is.Equal(cli.ok(nil, "get", remote, out), "") // get prints nothing
			got, err := os.ReadFile(out)
			is.NoErr(err)                   // get wrote the file
			is.True(bytes.Equal(got, data)) // byte for byte

			// A directory as LOCAL receives the file under its base name.
			dir := t.TempDir()
			cli.ok(nil, "get", remote, dir)
			got, err = os.ReadFile(filepath.Join(dir, filepath.Base(remote)))
			is.NoErr(err)                   // get into a directory
			is.True(bytes.Equal(got, data)) // byte for byte
			entries, err := os.ReadDir(dir)
			is.NoErr(err)             // read the directory
			is.Equal(len(entries), 1) // and leaves no temp file behind
		}
	})

	t.Run("get does not clobber", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		data := randomData(10 << 10)
		cli.ok(nil, "put", writeLocal(t, "in", data), "/cli/clobber")
		dir := t.TempDir()
		out := filepath.Join(dir, "out")
		is.NoErr(os.WriteFile(out, []byte("mine"), 0o600))
		r := cli.run(nil, "get", "/cli/clobber", out)
		is.Equal(rpc.KindOf(r.err), rpc.Exists)                   // refused
		is.True(strings.Contains(r.err.Error(), "-f overwrites")) // saying how to overwrite
		got, err := os.ReadFile(out)
		is.NoErr(err)
		is.Equal(string(got), "mine") // the local file untouched
		cli.run(nil, "get", "/cli/clobber", dir)
		r = cli.run(nil, "get", "/cli/clobber", dir) // into a directory that has the name already
		is.Equal(rpc.KindOf(r.err), rpc.Exists)

		cli.ok(nil, "get", "-f", "/cli/clobber", out)
		got, err = os.ReadFile(out)
		is.NoErr(err)
		is.True(bytes.Equal(got, data)) // -f overwrites
		entries, err := os.ReadDir(dir)
		is.NoErr(err)
		is.Equal(len(entries), 2) // no temp file left behind

		fresh := filepath.Join(dir, "fresh")
		cli.ok(nil, "get", "/cli/clobber", fresh)
		info, err := os.Stat(fresh)
		is.NoErr(err)
		is.Equal(info.Mode().Perm(), 0o644&^umask()) // a new file's mode: 0644 less the umask
	})

	t.Run("get into a named pipe", func(t *testing.T) {
		// A device or a FIFO as LOCAL (/dev/null, /dev/stdout) receives the
		// bytes; it is never replaced by a file, with -f or without.
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		data := randomData(300 << 10)
		cli.ok(nil, "put", writeLocal(t, "in", data), "/cli/pipe")
		fifo := filepath.Join(t.TempDir(), "fifo")
		is.NoErr(syscall.Mkfifo(fifo, 0o600))
		for _, args := range [][]string{{"/cli/pipe", fifo}, {"-f", "/cli/pipe", fifo}} {
			r, err := os.OpenFile(fifo, os.O_RDWR, 0) // never waits for a writer
			is.NoErr(err)
			is.NoErr(r.SetReadDeadline(time.Now().Add(30 * time.Second)))
			got := make(chan []byte, 1)
			go func() {
				b := make([]byte, len(data))
				n, _ := io.ReadFull(r, b)
				got <- b[:n]
			}()
			cli.ok(nil, "get", args...)
			is.True(bytes.Equal(<-got, data)) // the bytes went into the pipe
			r.Close()
			info, err := os.Lstat(fifo)
			is.NoErr(err)
			is.True(info.Mode()&os.ModeNamedPipe != 0) // still the pipe
		}
	})

	t.Run("stdin and stdout", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		for _, n := range []int{0, 1, 200<<10 + 3} {
			data := randomData(n)
			cli.ok(data, "put", "-", "/cli/stdin")
			out := cli.ok(nil, "get", "/cli/stdin", "-")
			is.True(out == string(data)) // get - writes the file to stdout
		}
	})

	t.Run("stat", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		data := randomData(3*64<<10 + 11)
		cli.ok(nil, "put", writeLocal(t, "s", data), "/cli/stat/file")

		var st jsonStat
		decodeJSON(t, cli.ok(nil, "stat", "--json", "/cli/stat/file"), &st)
		is.Equal(st.Path, "/cli/stat/file")   // path
		is.Equal(st.Size, int64(len(data)))   // size
		is.Equal(st.SHA256, sha256Hex(data))  // sha256 is what sha256sum prints
		is.Equal(st.ChunkSize, int64(64<<10)) // chunk size
		is.Equal(st.Replication, 3)           // replication
		is.Equal(st.Version, 1)               // first version
		is.True(!st.Modified.IsZero())        // modification time
		is.Equal(len(st.Chunks), 4)           // four chunks
		var off int64
		for i, ch := range st.Chunks {
			is.Equal(ch.Index, i)         // chunk index
			is.Equal(ch.Offset, off)      // chunk offset
			is.Equal(len(ch.Digest), 64)  // hex SHA-256 chunk digest
			is.Equal(len(ch.Replicas), 3) // three replicas
			nodes := map[string]bool{}
			for _, r := range ch.Replicas {
				nodes[r.NodeID] = true
				is.Equal(r.State, "healthy") // replica state
				is.True(r.Addr != "")        // replica address
			}
			is.Equal(len(nodes), 3) // on three distinct nodes
			off += ch.Size
		}
		is.Equal(off, int64(len(data))) // chunks cover the file

		text := cli.ok(nil, "stat", "/cli/stat/file")
		is.True(strings.Contains(text, sha256Hex(data))) // plain stat shows the sha256
		is.True(strings.Contains(text, st.Chunks[0].ID)) // and the chunks
	})

	t.Run("ls", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		for _, p := range []string{"/cli/ls/a", "/cli/ls/sub/b", "/cli/ls/sub/deeper/c"} {
			cli.ok([]byte(p), "put", "-", p)
		}
		is.Equal(cli.ok(nil, "ls", "/cli/ls"), "/cli/ls/a\n/cli/ls/sub/\n")                                                                 // one level, dirs end in /
		is.Equal(cli.ok(nil, "ls", "-r", "/cli/ls"), "/cli/ls/a\n/cli/ls/sub/\n/cli/ls/sub/b\n/cli/ls/sub/deeper/\n/cli/ls/sub/deeper/c\n") // recursive: every file and directory
		is.True(strings.Contains(cli.ok(nil, "ls"), "/cli/\n"))                                                                             // no PATH lists the root

		long := strings.Split(strings.TrimSpace(cli.ok(nil, "ls", "-l", "/cli/ls")), "\n")
		is.Equal(len(long), 2)                              // ls -l: one line per entry
		is.True(strings.HasPrefix(long[0], "-"))            // a file
		is.True(strings.Contains(long[0], " 9 "))           // with its size
		is.True(strings.Contains(long[0], "x3"))            // and replication
		is.True(strings.HasSuffix(long[0], "/cli/ls/a"))    // and path
		is.True(strings.HasPrefix(long[1], "d"))            // a directory
		is.True(strings.HasSuffix(long[1], "/cli/ls/sub/")) // with its path

		var es []jsonEntry
		decodeJSON(t, cli.ok(nil, "ls", "--json", "/cli/ls"), &es)
		is.Equal(len(es), 2)              // ls --json
		is.True(!es[0].Modified.IsZero()) // files have a modification time
		is.True(!es[1].Modified.IsZero()) // and directories the time they were made
		es[0].Modified, es[1].Modified = time.Time{}, time.Time{}
		is.Equal(es, []jsonEntry{{Path: "/cli/ls/a", Size: 9, Chunks: 1, Replication: 3, Owner: "admin", Group: "admin", Mode: "0644"},
			{Path: "/cli/ls/sub", Dir: true, Owner: "admin", Group: "admin", Mode: "0755"}}) // entries, the superuser's by default
		es = nil
		decodeJSON(t, cli.ok(nil, "ls", "-r", "--json", "/cli/ls/sub"), &es)
		is.Equal(len(es), 3) // ls -r --json: b, deeper/ and deeper/c

		var deeper []jsonEntry
		decodeJSON(t, cli.ok(nil, "ls", "--json", "/cli/ls/sub/deeper"), &deeper)
		is.Equal(len(deeper), 1) // a directory with one file
	})

	t.Run("nodes", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		ns := decodeNodes[jsonNode](t, cli.ok(nil, "nodes", "--json"))
		is.Equal(len(ns), 3) // three datanodes
		ids := map[string]bool{}
		for _, n := range ns {
			ids[n.NodeID] = true
			is.Equal(n.State, "healthy")       // healthy
			is.True(n.Capacity > 0)            // with a capacity
			is.True(n.Addr != "")              // and an address
			is.True(!n.LastHeartbeat.IsZero()) // and a heartbeat
		}
		is.Equal(len(ids), 3) // distinct IDs
		text := cli.ok(nil, "nodes")
		table, summary, _ := strings.Cut(strings.TrimSpace(text), "\n\n")
		lines := strings.Split(table, "\n")
		is.Equal(len(lines), 4)                                // a header and one line per node
		is.True(strings.HasPrefix(lines[0], "ID"))             // header
		is.True(strings.Contains(summary, "under-replicated")) // then the cluster's health
		for _, n := range ns {
			is.True(strings.Contains(text, n.NodeID)) // every node listed
		}
	})

	t.Run("nodes shows a refused second address", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		ns := decodeNodes[jsonNode](t, cli.ok(nil, "nodes", "--json"))
		cc, err := rpc.Dial(c.Addr())
		is.NoErr(err)
		defer cc.Close()
		const forged = "127.0.0.1:1"
		_, err = dfspb.NewCoordinatorClient(cc).RegisterDataNode(t.Context(), &dfspb.RegisterDataNodeRequest{NodeId: ns[0].NodeID, Addr: forged})
		is.True(err != nil) // a live node's ID from another address is refused
		ns = decodeNodes[jsonNode](t, cli.ok(nil, "nodes", "--json"))
		is.Equal(ns[0].ConflictAddr, forged)                                                         // --json names the refused address
		is.True(strings.Contains(cli.ok(nil, "nodes"), "ID also claimed from "+forged+" (refused)")) // so does the table
	})

	t.Run("rm", func(t *testing.T) {
		is := is.New(t)
		cli := inprocCLI{t: t, addr: c.Addr()}
		cli.ok([]byte("bye"), "put", "-", "/cli/rm/file")
		is.Equal(cli.ok(nil, "rm", "/cli/rm/file"), "") // rm prints nothing
		r := cli.run(nil, "stat", "/cli/rm/file")
		is.True(errors.Is(r.err, rpc.NotFound))    // gone
		is.Equal(cli.ok(nil, "ls", "/cli/rm"), "") // its directory stays, empty (directories are explicit)
	})

	t.Run("errors", func(t *testing.T) {
		dir := t.TempDir()
		missing := filepath.Join(dir, "no-such-file")
		local := writeLocal(t, "x", []byte("x"))
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := lis.Addr().String()
		lis.Close()
		cli.ok([]byte("x"), "put", "-", "/cli/err/file")
		for _, tc := range []struct {
			name string
			args []string
			kind rpc.Kind // 0: any error
		}{
			{"missing local file", []string{"put", "--coordinator", c.Addr(), missing, "/cli/err/x"}, rpc.NotFound},
			{"local directory", []string{"put", "--coordinator", c.Addr(), dir, "/cli/err/x"}, rpc.Invalid},
			{"missing remote get", []string{"get", "--coordinator", c.Addr(), "/cli/err/none", filepath.Join(dir, "out")}, rpc.NotFound},
			{"missing remote stat", []string{"stat", "--coordinator", c.Addr(), "/cli/err/none"}, rpc.NotFound},
			{"missing remote rm", []string{"rm", "--coordinator", c.Addr(), "/cli/err/none"}, rpc.NotFound},
			{"missing directory ls", []string{"ls", "--coordinator", c.Addr(), "/cli/err/none"}, rpc.NotFound},
			{"relative path", []string{"put", "--coordinator", c.Addr(), local, "cli/x"}, rpc.Invalid},
			{"dot-dot path", []string{"put", "--coordinator", c.Addr(), local, "/cli/../x"}, rpc.Invalid},
			{"empty segment", []string{"put", "--coordinator", c.Addr(), local, "/cli//x"}, rpc.Invalid},
			{"trailing slash", []string{"get", "--coordinator", c.Addr(), "/cli/err/file/", filepath.Join(dir, "out")}, rpc.Invalid},
			{"NUL in path", []string{"stat", "--coordinator", c.Addr(), "/cli/a\x00b"}, rpc.Invalid},
			{"newline in stat path", []string{"stat", "--coordinator", c.Addr(), "/cli/a\nb"}, rpc.Invalid},
			{"newline in put path", []string{"put", "--coordinator", c.Addr(), local, "/cli/a\nb"}, rpc.Invalid},
			{"newline in get path", []string{"get", "--coordinator", c.Addr(), "/cli/a\nb", "-"}, rpc.Invalid},
			{"newline in ls path", []string{"ls", "--coordinator", c.Addr(), "/cli/a\nb"}, rpc.Invalid},
			{"newline in rm path", []string{"rm", "--coordinator", c.Addr(), "/cli/a\nb"}, rpc.Invalid},
			{"chunk size above 64 MiB", []string{"put", "--coordinator", c.Addr(), "--chunk-size", "65MiB", local, "/cli/err/x"}, rpc.Invalid},
			{"chunk size not a size", []string{"put", "--coordinator", c.Addr(), "--chunk-size", "lots", local, "/cli/err/x"}, 0},
			{"unknown flag", []string{"ls", "--coordinator", c.Addr(), "--bogus"}, 0},
			{"unknown command", []string{"bogus"}, 0},
			{"missing arguments", []string{"put", "--coordinator", c.Addr(), local}, rpc.Invalid},
			{"too many arguments", []string{"rm", "--coordinator", c.Addr(), "/a", "/b"}, rpc.Invalid},
			{"unwritable local target", []string{"get", "--coordinator", c.Addr(), "/cli/err/file", filepath.Join(dir, "no-such-dir", "out")}, 0},
			{"coordinator unreachable", []string{"nodes", "--coordinator", dead}, rpc.Unavailable},
			{"no coordinator", []string{"ls", "--coordinator", ""}, rpc.Invalid},
			{"bad log level", []string{"--log-level", "loud", "nodes", "--coordinator", c.Addr()}, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				is := is.New(t)
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				r := dfsRun(ctx, nil, tc.args...)
				is.True(r.err != nil) // the command fails
				msg := r.err.Error()
				t.Logf("dfs %s: %s", strings.Join(tc.args, " "), msg)
				is.True(strings.TrimSpace(msg) != "")      // with a message
				is.True(!strings.ContainsAny(msg, "\r\n")) // on one line
				if tc.kind != 0 {
					is.True(errors.Is(r.err, tc.kind)) // of the right kind
				}
			})
		}
		is := is.New(t)
		entries, err := os.ReadDir(dir)
		is.NoErr(err)             // read the local dir
		is.Equal(len(entries), 0) // failed gets leave no file behind
	})
}

// TestCLIEnvCoordinator pins that DFS_COORDINATOR stands in for
// --coordinator.
func TestCLIEnvCoordinator(t *testing.T) {
	is := is.New(t)
	c := startInprocCluster(t)
	t.Setenv("DFS_COORDINATOR", c.Addr())
	r := dfsRun(t.Context(), []byte("env"), "put", "-", "/env/file")
	is.NoErr(r.err) // put with the coordinator from the environment
	r = dfsRun(t.Context(), nil, "get", "/env/file", "-")
	is.NoErr(r.err)        // get
	is.Equal(r.out, "env") // the same bytes
}
