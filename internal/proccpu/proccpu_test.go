package proccpu

import (
	"crypto/sha256"
	"os"
	"testing"
	"time"

	"github.com/dfs-project/dfs/rpc"
	"github.com/matryer/is"
)

// TestCPU: work this process does shows in both readings of its CPU
// time, and a process that does not exist is an error.
func TestCPU(t *testing.T) {
	is := is.New(t)
	self0, err := Of(os.Getpid())
	is.NoErr(err) // this process's /proc/PID/stat
	start := Self()
	b := make([]byte, 1<<20)
	for Self()-start < 50*time.Millisecond { // bounded: CPU time grows while this loop hashes
		sha256.Sum256(b)
	}
	self1, err := Of(os.Getpid())
	is.NoErr(err)
	is.True(self1-self0 >= 30*time.Millisecond)  // /proc saw the work (in 10 ms ticks)
	is.True(self1 <= Self()+10*time.Millisecond) // and no more than getrusage says

	_, err = Of(1 << 30)                     // above any pid_max
	is.True(err != nil)                      // no such process
	is.True(rpc.KindOf(err) != rpc.Internal) // not taken for a malformed file
}
