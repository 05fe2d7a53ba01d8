package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"
)

// configFile is a config file of the e2e tests, in testdata/e2e/.
func configFile(name string) string {
	return filepath.Join(root, "testdata", "e2e", name)
}

// TestProcessConfigFile runs a coordinator, two datanodes and a client
// from the config files in testdata/e2e/, given after the command
// (dfs coordinator --config FILE): what the files set takes effect, and
// the flags on the command line win over them.
func TestProcessConfigFile(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	is := is.New(t)
	bin := buildDFSBinary(t)
	c := startProcCluster(t, bin, procClusterConfig{nodes: 2, suspectAfter: 5 * time.Second, deadAfter: 10 * time.Second,
		coordFlags: []string{"--config", configFile("coordinator.yaml")},
		nodeFlags:  []string{"--config", configFile("datanode.yaml")},
	})
	// The cluster came up: --listen, --coordinator and --heartbeat-interval
	// on the command line won over the files' addresses and hour.

	data := procTestData(300<<10, "/configured")
	sum := c.put("/configured", data, "--config", configFile("put.yaml"))
	c.checkFile("/configured", sum)
	st := c.stat("/configured")
	is.Equal(st.Replication, 1)                     // the coordinator's file sets the default replication
	is.Equal(st.ChunkSize, int64(64<<10))           // the client's file sets the chunk size, over the coordinator's 128KiB
	is.Equal(len(st.Chunks), 5)                     // 300 KiB in 64 KiB chunks
	is.Equal(st.Chunks[0].FrameSize, int64(16<<10)) // and the frame size

	res := c.dfs(procCLITimeout, "nodes", "--json")
	is.Equal(res.code, 0) // dfs nodes
	var status struct {
		Nodes []struct {
			Capacity int64 `json:"capacity"`
		} `json:"nodes"`
	}
	is.NoErr(json.Unmarshal([]byte(res.stdout), &status))
	nodes := status.Nodes
	is.Equal(len(nodes), 2) // two datanodes
	for _, n := range nodes {
		is.Equal(n.Capacity, int64(1<<30)) // the datanodes' file sets the capacity
	}

	// log-format: json in the coordinator's file: every line it logged is
	// a JSON object.
	f, err := os.Open(c.coordProc.log)
	is.NoErr(err)
	defer f.Close()
	lines := 0
	for sc := bufio.NewScanner(f); sc.Scan(); lines++ {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Errorf("coordinator log line %q is not JSON: %v", sc.Text(), err)
		}
	}
	is.True(lines > 0) // the coordinator logged
}
