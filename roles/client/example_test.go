package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
)

// The examples run against one in-process cluster of three datanodes,
// started by the first example that asks for it and stopped by TestMain.
var example struct {
	once    sync.Once
	cluster *roles.Cluster
	dir     string
	err     error
}

// coordinatorAddr returns the address of the examples' cluster.
func coordinatorAddr() string {
	example.once.Do(func() {
		example.dir, example.err = os.MkdirTemp("", "dfs-example-")
		if example.err == nil {
			example.cluster, example.err = roles.StartCluster(context.Background(), roles.DefaultClusterConfig(example.dir))
		}
	})
	if example.err != nil {
		log.Fatalf("start the examples' cluster: %v", example.err)
	}
	return example.cluster.Addr()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if example.cluster != nil {
		example.cluster.Close()
	}
	if example.dir != "" {
		os.RemoveAll(example.dir)
	}
	os.Exit(code)
}

// A program's whole use of the SDK: a client, a file written, read back.
func Example() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Coordinators: []string{coordinatorAddr()}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	w, err := c.Create(ctx, "/example/hello.txt", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(w, "hello, dfs")
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	var out bytes.Buffer
	if _, err := c.Get(ctx, "/example/hello.txt", &out, nil); err != nil {
		log.Fatal(err)
	}
	fmt.Print(out.String())
	// Output: hello, dfs
}

// newExampleClient returns a client of the examples' cluster.
func newExampleClient() *client.Client {
	c, err := client.New(context.Background(), client.Config{Coordinators: []string{coordinatorAddr()}})
	if err != nil {
		log.Fatal(err)
	}
	return c
}

func ExampleNew() {
	ctx := context.Background()
	// Zero fields take their defaults (DefaultConfig); a logger is
	// optional.
	c, err := client.New(ctx, client.Config{Coordinators: []string{coordinatorAddr()}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("connected lazily")
	// Output: connected lazily
}

func ExampleClient_Create() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()

	// The file is streamed chunk by chunk as it is written, and appears
	// at its path, whole, on Close.
	w, err := c.Create(ctx, "/example/create.log", &client.CreateOptions{Replication: 2})
	if err != nil {
		log.Fatal(err)
	}
	for i := range 3 {
		if _, err := fmt.Fprintf(w, "line %d\n", i); err != nil {
			log.Fatal(err) // the upload was aborted
		}
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}
	fi := w.Info()
	fmt.Println(fi.Path, fi.Size, fi.Replication)
	// Output: /example/create.log 21 2
}

func ExampleClient_Put() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()

	data := "some bytes"
	fi, err := c.Put(ctx, "/example/put.txt", strings.NewReader(data), int64(len(data)), nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(fi.Size, fi.ChunkCount)
	// Output: 10 1
}

func ExampleClient_Get() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()
	if _, err := c.Put(ctx, "/example/get.txt", strings.NewReader("read me\n"), -1, nil); err != nil {
		log.Fatal(err)
	}

	// Get writes the file in order, verified, to any io.Writer.
	if _, err := c.Get(ctx, "/example/get.txt", os.Stdout, nil); err != nil {
		log.Fatal(err)
	}
	// Output: read me
}

func ExampleClient_Open() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()
	if _, err := c.Put(ctx, "/example/open.txt", strings.NewReader("0123456789abcdef"), 16, nil); err != nil {
		log.Fatal(err)
	}

	r, err := c.Open(ctx, "/example/open.txt")
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	// Only the frames that hold the range are read, verified.
	buf := make([]byte, 6)
	if _, err := r.ReadAt(buf, 10); err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(buf), r.Size())
	// Output: abcdef 16
}

func ExampleClient_Stat() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()
	if _, err := c.Put(ctx, "/example/stat.txt", strings.NewReader("12345"), 5, nil); err != nil {
		log.Fatal(err)
	}

	fi, err := c.Stat(ctx, "/example/stat.txt")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(fi.Size, len(fi.Chunks), len(fi.Chunks[0].Replicas))

	_, err = c.Stat(ctx, "/example/missing")
	fmt.Println(errors.Is(err, fs.ErrNotExist))
	// Output:
	// 5 1 3
	// true
}

func ExampleClient_List() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()
	for _, p := range []string{"/example/list/a", "/example/list/sub/b"} {
		if _, err := c.Put(ctx, p, strings.NewReader(p), -1, nil); err != nil {
			log.Fatal(err)
		}
	}

	// One page at a time, however large the directory.
	for e, err := range c.List(ctx, "/example/list", nil) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Path, e.IsDir)
	}
	// Output:
	// /example/list/a false
	// /example/list/sub true
}

