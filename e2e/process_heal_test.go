package e2e

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// procFsck is what this test reads of `dfs fsck --json`.
type procFsck struct {
	Files []struct {
		Path       string `json:"path"`
		Unreadable bool   `json:"unreadable"`
	} `json:"files"`
	FilesChecked         int64 `json:"files_checked"`
	Healthy              int64 `json:"healthy_files"`
	UnderReplicatedFiles int64 `json:"under_replicated_files"`
	UnreadableFiles      int64 `json:"unreadable_files"`
}

// fsck runs `dfs fsck --json` and returns its report and exit code.
func (c *procCluster) fsck() (procFsck, int, error) {
	c.t.Helper()
	res := c.dfs(procCLITimeout, "fsck", "--json")
	var f procFsck
	if err := json.Unmarshal([]byte(res.stdout), &f); err != nil {
		return f, res.code, fmt.Errorf("dfs fsck --json: exit %d, %v; stderr: %s", res.code, err, strings.TrimSpace(res.stderr))
	}
	return f, res.code, nil
}

// TestProcessHeal kills -9 one of four datanode processes: the coordinator
// declares it dead and copies its chunks elsewhere until `dfs fsck` is
// healthy again, and every file reads back byte for byte with three
// replicas on live nodes. The time from the kill to fully replicated is
// logged, not asserted.
func TestProcessHeal(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	bin := buildDFSBinary(t)
	c := startProcCluster(t, bin, procClusterConfig{
		nodes: 4, suspectAfter: time.Second, deadAfter: 2 * time.Second,
		nodeFlags: []string{"--scrub-interval", "1s"},
	})

	files := map[string][sha256.Size]byte{}
	for _, n := range []int{0, 1, 1 << 20, 3<<20 + 4321, 8<<20 + 17} {
		remote := fmt.Sprintf("/heal/%d", n)
		files[remote] = c.put(remote, procTestData(n, remote), "--chunk-size", "1MiB")
	}
	pollUntil(t, "fsck healthy after the puts", func() (bool, string) {
		f, code, err := c.fsck()
		if err != nil {
			return false, err.Error()
		}
		return code == 0 && f.Healthy == int64(len(files)), fmt.Sprintf("exit %d, %+v", code, f)
	})

	// The victim holds the most chunks, as the coordinator counts them.
	var victimID string
	pollUntil(t, "every node's chunks reported", func() (bool, string) {
		nodes, err := c.nodes()
		if err != nil {
			return false, err.Error()
		}
		var sum, most int64
		for _, n := range nodes {
			sum += n.Chunks
			if n.Chunks > most {
				most, victimID = n.Chunks, n.NodeID
			}
		}
		// 0+1+1+4+9 chunks, three copies each.
		return sum == 3*15, fmt.Sprintf("%d copies reported", sum)
	})
	victim := c.nodeByID(victimID)
	c.kill(victim.proc)
	killed := time.Now()
	t.Logf("killed datanode %s (%s) with -9", victimID, victim.addr)

	c.waitState(victimID, "dead")
	dead := time.Now()
	sawUnder := false
	pollUntil(t, "fsck healthy after the repair", func() (bool, string) {
		f, code, err := c.fsck()
		if err != nil {
			return false, err.Error()
		}
		if code != 0 && f.UnderReplicatedFiles > 0 {
			sawUnder = true
		}
		if f.UnreadableFiles != 0 {
			t.Errorf("fsck says %d files are unreadable with one node of four dead: %+v", f.UnreadableFiles, f)
		}
		return code == 0 && f.Healthy == int64(len(files)), fmt.Sprintf("exit %d, %+v", code, f)
	})
	healed := time.Now()
	t.Logf("kill -9 to dead: %s; dead to fully replicated: %s; kill to fully replicated: %s (fsck saw under-replicated files: %v)",
		dead.Sub(killed).Round(time.Millisecond), healed.Sub(dead).Round(time.Millisecond), healed.Sub(killed).Round(time.Millisecond), sawUnder)

	for remote, sum := range files {
		c.checkFile(remote, sum)
		for _, ch := range c.stat(remote).Chunks {
			live := map[string]bool{}
			for _, r := range ch.Replicas {
				if r.State == "healthy" && r.NodeID != victimID {
					live[r.NodeID] = true
				}
			}
			if len(live) != 3 {
				t.Errorf("%s chunk %d: %d replicas on live nodes, want 3: %+v", remote, ch.Index, len(live), ch.Replicas)
			}
		}
	}
}
