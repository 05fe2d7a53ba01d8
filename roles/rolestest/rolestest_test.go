package rolestest_test

import (
	"bytes"
	"testing"

	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/rolestest"
)

// TestStart: a test cluster serves puts and gets with the test tuning,
// and what it stores survives a datanode restart and a coordinator
// restart.
func TestStart(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 2, rolestest.WithLogLevel(zerolog.WarnLevel),
		rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.Replication = 2 }))
	is.Equal(len(c.Nodes()), 2) // two datanodes
	cl := rolestest.Client(t, c)
	data := bytes.Repeat([]byte("rolestest"), 20000) // three 64 KiB chunks
	fi, err := cl.Put(t.Context(), "/f", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err)                                      // put
	is.Equal(fi.ChunkSize, int64(rolestest.ChunkSize)) // the test chunk size
	is.Equal(len(fi.Chunks), 3)                        // so three chunks

	get := func(what string) {
		t.Run(what, func(t *testing.T) {
			is := is.New(t)
			var buf bytes.Buffer
			_, err := cl.Get(t.Context(), "/f", &buf, nil)
			is.NoErr(err)                           // get
			is.True(bytes.Equal(buf.Bytes(), data)) // the same bytes
		})
	}
	get("after the put")

	_, err = c.RestartNode(0)
	is.NoErr(err) // a datanode restarts on its data dir
	is.NoErr(c.WaitHealthy(2, rolestest.WaitFor))
	get("after a datanode restart")

	is.NoErr(c.RestartCoordinator()) // the coordinator restarts on its store
	is.NoErr(c.WaitHealthy(2, rolestest.WaitFor))
	get("after a coordinator restart")
}
