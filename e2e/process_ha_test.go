package e2e

// Coordinator high availability with etcd: two coordinators share one
// etcd (a real server started by the test), one leads, the other stands
// by. The leader is killed -9 in the middle of puts: the standby takes
// over, no confirmed file is lost, and a put that was running when the
// leader died is retried by the client and succeeds.

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore/etcdtest"
)

func TestProcessHA(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	is := is.New(t)
	bin := buildDFSBinary(t)
	endpoints := etcdtest.Start(t)
	c := startProcCluster(t, bin, procClusterConfig{
		nodes: 3, suspectAfter: 5 * time.Second, deadAfter: 10 * time.Second, standbys: 1,
		coordFlags: []string{"--metadata", "etcd", "--etcd-endpoints", strings.Join(endpoints, ","),
			"--etcd-prefix", "/dfs-ha/", "--chunk-size", "64KiB"},
	})
	addrs := strings.Split(c.coord, ",")
	leader := func() string {
		for _, a := range addrs {
			if r := runDFSProc(t, bin, a, procCLITimeout, "nodes", "--failover-timeout", "0s"); r.code == 0 {
				return a
			}
		}
		return ""
	}
	var first string
	pollUntil(t, "a leader", func() (bool, string) { first = leader(); return first != "", "none leads" })
	t.Logf("leader: %s", first)

	before := map[string][sha256.Size]byte{}
	for i := range 5 {
		remote := fmt.Sprintf("/ha/before-%d", i)
		before[remote] = c.put(remote, procTestData(70<<10+i*999, remote))
	}

	// A put from stdin that is running when the leader dies: half of it
	// goes in before the kill, the rest after.
	big := procTestData(3<<20, "/ha/inflight")
	inflight := c.startDFS(procTransferTimeout, true, "put", "-", "/ha/inflight")
	fed := make(chan error, 1)
	half := make(chan struct{})
	release := make(chan struct{})
	go func() {
		_, err := inflight.stdin.Write(big[:len(big)/2])
		close(half)
		<-release
		if err == nil {
			_, err = inflight.stdin.Write(big[len(big)/2:])
		}
		inflight.stdin.Close()
		fed <- err
	}()
	<-half

	// A stream of small puts across the failover.
	var mu sync.Mutex
	var outcomes []putOutcome
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			remote := fmt.Sprintf("/ha/stream-%03d", i)
			data := procTestData(i*7919%(200<<10), remote)
			res := c.dfs(procCLITimeout, "put", c.writeLocal(fmt.Sprintf("ha-%03d", i), data), remote)
			mu.Lock()
			outcomes = append(outcomes, putOutcome{remote: remote, sum: sha256.Sum256(data), ok: res.code == 0})
			mu.Unlock()
		}
	}()
	time.Sleep(time.Second)

	// Kill the leader.
	victim := c.coordProc
	if first != addrs[0] {
		victim = c.standbys[first]
	}
	killed := time.Now()
	c.kill(victim)
	var second string
	pollUntil(t, "a standby to take over", func() (bool, string) {
		second = leader()
		return second != "" && second != first, "no new leader yet"
	})
	t.Logf("standby %s took over %s after the kill (default lease)", second, time.Since(killed).Round(100*time.Millisecond))
	close(release)

	res := inflight.wait(t)
	if res.code != 0 {
		t.Logf("in-flight put: %s", res.stderr)
	}
	is.Equal(res.code, 0) // the put running at the failover succeeded
	is.NoErr(<-fed)
	pollUntil(t, "puts after the failover", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		ok := 0
		for _, o := range outcomes {
			if o.ok {
				ok++
			}
		}
		return ok >= 5, fmt.Sprintf("%d puts succeeded", ok)
	})
	close(stop)
	<-done

	c.checkFile("/ha/inflight", sha256.Sum256(big))
	for remote, sum := range before {
		c.checkFile(remote, sum) // nothing confirmed before the failover is lost
	}
	for _, o := range outcomes {
		if o.ok {
			c.checkFile(o.remote, o.sum)
		}
	}
}
