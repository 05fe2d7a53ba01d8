package main

import (
	"os"
	"testing"

	"github.com/matryer/is"
)

// TestMain lets the test binary serve as the coordinator and datanodes
// the client starts (os.Executable, with FLOOR_MAIN set).
func TestMain(m *testing.M) {
	if os.Getenv("FLOOR_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestFloor runs the whole measurement small, plain and with TLS: every
// file put is read back with its digest, and every frame of the large get
// matches its own.
func TestFloor(t *testing.T) {
	t.Setenv("FLOOR_MAIN", "1")
	for _, useTLS := range []bool{false, true} {
		is := is.New(t)
		res, err := client(40, 4, 16, useTLS, true)
		is.NoErr(err)                                       // puts, gets and the large get all succeed
		is.True(res.PutsPerSec > 0 && res.GetsPerSec > 0)   // rates measured
		is.True(res.GetMBps > 0 && res.GetClientPerGiB > 0) // the large get measured
		is.Equal(res.TLS, useTLS)                           // the mode asked for
	}
	_, err := client(0, 4, 16, false, true)
	is.New(t).True(err != nil) // no files is refused before any process starts
}
