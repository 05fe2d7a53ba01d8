package cli

import (
	"os"
	"testing"
)

// TestMain runs the package's tests with DFS_INSECURE=true: their
// in-process clusters run in plain text, as the commands must then be
// told. The tests of TLS give --insecure=false and their files.
func TestMain(m *testing.M) {
	os.Setenv("DFS_INSECURE", "true")
	os.Exit(m.Run())
}