func ExampleClient_Walk() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()
	for _, p := range []string{"/example/walk/a", "/example/walk/d/b", "/example/walk/d/e/c"} {
		if _, err := c.Put(ctx, p, strings.NewReader(p), -1, nil); err != nil {
			log.Fatal(err)
		}
	}

	err := c.Walk(ctx, "/example/walk", func(p string, e client.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fmt.Println(p)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// /example/walk
	// /example/walk/a
	// /example/walk/d
	// /example/walk/d/b
	// /example/walk/d/e
	// /example/walk/d/e/c
}

func ExampleClient_FS() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()
	if _, err := c.Put(ctx, "/example/fs/notes.txt", strings.NewReader("via io/fs\n"), -1, nil); err != nil {
		log.Fatal(err)
	}

	// io/fs names are unrooted: "example/fs/notes.txt" is
	// /example/fs/notes.txt.
	fsys := c.FS(ctx)
	b, err := fs.ReadFile(fsys, "example/fs/notes.txt")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(b))
	matches, err := fs.Glob(fsys, "example/fs/*.txt")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(matches)
	// Output:
	// via io/fs
	// [example/fs/notes.txt]
}

func ExampleClient_Nodes() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()

	st, err := c.Nodes(ctx)
	if err != nil {
		log.Fatal(err)
	}
	healthy := 0
	for _, n := range st.Nodes {
		if n.State == client.NodeHealthy {
			healthy++
		}
	}
	fmt.Println(len(st.Nodes), "datanodes,", healthy, "healthy")
	// Output: 3 datanodes, 3 healthy
}

func ExampleClient_Remove() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()
	if _, err := c.Put(ctx, "/example/rm.txt", strings.NewReader("x"), 1, nil); err != nil {
		log.Fatal(err)
	}

	if err := c.Remove(ctx, "/example/rm.txt"); err != nil {
		log.Fatal(err)
	}
	err := c.Remove(ctx, "/example/rm.txt")
	fmt.Println(errors.Is(err, fs.ErrNotExist))
	// Output: true
}

func ExampleClient_Rename() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()
	for _, p := range []string{"/example/reports/draft.pdf", "/example/reports/final.pdf"} {
		if _, err := c.Put(ctx, p, strings.NewReader(p), -1, nil); err != nil {
			log.Fatal(err)
		}
	}

	// Atomic, on the coordinator: no chunk moves. NoReplace refuses an
	// existing destination.
	err := c.Rename(ctx, "/example/reports/draft.pdf", "/example/reports/final.pdf", &client.RenameOptions{NoReplace: true})
	if errors.Is(err, fs.ErrExist) {
		fmt.Println("final.pdf exists already")
	} else if err != nil {
		log.Fatal(err)
	}
	// Output: final.pdf exists already
}

func ExampleClient_MkdirAll() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()

	if err := c.MkdirAll(ctx, "/example/data/2026/12"); err != nil {
		log.Fatal(err)
	}
	fi, err := c.Stat(ctx, "/example/data/2026")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(fi.IsDir)
	// Output: true
}

func ExampleClient_Copy() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()
	if _, err := c.Put(ctx, "/example/big.bin", strings.NewReader("pretend this is big"), -1, nil); err != nil {
		log.Fatal(err)
	}

	// The copy shares the source's chunks: no byte moves.
	fi, err := c.Copy(ctx, "/example/big.bin", "/example/backup/big.bin", &client.CopyOptions{IfNotExist: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(fi.Path, fi.Size)
	// Output: /example/backup/big.bin 19
}

func ExampleClient_Usage() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()
	for _, p := range []string{"/example/du/a", "/example/du/sub/b"} {
		if _, err := c.Put(ctx, p, strings.NewReader("1234"), 4, nil); err != nil {
			log.Fatal(err)
		}
	}

	u, err := c.Usage(ctx, "/example/du")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d bytes in %d files\n", u.Bytes, u.Files)
	// Output: 8 bytes in 2 files
}

func ExampleClient_RemoveAll() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()
	if _, err := c.Put(ctx, "/example/job-42/out/part-0", strings.NewReader("x"), 1, nil); err != nil {
		log.Fatal(err)
	}

	if err := c.RemoveAll(ctx, "/example/job-42"); err != nil {
		log.Fatal(err)
	}
	// A missing path is no error, as with os.RemoveAll.
	fmt.Println(c.RemoveAll(ctx, "/example/job-42"))
	// Output: <nil>
}

// Conditional writes: replace a file only if nobody else did meanwhile.
func ExampleCreateOptions() {
	ctx := context.Background()
	c := newExampleClient()
	defer c.Close()
	if _, err := c.Put(ctx, "/example/config.json", strings.NewReader(`{"v": 1}`), -1, nil); err != nil {
		log.Fatal(err)
	}

	fi, err := c.Stat(ctx, "/example/config.json")
	if err != nil {
		log.Fatal(err)
	}
	w, err := c.Create(ctx, "/example/config.json", &client.CreateOptions{IfVersion: fi.Version})
	if err != nil {
		log.Fatal(err) // replaced since the Stat
	}
	if _, err := io.WriteString(w, `{"v": 2}`); err != nil {
		log.Fatal(err)
	}
	if err := w.Close(); err != nil {
		log.Fatal(err) // replaced before the commit: the upload was aborted
	}
	fmt.Println(w.Info().Version > fi.Version)
	// Output: true
}
