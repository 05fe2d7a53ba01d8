package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/internal/grpctest"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// listCoordinator answers ListFiles from a fixed listing, pages of the
// requested size (the page token is the index of the next entry), and
// calls before with each page's number and request before answering it;
// an error from before is the answer.
type listCoordinator struct {
	dfspb.UnimplementedCoordinatorServer
	entries []*dfspb.ListEntry
	before  func(page int, req *dfspb.ListFilesRequest) error

	mu    sync.Mutex
	pages int
}

func (c *listCoordinator) ListFiles(_ context.Context, req *dfspb.ListFilesRequest) (*dfspb.ListFilesResponse, error) {
	c.mu.Lock()
	page := c.pages
	c.pages++
	c.mu.Unlock()
	if err := c.before(page, req); err != nil {
		return nil, rpc.ToStatus(err)
	}
	from := 0
	if req.PageToken != "" {
		from, _ = strconv.Atoi(req.PageToken)
	}
	to := min(from+int(req.PageSize), len(c.entries))
	resp := &dfspb.ListFilesResponse{Entries: c.entries[from:to]}
	if to < len(c.entries) {
		resp.NextPageToken = strconv.Itoa(to)
	}
	return resp, nil
}

// listClient serves c on 127.0.0.1 and returns a client of it that lists
// in pages of pageSize.
func listClient(t *testing.T, c *listCoordinator, pageSize int) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.Coordinators = []string{grpctest.Serve(t, func(srv *grpc.Server) { dfspb.RegisterCoordinatorServer(srv, c) })}
	cfg.ListPageSize = pageSize
	log := zerolog.New(zerolog.NewTestWriter(t))
	cfg.Logger = &log
	cl, err := client.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// recorder is an io.Writer whose contents can be read while it is being
// written.
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

