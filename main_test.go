package main

import (
	"testing"

	"github.com/matryer/is"
)

// TestRun: main hands the command line to roles/cli and turns its result
// into the exit code. The commands themselves are tested in roles/cli
// (in process) and e2e (the built binary).
func TestRun(t *testing.T) {
	is := is.New(t)
	is.Equal(run([]string{"dfs", "version"}), 0)     // a command that succeeds exits 0
	is.Equal(run([]string{"dfs", "no-such-cmd"}), 2) // a usage error exits 2 (docs/cli.md: exit codes by kind)
}
