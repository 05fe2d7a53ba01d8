package datanode

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
)

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestLoadOrCreateNodeID(t *testing.T) {
	t.Run("created once, then persistent", func(t *testing.T) {
		is := is.New(t)
		dir := t.TempDir()
		id, err := LoadOrCreateNodeID(dir)
		is.NoErr(err) // created on first start
		_, err = rpc.ParseNodeID(string(id))
		is.NoErr(err) // a canonical UUID
		b, err := os.ReadFile(filepath.Join(dir, "node-id"))
		is.NoErr(err)                        // persisted
		is.Equal(string(b), string(id)+"\n") // as one line
		again, err := LoadOrCreateNodeID(dir)
		is.NoErr(err)                                     // loaded on restart
		is.Equal(again, id)                               // the same node
		is.Equal(dirEntries(t, dir), []string{"node-id"}) // no temp file left behind

		other, err := LoadOrCreateNodeID(t.TempDir())
		is.NoErr(err)
		is.True(other != id) // another data dir is another node
	})
	t.Run("hand-edited whitespace", func(t *testing.T) {
		is := is.New(t)
		dir := t.TempDir()
		const want = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
		is.NoErr(os.WriteFile(filepath.Join(dir, "node-id"), []byte("  "+want+"\r\n\n"), 0o640))
		id, err := LoadOrCreateNodeID(dir)
		is.NoErr(err)              // surrounding whitespace is tolerated
		is.Equal(string(id), want) // and trimmed
	})
	for name, content := range map[string]string{
		"garbage":    "hello world\n",
		"empty":      "",
		"upper case": "1B4E28BA-2FA1-11D2-883F-0016D3CCA427\n",
		"two ids":    "1b4e28ba-2fa1-11d2-883f-0016d3cca427\n1b4e28ba-2fa1-11d2-883f-0016d3cca428\n",
		"binary":     "\x00\xff\x01",
	} {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			dir := t.TempDir()
			p := filepath.Join(dir, "node-id")
			is.NoErr(os.WriteFile(p, []byte(content), 0o640))
			_, err := LoadOrCreateNodeID(dir)
			is.True(err != nil)                                     // a damaged identity is refused, not replaced
			is.True(strings.Contains(err.Error(), "not a node id")) // saying why
			b, _ := os.ReadFile(p)
			is.Equal(string(b), content) // and left alone for the operator
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		is := is.New(t)
		dir := t.TempDir()
		is.NoErr(os.Mkdir(filepath.Join(dir, "node-id"), 0o750))
		_, err := LoadOrCreateNodeID(dir)
		is.True(err != nil) // a node-id that cannot be read is an error
	})
}

// TestDataDirLock: a data dir is held by one datanode at a time; a second
// taker fails at once, naming the dir, until the first lets go.
func TestDataDirLock(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	l, err := lockDataDir(dir)
	is.NoErr(err) // the first taker gets it
	_, err = lockDataDir(dir)
	is.True(err != nil)                                                          // a second one is refused
	is.True(strings.Contains(err.Error(), dir+" is in use by another datanode")) // saying which dir
	is.True(!strings.Contains(err.Error(), "\n"))                                // on one line
	is.NoErr(l.Close())
	is.NoErr(l.Close()) // Close twice is harmless
	l2, err := lockDataDir(dir)
	is.NoErr(err) // released, it can be taken again
	is.NoErr(l2.Close())
	_, err = lockDataDir(filepath.Join(dir, "missing"))
	is.True(err != nil) // a dir that does not exist cannot be locked
}

// TestSecondDatanodeOnOneDir: a second datanode started on the data dir
// of a running one fails at start, naming the dir, and the first one
// keeps serving; once the first stops, the dir can be taken again.
func TestSecondDatanodeOnOneDir(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	dir := t.TempDir()
	t.Cleanup(func() { // after the first node's own cleanup has stopped it
		l, err := lockDataDir(dir)
		if err != nil {
			t.Errorf("the data dir of a stopped datanode: %v", err)
			return
		}
		l.Close()
	})
	first := startNode(t, coord, func(cfg *Config) { cfg.DataDir = dir })

	cfg := first.cfg
	lis, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err)
	defer lis.Close()
	cfg.Listen = lis.Addr().String()
	second, err := New(cfg, Deps{Log: zerolog.New(zerolog.NewTestWriter(t)), Listener: lis})
	is.NoErr(err) // New has no side effects
	// Bounded, so that a second node that does start fails the test.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err = second.Run(ctx)
	is.True(err != nil)                                                                      // Run fails at start
	is.True(strings.Contains(err.Error(), "data dir "+dir+" is in use by another datanode")) // saying why
	is.Equal(second.ID(), rpc.NodeID(""))                                                    // before it took the node's identity
	select {
	case <-second.Serving():
		t.Fatal("the second datanode served")
	default:
	}
	dn := client(t, first)
	id := chunkID(t, 1)
	upload(t, dn, id, chunkData(100, 1), testFrame)
	is.True(first.Store().Has(id)) // the first one still works
}