// printAtOnce is how ls printed before it streamed: the whole listing,
// through a tabwriter, or as one JSON array. It is the reference the
// streaming printer is held to.
func printAtOnce(w io.Writer, entries []client.DirEntry, long, asJSON bool) error {
	if asJSON {
		out := make([]listJSON, 0, len(entries))
		for _, e := range entries {
			out = append(out, listJSON{Path: e.Path, Dir: e.IsDir, Size: e.Size, Chunks: e.Chunks, Replication: e.Replication, Modified: e.Modified,
				Owner: e.Owner, Group: e.Group, Mode: octalMode(e.Owner, e.Mode)})
		}
		return writeJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, e := range entries {
		name := e.Path
		if e.IsDir {
			name += "/"
		}
		owner, group := e.Owner, e.Group
		if owner == "" {
			owner, group = "-", "-"
		}
		mode := modeString(e.Mode, e.IsDir)
		switch {
		case !long:
			fmt.Fprintln(tw, name)
		case e.IsDir:
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t%s\n", mode, owner, group, name)
		default:
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d chunks\tx%d\t%s\t%s\n", mode, owner, group, e.Size, e.Chunks, e.Replication, e.Modified.Format(time.RFC3339), name)
		}
	}
	return tw.Flush()
}

// toEntries converts a listing the way the client does.
func toEntries(les []*dfspb.ListEntry) []client.DirEntry {
	var out []client.DirEntry
	for _, le := range les {
		e := client.DirEntry{Path: le.Path, IsDir: le.IsDir, Owner: le.Owner, Group: le.Group, Mode: fs.FileMode(le.Mode) & fs.ModePerm}
		if le.IsDir {
			e.Mode |= fs.ModeDir
		}
		if !le.IsDir {
			e.Size, e.Chunks, e.Replication, e.Modified = le.Size, le.Chunks, le.Replication, time.UnixMilli(le.ModifiedUnixMs).UTC()
		}
		out = append(out, e)
	}
	return out
}

var lsModes = []struct {
	name                    string
	recursive, long, asJSON bool
}{
	{"plain", false, false, false},
	{"recursive", true, false, false},
	{"long", false, true, false},
	{"json", false, false, true},
}

// TestLsStreams: ls prints each page as it arrives. Whenever a page is
// asked for, the output already holds every page before it, exactly as
// the whole listing would print them; the last page is held back until
// the test has seen the first entries printed. At the end the output is
// what printing the whole listing at once gives.
func TestLsStreams(t *testing.T) {
	const files, size = 10, 3 // 10 files and a directory: pages of 3, 3, 3, 2
	var entries []*dfspb.ListEntry
	for i := range files {
		// Equal widths on every page, so that -l too prints each page
		// as the whole listing does.
		entries = append(entries, &dfspb.ListEntry{Path: fmt.Sprintf("/s/f%02d", i), Size: 1000 + int64(i), Chunks: 1, Replication: 3, ModifiedUnixMs: 1_700_000_000_000 + int64(i)})
	}
	entries = append(entries, &dfspb.ListEntry{Path: "/s/sub", IsDir: true})
	all := toEntries(entries)
	lastPage := (len(entries) - 1) / size

	for _, m := range lsModes {
		t.Run(m.name, func(t *testing.T) {
			is := is.New(t)
			var out recorder
			// want is what the entries before n print, and an unfinished
			// JSON array has no closing bracket yet.
			want := func(n int) string {
				var b bytes.Buffer
				_ = printAtOnce(&b, all[:n], m.long, m.asJSON) // cannot fail on a buffer
				s := b.String()
				if m.asJSON && n < len(all) {
					s = strings.TrimSuffix(s, "\n]\n")
				}
				if n == 0 {
					s = ""
				}
				return s
			}
			reached, release := make(chan string), make(chan struct{})
			fc := &listCoordinator{entries: entries}
			fc.before = func(page int, req *dfspb.ListFilesRequest) error {
				if req.Recursive != m.recursive || req.PageSize != size {
					return rpc.Errorf(rpc.Invalid, "recursive %v, page size %d", req.Recursive, req.PageSize)
				}
				if got, w := out.String(), want(page*size); got != w {
					return rpc.Errorf(rpc.Internal, "page %d asked for with output\n%s\nwant\n%s", page, got, w)
				}
				if page == lastPage {
					select {
					case reached <- out.String():
						<-release
					case <-t.Context().Done():
					}
				}
				return nil
			}
			cl := listClient(t, fc, size)
			done := make(chan error, 1)
			go func() { done <- runLs(t.Context(), cl, &out, "/s", m.recursive, m.long, m.asJSON) }()

			var before string
			select {
			case before = <-reached:
			case err := <-done:
				t.Fatalf("ls ended before its last page: %v", err)
			}
			is.True(strings.Contains(before, "/s/f00"))  // the first entries are out
			is.True(!strings.Contains(before, "/s/sub")) // before the last page is answered
			close(release)
			is.NoErr(<-done)                       // ls lists
			is.Equal(out.String(), want(len(all))) // what the whole listing prints
			if m.asJSON {
				var got []map[string]any
				is.NoErr(json.Unmarshal([]byte(out.String()), &got)) // one valid JSON array
				is.Equal(len(got), len(all))                         // of every entry
			}
		})
	}
}

// TestLsEmptyAndFailing: an empty listing prints nothing (an empty
// array with --json); one that fails after a page keeps what was
// printed, leaves the JSON array open and fails with the cause.
func TestLsEmptyAndFailing(t *testing.T) {
	for _, m := range lsModes {
		t.Run(m.name, func(t *testing.T) {
			is := is.New(t)
			empty := &listCoordinator{before: func(int, *dfspb.ListFilesRequest) error { return nil }}
			var out bytes.Buffer
			is.NoErr(runLs(t.Context(), listClient(t, empty, 2), &out, "/", m.recursive, m.long, m.asJSON)) // an empty listing
			if m.asJSON {
				is.Equal(out.String(), "[]\n") // an empty array
			} else {
				is.Equal(out.String(), "") // nothing
			}

			failing := &listCoordinator{entries: fileEntries("/x/a", "/x/b", "/x/c")}
			failing.before = func(page int, _ *dfspb.ListFilesRequest) error {
				if page == 1 {
					return rpc.Errorf(rpc.Unavailable, "coordinator went away")
				}
				return nil
			}
			out.Reset()
			err := runLs(t.Context(), listClient(t, failing, 2), &out, "/x", m.recursive, m.long, m.asJSON)
			is.True(err != nil)                                             // ls fails
			is.True(strings.Contains(err.Error(), "coordinator went away")) // with the cause
			is.True(strings.HasPrefix(err.Error(), "ls /x (request "))      // naming what it listed, and the request
			is.True(strings.Contains(out.String(), "/x/b"))                 // the first page is out
			is.True(!strings.Contains(out.String(), "/x/c"))                // not the second
			if m.asJSON {
				is.True(!json.Valid(out.Bytes())) // a part is never a valid whole
			}
		})
	}
}

// fileEntries makes a listing of files at paths.
func fileEntries(paths ...string) []*dfspb.ListEntry {
	var out []*dfspb.ListEntry
	for _, p := range paths {
		out = append(out, &dfspb.ListEntry{Path: p, Size: 1, Chunks: 1, Replication: 3})
	}
	return out
}

// TestListPrinterAsTheWholeListing holds the page-by-page printer to the
// whole-listing printer over random listings cut into random pages:
// byte for byte for plain, -r and --json output, and for -l when no
// later page has a wider cell than the first; otherwise -l differs only
// in the width of the padding, every column still at least two spaces
// apart and aligned within each page.
func TestListPrinterAsTheWholeListing(t *testing.T) {
	rnd := rand.New(rand.NewPCG(12, 12))
	names := []string{"a", "b<&>", "ü", "日本", "x y", `q"uote`, "long-name-" + strings.Repeat("z", 40)}
	spaces := regexp.MustCompile(` {2,}`)
	for round := range 200 {
		n := rnd.IntN(30)
		var es []client.DirEntry
		for i := range n {
			p := fmt.Sprintf("/r/%03d-%s", i, names[rnd.IntN(len(names))])
			if rnd.IntN(5) == 0 {
				es = append(es, client.DirEntry{Path: p, IsDir: true})
				continue
			}
			es = append(es, client.DirEntry{Path: p, Size: rnd.Int64N(1 << uint(rnd.IntN(40))), Chunks: uint32(rnd.IntN(3000)),
				Replication: uint32(1 + rnd.IntN(16)), Modified: time.UnixMilli(rnd.Int64N(4_000_000_000_000)).UTC()})
		}
		// Cut into pages of random sizes.
		var pages [][]client.DirEntry
		for rest := es; len(rest) > 0; {
			k := 1 + rnd.IntN(len(rest))
			pages = append(pages, rest[:k])
			rest = rest[k:]
		}
		for _, m := range lsModes {
			is := is.New(t)
			var want, got bytes.Buffer
			is.NoErr(printAtOnce(&want, es, m.long, m.asJSON)) // the reference prints
			p := &listPrinter{w: &got, long: m.long, asJSON: m.asJSON}
			for _, pg := range pages {
				is.NoErr(p.page(pg)) // a page prints
			}
			is.NoErr(p.end()) // the end prints
			if !m.long || len(pages) <= 1 || !widerLater(t, pages) {
				if got.String() != want.String() {
					t.Fatalf("round %d, %s, %d pages: printed\n%s\nwant\n%s", round, m.name, len(pages), got.String(), want.String())
				}
				continue
			}
			is.Equal(spaces.ReplaceAllString(got.String(), "  "), spaces.ReplaceAllString(want.String(), "  ")) // the same cells, in the same order
			line := 0
			for _, pg := range pages {
				var ref bytes.Buffer
				is.NoErr(printAtOnce(&ref, pg, true, false)) // the page alone
				gotLines := strings.SplitAfter(got.String(), "\n")[line : line+len(pg)]
				refLines := strings.SplitAfter(ref.String(), "\n")
				for i := range pg {
					// Aligned within the page: the name starts at one
					// column on every line of the page, at or right of
					// where the page alone puts it.
					nameAt := strings.LastIndex(gotLines[i], "  ") + 2
					is.Equal(nameAt, strings.LastIndex(gotLines[0], "  ")+2)  // the names of a page in one column
					is.True(nameAt >= strings.LastIndex(refLines[i], "  ")+2) // no narrower than the page alone
				}
				line += len(pg)
			}
		}
	}
}

// widerLater reports whether a page after the first has a wider -l cell
// than any page before it.
func widerLater(t *testing.T, pages [][]client.DirEntry) bool {
	t.Helper()
	widths := func(pg []client.DirEntry) [4]int {
		var w [4]int
		for _, e := range pg {
			if e.IsDir {
				w = [4]int{max(w[0], 1), max(w[1], 1), max(w[2], 1), max(w[3], 1)}
				continue
			}
			cells := [4]string{strconv.FormatInt(e.Size, 10), fmt.Sprintf("%d chunks", e.Chunks), fmt.Sprintf("x%d", e.Replication), e.Modified.Format(time.RFC3339)}
			for i, c := range cells {
				w[i] = max(w[i], len(c))
			}
		}
		return w
	}
	seen := widths(pages[0])
	wider := false
	for _, pg := range pages[1:] {
		w := widths(pg)
		for i := range w {
			if w[i] > seen[i] {
				wider = true
				seen[i] = w[i]
			}
		}
	}
	return wider
}

// TestLsPagesOfTheCoordinator: against a real coordinator, a listing read
// in pages of 1, 2 or 3 entries prints what one page of the whole listing
// prints, one level and recursive: the coordinator's pages pass the
// client's checks wherever they cut between files and the directories
// that sort among them.
func TestLsPagesOfTheCoordinator(t *testing.T) {
	is := is.New(t)
	c := startInprocCluster(t)
	ctx := t.Context()
	put := rolestest.Client(t, c)
	// /p/a-b sorts before the directory /p/a/ and /p/a0 after it.
	for _, p := range []string{"/p/a-b", "/p/a/x", "/p/a/y/z", "/p/a0", "/p/b.txt", "/p/b/c/d", "/p/b/e", "/p/c"} {
		_, err := put.Put(ctx, p, bytes.NewReader([]byte(p)), int64(len(p)), nil)
		is.NoErr(err) // a file
	}
	for _, m := range lsModes {
		var want bytes.Buffer
		is.NoErr(runLs(ctx, rolestest.Client(t, c), &want, "/p", m.recursive, m.long, m.asJSON)) // one page
		is.True(strings.Contains(want.String(), "/p/b/c/d") == m.recursive)                      // deeper files only with -r
		for _, size := range []int{1, 2, 3} {
			cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.ListPageSize = size })
			var got bytes.Buffer
			is.NoErr(runLs(ctx, cl, &got, "/p", m.recursive, m.long, m.asJSON)) // pages of size
			is.Equal(got.String(), want.String())                               // print as one
		}
	}
}
