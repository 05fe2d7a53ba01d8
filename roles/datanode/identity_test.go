package datanode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"

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
