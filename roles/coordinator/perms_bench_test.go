package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/boltstore"
	"github.com/dfs-project/dfs/rpc"
)

// BenchmarkPermsCreate measures what the permission check of a put of a
// new file costs on bolt, four directories deep: one walk of the store
// for the ancestors and the file, and the decisions.
func BenchmarkPermsCreate(b *testing.B) {
	ctx := context.Background()
	st, err := boltstore.Open(b.TempDir()+"/metadata.db", boltstore.Options{Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := st.Init(ctx, "bench", nil); err != nil {
		b.Fatal(err)
	}
	a := meta.Attr{Owner: "alice", Group: "staff", Mode: 0o755}
	d := &meta.Dir{Path: "/a/b/c/d", Modified: time.Unix(1, 0), Attr: a}
	if err := st.Commit(ctx, &meta.Txn{Path: d.Path, Mkdir: d, MkdirParents: true, Parents: a}); err != nil {
		b.Fatal(err)
	}
	pm := perms{store: st, superusers: auth.Superusers{"admin"}}
	for _, who := range []struct {
		name string
		ctx  context.Context
	}{
		{"unchecked", ctx},
		{"user", auth.NewContext(ctx, asAlice)},
	} {
		b.Run(who.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := pm.create(who.ctx, rpc.Path("/a/b/c/d/new")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
