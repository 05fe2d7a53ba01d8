package cli

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// TestAdminListenInUse: a server role whose admin address is taken does
// not start, and says why on one line.
func TestAdminListenInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	dir := t.TempDir()
	refused := func(t *testing.T, err error) {
		t.Helper()
		is := is.New(t)
		is.True(err != nil)                                            // the role does not start
		is.True(strings.Contains(err.Error(), "--admin-listen "+addr)) // the error names the flag and the address
		is.True(strings.Contains(err.Error(), "already in use"))       // and says what is wrong
		is.True(!strings.Contains(err.Error(), "\n"))                  // on one line
	}
	run := func(args ...string) error {
		app := App(Version{}, IO{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}, io.Discard)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		return app.RunContext(ctx, append([]string{"dfs"}, args...))
	}
	t.Run("Coordinator", func(t *testing.T) {
		refused(t, run("coordinator", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "c"), "--admin-listen", addr))
	})
	t.Run("Datanode", func(t *testing.T) {
		refused(t, run("datanode", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "d"), "--coordinator", "127.0.0.1:1", "--admin-listen", addr))
	})
	t.Run("Dev", func(t *testing.T) {
		refused(t, run("dev", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "dev"), "--nodes", "1", "--admin-listen", addr))
	})
}
