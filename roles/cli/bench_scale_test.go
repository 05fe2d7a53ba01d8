package cli_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/cli"
)

// TestBenchScale runs `dfs bench scale` end to end at a tiny size: a
// coordinator process built from this tree restores 2,000 one-chunk files,
// five simulated datanodes report every copy, and every figure is
// measured (none missing, no timeouts, both SIGTERMs honoured).
func TestBenchScale(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the dfs binary and runs a coordinator process")
	}
	is := is.New(t)
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("needs the go command to build dfs: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "dfs")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goTool, "build", "-o", bin, "github.com/dfs-project/dfs").CombinedOutput()
	is.NoErr(err) // dfs builds
	if err != nil {
		t.Log(string(out))
	}

	sc := cli.ScaleConfig{Files: 2000, FileSize: 4 << 10, SimNodes: 5, HeartbeatInterval: 200 * time.Millisecond,
		Puts: 200, PutParallel: 8, Cap: time.Minute, IdleWindow: time.Second, Binary: bin, Dir: t.TempDir()}
	res, err := cli.RunScale(ctx, sc, t.Logf)
	is.NoErr(err) // the benchmark runs through
	t.Logf("%+v", res)
	is.Equal(res.Files, 2000)                 // the files asked for
	is.True(res.BackupBytes > 0)              // the backup was written
	is.True(res.RestoreSeconds >= 0)          // the restore was seen in the log
	is.True(res.ServingSeconds > 0)           // the coordinator served
	is.True(res.SafeModeSeconds > 0)          // and left safe mode by itself
	is.True(res.SafeModeSeconds < 60)         // well before its timeout
	is.Equal(res.ProbeTimeouts, 0)            // no probe timed out
	is.True(res.RSSBytes > 0)                 // the RSS was read
	is.True(res.PeakRSSBytes >= res.RSSBytes) // the peak is at least the current
	is.True(res.HeapInuseBytes > 0)           // the heap was read from /metrics
	is.True(res.HeartbeatP99Ms > 0)           // heartbeats were timed
	is.True(res.EmptyStoreCommitsPerSec > 0)  // commits on the empty store
	is.True(res.LoadedCommitsPerSec > 0)      // and on the loaded one
	is.True(res.SigtermIdleSeconds >= 0)      // the idle coordinator exited on SIGTERM
	is.True(res.RestartServingSeconds > 0)    // the restarted one served
	is.True(res.SigtermInventorySeconds >= 0) // and exited on SIGTERM too
	is.True(res.Inventories >= 5)             // every node sent its whole inventory
}
