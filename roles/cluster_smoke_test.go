package roles

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/client"
)

func TestSmoke(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	cfg := DefaultClusterConfig(t.TempDir())
	cfg.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	cfg.Coordinator.ChunkSize = 64 << 10
	c, err := StartCluster(ctx, cfg)
	is.NoErr(err)
	defer c.Close()
	ccfg := client.DefaultConfig()
	ccfg.FrameSize = 16 << 10
	cl, err := c.Client(ccfg)
	is.NoErr(err)
	defer cl.Close()
	for _, n := range []int{0, 1, 64 << 10, 64<<10 + 1, 1 << 20} {
		data := make([]byte, n)
		rand.Read(data)
		_, err := cl.Put(ctx, "/a/b", bytes.NewReader(data), int64(n), nil)
		is.NoErr(err)
		var out bytes.Buffer
		_, err = cl.Get(ctx, "/a/b", &out, nil)
		is.NoErr(err)
		is.True(bytes.Equal(out.Bytes(), data))
	}
}
