package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dfs-project/dfs/internal/proccpu"
)

// cpuTimes is the CPU time (user + system) spent so far by the bench's
// own process, which is the client, and by the cluster's processes
// when the bench started them (--dev).
type cpuTimes struct {
	client, cluster time.Duration
}

// sub is the CPU spent between two readings.
func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{client: c.client - o.client, cluster: c.cluster - o.cluster}
}

// cpuNow reads the CPU spent so far by this process and by procs' (nil
// without --dev: the cluster's figure is then 0).
func cpuNow(procs *devProcs) cpuTimes {
	t := cpuTimes{client: proccpu.Self()}
	if procs != nil {
		for _, cmd := range procs.cmds {
			if c, err := proccpu.Of(cmd.Process.Pid); err == nil {
				t.cluster += c
			}
		}
	}
	return t
}

// resetPeakRSS restarts the high-water resident set (VmHWM) of procs'
// datanodes, so a later peakRSS reads the peak of what ran in between
// (Linux clear_refs; a kernel that refuses it leaves the peak of the
// whole run).
func (d *devProcs) resetPeakRSS() {
	for _, cmd := range d.cmds[1:] {
		os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", cmd.Process.Pid), []byte("5"), 0)
	}
}

// sampleAnon samples the anonymous (private: heap, stacks, buffers)
// resident memory of procs' datanodes every 50 ms until stop is closed,
// then returns each one's peak. The kernel keeps no high-water mark of
// it, and VmHWM also counts the executable's pages, which every dfs
// process maps from the one page cache.
func (d *devProcs) sampleAnon(stop <-chan struct{}) []int64 {
	nodes := d.cmds[1:]
	peak := make([]int64, len(nodes))
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		for i, cmd := range nodes {
			peak[i] = max(peak[i], rssAnon(cmd.Process.Pid))
		}
		select {
		case <-stop:
			return peak
		case <-tick.C:
		}
	}
}

// rssAnon reads the anonymous resident memory of process pid (RssAnon),
// or 0.
func rssAnon(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssAnon:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuFigures formats one CPU figure of the text report: the client's,
// and the cluster's when the bench ran it (--dev).
func cpuFigures(client, cluster float64, withCluster bool) string {
	if !withCluster {
		return fmt.Sprintf("client %.2f", client)
	}
	return fmt.Sprintf("client %.2f cluster %.2f", client, cluster)
}

// perGiB is CPU seconds per GiB moved.
func perGiB(cpu time.Duration, bytes int64) float64 {
	if bytes <= 0 {
		return 0
	}
	return cpu.Seconds() / (float64(bytes) / (1 << 30))
}

// perOp is CPU milliseconds per operation.
func perOp(cpu time.Duration, ops int) float64 {
	if ops <= 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / 1e3 / float64(ops)
}
