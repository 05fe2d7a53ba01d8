package cli

import (
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// TestBenchServersShareTheCores: each server process bench --dev starts
// runs with GOMAXPROCS its equal share of the cores (at least 1), and a
// GOMAXPROCS the bench was started with is every process's.
func TestBenchServersShareTheCores(t *testing.T) {
	is := is.New(t)
	seen := func(d *devProcs) string {
		cmd := d.command("/bin/sh", []string{"-c", `echo "$GOMAXPROCS"`}, io.Discard)
		out, err := cmd.Output()
		is.NoErr(err)
		return strings.TrimSpace(string(out))
	}

	t.Setenv("GOMAXPROCS", "") // as if unset
	cores := runtime.GOMAXPROCS(0)
	for _, servers := range []int{1, 2, 4, 5, 4 * cores} {
		want := max(1, cores/servers)
		d := &devProcs{gomaxprocs: serverShare(servers)}
		is.Equal(d.gomaxprocs, want)          // the share of the cores
		is.Equal(seen(d), strconv.Itoa(want)) // what the process runs with
	}

	t.Setenv("GOMAXPROCS", "x") // not a number: the share, as Go ignores it
	d := &devProcs{gomaxprocs: serverShare(4)}
	is.Equal(seen(d), strconv.Itoa(max(1, cores/4)))

	t.Setenv("GOMAXPROCS", "3")
	d = &devProcs{gomaxprocs: serverShare(4)}
	is.Equal(d.gomaxprocs, 3) // the bench's own setting wins
	is.Equal(seen(d), "3")    // and the process inherits it
}
