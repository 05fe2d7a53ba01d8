package e2e

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// TestProcessAdminAddressInUse starts each server role on an admin
// address another process holds: the start fails at once with one line
// naming the flag and the address, and a non-zero exit.
func TestProcessAdminAddressInUse(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	bin := buildDFSBinary(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"Coordinator", []string{"coordinator", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "c")}},
		{"Datanode", []string{"datanode", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "d"), "--coordinator", "127.0.0.1:1"}},
		{"Dev", []string{"dev", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "dev"), "--nodes", "1", "--replication", "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			// --log-level error: the roles run --insecure here, which
			// they warn of in a log line.
			res := runDFSProc(t, bin, "", procCLITimeout, append(tc.args, "--admin-listen", addr, "--log-level", "error")...)
			is.True(res.code != 0) // the role refuses to start
			lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
			is.Equal(len(lines), 1)                                                                                                                             // with one line on stderr
			is.Equal(lines[0], "dfs: --admin-listen "+addr+": address already in use (another process serves there; choose another address, or \"\" for none)") // naming the flag, the address and the cause
		})
	}
}
