package cli

// Golden tests: what the commands print, compared with the files under the
// repository's testdata/cli/. After a deliberate change of output, refresh
// them with
//
//	go test ./roles/cli/ -run TestGolden -update
//
// and review the diff. Volatile fields (times, node IDs, ports, chunk IDs,
// disk sizes, heartbeat ages) are replaced by placeholders before the
// comparison, so the files are the same on every machine and every run.

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/rpc"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/cli/ with what the commands print")

// goldenDir holds the golden files, in the repository's top-level
// testdata/.
const goldenDir = "../../testdata/cli"

// normalizers replace what changes from run to run, in this order.
var normalizers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`), "<node-id>"},
	{regexp.MustCompile(`\b[0-9a-f]{8}@`), "<node>@"}, // a short node ID
	{regexp.MustCompile(`\b[0-9a-f]{32}_(\d+)\b`), "<chunk-id>_$1"},
	{regexp.MustCompile(`\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "<time>"},
	{regexp.MustCompile(`\b127\.0\.0\.1:\d+\b`), "127.0.0.1:<port>"},
	{regexp.MustCompile(`\b[\d.]+ ?[KMGTPE]?i?B / [\d.]+ ?[KMGTPE]?i?B\b`), "<used> / <capacity>"},
	{regexp.MustCompile(`"(capacity|used|free)": \d+`), `"$1": <bytes>`},
	{regexp.MustCompile(`\b[\d.]+(ns|µs|ms|s|m|h)[\dmsh.]* ago\b`), "<age> ago"},
	{regexp.MustCompile(regexp.QuoteMeta(runtime.Version())), "<go-version>"},
}

// normalize replaces the volatile fields of out; table output has its
// runs of spaces collapsed too, since a placeholder does not keep the
// width of what it replaced.
func normalize(out string, table bool) string {
	for _, n := range normalizers {
		out = n.re.ReplaceAllString(out, n.with)
	}
	if table {
		out = regexp.MustCompile(` {2,}`).ReplaceAllString(out, "  ")
	}
	return out
}

// checkGolden compares got with testdata/cli/name, or rewrites the file
// with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join(goldenDir, name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (create it with go test ./roles/cli/ -run TestGolden -update)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from what dfs prints (after a deliberate change: go test ./roles/cli/ -run TestGolden -update):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

// TestGoldenHelp pins `dfs --help` and the --help of every command.
func TestGoldenHelp(t *testing.T) {
	commands := [][]string{{}}
	for _, c := range App(Version{}, IO{}, nil).Commands {
		commands = append(commands, []string{c.Name})
		for _, s := range c.Subcommands {
			commands = append(commands, []string{c.Name, s.Name})
		}
	}
	for _, cmd := range commands {
		name := "dfs"
		if len(cmd) > 0 {
			name = strings.Join(cmd, "-")
		}
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			var out bytes.Buffer
			app := App(Version{Version: "dev", Commit: "none"}, IO{In: strings.NewReader(""), Out: &out, Err: &out}, nil)
			is.NoErr(app.Run(append(append([]string{"dfs"}, cmd...), "--help"))) // --help succeeds
			checkGolden(t, filepath.Join("help", name+".txt"), normalize(out.String(), false))
		})
	}
}

// TestGoldenOutput pins what ls -l, stat, stat --json, nodes, du and fsck
// print for a small cluster holding two files.
func TestGoldenOutput(t *testing.T) {
	c := startInprocCluster(t)
	cli := inprocCLI{t: t, addr: c.Addr()}
	// Two files with fixed bytes: a (100 KiB, two 64 KiB chunks) and
	// dir/b (one chunk).
	a := bytes.Repeat([]byte("golden-a\n"), 100<<10/9+1)[:100<<10]
	cli.ok(nil, "put", "--frame-size", "16KiB", writeLocal(t, "a", a), "/golden/a")
	cli.ok([]byte("golden b\n"), "put", "-", "/golden/dir/b")

	// Wait until every datanode has reported the three chunks and the
	// cluster is healthy, so that the counts printed are final.
	deadline := time.Now().Add(time.Minute)
	for {
		ns := decodeNodes[jsonNode](t, cli.ok(nil, "nodes", "--json"))
		reported := 0
		for _, n := range ns {
			if n.Chunks == 3 {
				reported++
			}
		}
		if reported == 3 && cli.run(nil, "fsck").err == nil && strings.Contains(cli.ok(nil, "nodes"), "chunks: 3, under-replicated: 0 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the datanodes did not report the files' chunks in time: %+v", ns)
		}
		time.Sleep(50 * time.Millisecond)
	}

	for _, tc := range []struct {
		name  string
		args  []string
		table bool
	}{
		{"ls-l.txt", []string{"ls", "-l", "/golden"}, true},
		{"ls-r.txt", []string{"ls", "-r", "/golden"}, false},
		{"ls-json.json", []string{"ls", "--json", "/golden"}, false},
		{"stat.txt", []string{"stat", "/golden/a"}, true},
		{"stat-json.json", []string{"stat", "--json", "/golden/a"}, false},
		{"nodes.txt", []string{"nodes"}, true},
		{"nodes-json.json", []string{"nodes", "--json"}, false},
		{"ls-lh.txt", []string{"ls", "-lh", "/golden"}, true},
		{"stat-dir.txt", []string{"stat", "/golden/dir"}, false},
		{"du.txt", []string{"du", "/golden"}, false},
		{"du-sh.txt", []string{"du", "-sh", "/golden"}, false},
		{"du-json.json", []string{"du", "--json", "/golden"}, false},
		{"fsck.txt", []string{"fsck"}, false},
		{"fsck-json.json", []string{"fsck", "--json"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := cli.ok(nil, tc.args[0], tc.args[1:]...)
			checkGolden(t, tc.name, normalize(out, tc.table))
		})
	}
}

// TestNormalize: the placeholders take the place of what varies and of
// nothing else.
func TestNormalize(t *testing.T) {
	is := is.New(t)
	id := "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	chunk := strings.Repeat("ab", 16) + "_12"
	sum := strings.Repeat("cd", 32) // a SHA-256 stays
	in := id + " 0f1e2d3c@127.0.0.1:45678 " + chunk + " " + sum + " 2026-12-05T15:37:45Z 2026-12-05T15:37:45.123Z " +
		rpc.FormatBytes(3<<10) + " / " + rpc.FormatBytes(98<<30) + " 3.2s ago 150ms ago"
	is.Equal(normalize(in, false), "<node-id> <node>@127.0.0.1:<port> <chunk-id>_12 "+sum+" <time> <time> <used> / <capacity> <age> ago <age> ago") // every volatile field
	is.Equal(normalize("a    b  c d", true), "a  b  c d")                                                                                           // tables: runs of spaces collapse
	is.Equal(normalize("a    b", false), "a    b")                                                                                                  // other output keeps its spaces
}
