package e2e

// Container tests: the process tests' scenario one level up, on the image
// users run. A coordinator and five datanodes run as containers of the dfs
// image on a private Docker network, a client container puts and gets
// files, then one datanode is killed (docker kill) and another cut off
// (docker network disconnect): every file must still read back byte for
// byte and puts must keep working; once the two are back the cluster must
// converge (every node healthy, every file fully replicated).
//
// The test needs a Docker engine and a few minutes, so `make test` skips
// it; `make test-containers` builds the image (make image) and runs it with
// DFS_TEST_CONTAINERS=1 and DFS_TEST_IMAGE set to that image. Run alone
// with only DFS_TEST_CONTAINERS=1, it builds its own image with make image
// and removes it afterwards. Without an engine that answers it skips,
// saying so.
//
// Everything it creates (containers, the network, volumes) carries the
// label dfs-test=<prefix> and a name starting with the prefix, and is
// removed at cleanup, also when the test fails. Every wait is a bounded
// poll; nothing asserts how long anything took.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

const (
	// containerCmdTimeout bounds one docker command (a client container
	// moving a few MiB included).
	containerCmdTimeout = 2 * time.Minute
	// containerWaitTimeout bounds polling for a cluster state.
	containerWaitTimeout = 2 * time.Minute
	// containerBuildTimeout bounds make image.
	containerBuildTimeout = 10 * time.Minute
	// containerLabel marks everything the test creates.
	containerLabel = "dfs-test"
)

func TestContainers(t *testing.T) {
	if os.Getenv("DFS_TEST_CONTAINERS") != "1" {
		t.Skip("container cluster test skipped: run `make test-containers` (it sets DFS_TEST_CONTAINERS=1 and needs a Docker engine)")
	}
	if testing.Short() {
		t.Skip("container cluster test skipped with -short")
	}
	if err := dockerAnswers(); err != nil {
		t.Skipf("container cluster test skipped: no Docker engine answers (%v)", err)
	}
	is := is.New(t)
	begin := time.Now()
	step := func(what string) { t.Logf("%6.1fs  %s", time.Since(begin).Seconds(), what) }
	c := newDockerCluster(t)
	c.image = os.Getenv("DFS_TEST_IMAGE")
	if c.image == "" {
		c.image = c.buildImage()
	}
	t.Logf("image %s, prefix %s", c.image, c.prefix)
	user := strings.TrimSpace(c.mustDocker(nil, "image", "inspect", "--format", "{{.Config.User}}", c.image))
	is.Equal(user, "65532:65532") // the image runs as the unprivileged dfs user

	step("image ready")
	c.start(5)
	c.waitNodes("all 5 datanodes healthy", func(nodes []procNode) (bool, string) {
		return countState(nodes, "healthy") == 5, describeNodes(nodes)
	})
	c.waitContainersHealthy()
	step("5 datanodes healthy, every container's HEALTHCHECK passing")

	// Files of several shapes with 1 MiB chunks: empty, one byte, exactly
	// one chunk, a chunk and a bit, several chunks.
	files := map[string][sha256.Size]byte{}
	for _, n := range []int{0, 1, 1 << 20, 1<<20 + 7, 5<<20 + 4321} {
		remote := fmt.Sprintf("/before/%d", n)
		files[remote] = c.put(remote, procTestData(n, remote))
	}
	for remote, sum := range files {
		c.checkFile(remote, sum)
	}
	step("5 files put and read back")

	// Faults: kill one datanode, cut another off the network. Three stay
	// reachable, so every chunk (three copies on distinct nodes) keeps at
	// least one reachable copy.
	killed, cut := c.nodes[0], c.nodes[1]
	c.mustDocker(nil, "kill", killed)
	c.mustDocker(nil, "network", "disconnect", c.net, cut)
	step(fmt.Sprintf("killed %s, disconnected %s from %s", killed, cut, c.net))

	for remote, sum := range files {
		c.checkFile(remote, sum) // at once: readers skip the unreachable copies
	}
	step("every file read back at once")
	for _, n := range []int{3, 2<<20 + 99} {
		remote := fmt.Sprintf("/during/%d", n)
		files[remote] = c.put(remote, procTestData(n, remote))
	}
	step("2 files put")
	c.waitNodes("the killed and the cut-off datanode to be seen as down", func(nodes []procNode) (bool, string) {
		return countState(nodes, "healthy") == 3 && len(nodes) == 5, describeNodes(nodes)
	})
	step("both seen as down")
	files["/during/late"] = c.put("/during/late", procTestData(3<<20, "/during/late"))
	for remote, sum := range files {
		if strings.HasPrefix(remote, "/during/") {
			c.checkFile(remote, sum)
		}
	}
	step("another file put, the files put during the faults read back")

	// Heal: reconnect the cut-off node, restart the killed one on its
	// volume (the same node ID). The cluster converges: the same five
	// nodes, all healthy, and every file fully replicated.
	c.mustDocker(nil, "network", "connect", c.net, cut)
	c.mustDocker(nil, "start", killed)
	ids := c.nodeIDs()
	c.waitNodes("the same 5 datanodes healthy again", func(nodes []procNode) (bool, string) {
		var now []string
		for _, n := range nodes {
			now = append(now, n.NodeID)
		}
		slices.Sort(now)
		return countState(nodes, "healthy") == 5 && slices.Equal(now, ids), describeNodes(nodes)
	})
	step("reconnected and restarted: the same 5 datanodes healthy")
	c.poll("every file fully replicated (dfs fsck exits 0)", func() (bool, string) {
		res := c.dfs(c.cmdTimeout, "fsck")
		return res.code == 0, strings.TrimSpace(res.stdout) + " " + oneLine(res.stderr)
	})
	step("every file fully replicated")
	files["/after"] = c.put("/after", procTestData(2<<20, "/after"))
	for remote, sum := range files {
		c.checkFile(remote, sum)
	}
	step("another file put, every file read back")
}

// dockerAnswers reports why no Docker engine can be used, or nil.
func dockerAnswers() error {
	if _, err := exec.LookPath("docker"); err != nil {
		return errors.New("the docker command is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker info: %v: %s", err, oneLine(string(out)))
	}
	return nil
}

// dockerCluster is a dfs cluster of containers on one private network.
type dockerCluster struct {
	clusterCLI
	image  string
	prefix string   // of every name; also the label's value
	net    string   // the network
	coord  string   // the coordinator's container (and host) name
	nodes  []string // the datanodes' container names
	pki    string   // the volume of the CA and the certificates
}

// newDockerCluster registers the cleanup that removes everything labelled
// with a new prefix, before anything is created.
func newDockerCluster(t *testing.T) *dockerCluster {
	b := make([]byte, 4)
	rand.Read(b)
	prefix := "dfstest-" + hex.EncodeToString(b)
	c := &dockerCluster{prefix: prefix, net: prefix + "-net", coord: prefix + "-coord"}
	c.clusterCLI = clusterCLI{t: t, client: c.runClient, cmdTimeout: containerCmdTimeout, waitFor: containerWaitTimeout, waitEvery: 500 * time.Millisecond}
	t.Cleanup(c.cleanup)
	return c
}

// docker runs a docker command and returns its stdout; the error carries
// stderr.
func (c *dockerCluster) docker(timeout time.Duration, stdin []byte, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("docker %s: no end within %s", shortArgs(args), timeout)
	} else if err != nil {
		err = fmt.Errorf("docker %s: %v: %s", shortArgs(args), err, oneLine(stderr.String()))
	}
	return stdout.Bytes(), err
}

// mustDocker runs a docker command that must succeed.
func (c *dockerCluster) mustDocker(stdin []byte, args ...string) string {
	c.t.Helper()
	out, err := c.docker(containerCmdTimeout, stdin, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return string(out)
}

func shortArgs(args []string) string {
	s := strings.Join(args, " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// buildImage builds the image with `make image` into a temp dir and
// removes it at cleanup.
func (c *dockerCluster) buildImage() string {
	c.t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		c.t.Fatalf("building the image needs make (or set DFS_TEST_IMAGE): %v", err)
	}
	image := c.prefix + "-image:test"
	dir := c.t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), containerBuildTimeout)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "make", "image", "IMAGE="+image,
		"BIN="+filepath.Join(dir, "dfs"), "IMAGE_CONTEXT="+filepath.Join(dir, "image"))
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("make image: %v\n%s", err, out)
	}
	c.t.Cleanup(func() {
		if _, err := c.docker(time.Minute, nil, "image", "rm", "-f", image); err != nil {
			c.t.Errorf("cleanup: %v", err)
		}
	})
	c.t.Logf("make image: %s", time.Since(start).Round(time.Millisecond))
	return image
}

// start creates the network, the volumes and the containers: a
// coordinator and n datanodes with short failure timeouts.
func (c *dockerCluster) start(n int) {
	c.t.Helper()
	label := containerLabel + "=" + c.prefix
	// A bridge network of the test's own, not --internal: there, looking
	// up the name of a stopped or disconnected container takes 5 s to time
	// out instead of failing at once, which only slows the test down.
	c.mustDocker(nil, "network", "create", "--label", label, c.net)
	for i := range n {
		c.nodes = append(c.nodes, fmt.Sprintf("%s-dn%d", c.prefix, i+1))
	}
	c.makePKI()
	server := func(name string, args ...string) {
		c.mustDocker(nil, "volume", "create", "--label", label, name)
		run := []string{"run", "-d", "--name", name, "--hostname", name, "--label", label,
			"--network", c.net, "-v", name + ":/data",
			// The image's HEALTHCHECK (dfs health --live), checked more often.
			"--health-interval", "2s", "--health-start-period", "30s",
			"-e", "DFS_LOG_FORMAT=json"}
		run = append(append(run, c.tlsArgs(name)...), c.image)
		c.mustDocker(nil, append(run, args...)...)
	}
	server(c.coord, "coordinator", "--advertise", c.coord+":7000",
		"--suspect-after", "2s", "--dead-after", "4s", "--gc-delay", "5s")
	for _, name := range c.nodes {
		server(name, "datanode", "--coordinator", c.coord+":7000", "--advertise", name+":7000",
			"--heartbeat-interval", "500ms")
	}
}

// makePKI makes the cluster's CA and certificates with the image itself
// (dfs admin ca init, dfs admin cert issue), as an operator without a PKI
// would, in a volume of their own: one per server, named by its host
// name, and the superuser's for the clients. The volume is mounted at
// /data while they are made, where the image's user may write (a new
// volume takes the ownership of the directory it is first mounted on).
func (c *dockerCluster) makePKI() {
	c.t.Helper()
	c.pki = c.prefix + "-pki"
	c.mustDocker(nil, "volume", "create", "--label", containerLabel+"="+c.prefix, c.pki)
	admin := func(args ...string) {
		run := []string{"run", "--rm", "--no-healthcheck", "--label", containerLabel + "=" + c.prefix, "-v", c.pki + ":/data", c.image, "admin"}
		c.mustDocker(nil, append(run, args...)...)
	}
	admin("ca", "init", "--dir", "/data/ca")
	admin("cert", "issue", "--ca", "/data/ca", "--role", "coordinator", "--name", c.coord, "--dns", c.coord, "--out", "/data")
	for _, name := range c.nodes {
		admin("cert", "issue", "--ca", "/data/ca", "--role", "datanode", "--name", name, "--dns", name, "--out", "/data")
	}
	admin("cert", "issue", "--ca", "/data/ca", "--role", "client", "--name", "admin", "--out", "/data")
}

// tlsArgs are the docker run arguments that give a container the
// certificate called name: the PKI volume, read-only, and the TLS
// environment.
func (c *dockerCluster) tlsArgs(name string) []string {
	return []string{"-v", c.pki + ":/pki:ro", "-e", "DFS_TLS_CA=/pki/ca/ca.crt",
		"-e", "DFS_TLS_CERT=/pki/" + name + ".crt", "-e", "DFS_TLS_KEY=/pki/" + name + ".key"}
}

// cleanup removes every container, network and volume carrying the
// test's label; on failure it first logs the end of each server's log.
func (c *dockerCluster) cleanup() {
	filter := "label=" + containerLabel + "=" + c.prefix
	list := func(args ...string) []string {
		out, err := c.docker(time.Minute, nil, append(args, "--filter", filter)...)
		if err != nil {
			c.t.Errorf("cleanup: %v", err)
		}
		return strings.Fields(string(out))
	}
	containers := list("ps", "-aq")
	if c.t.Failed() {
		for _, name := range append([]string{c.coord}, c.nodes...) {
			out, _ := exec.Command("docker", "logs", "--tail", "40", name).CombinedOutput()
			c.t.Logf("--- %s (last lines)\n%s", name, out)
		}
	}
	if len(containers) > 0 {
		if _, err := c.docker(2*time.Minute, nil, append([]string{"rm", "-f", "-v"}, containers...)...); err != nil {
			c.t.Errorf("cleanup: %v", err)
		}
	}
	if nets := list("network", "ls", "-q"); len(nets) > 0 {
		if _, err := c.docker(time.Minute, nil, append([]string{"network", "rm"}, nets...)...); err != nil {
			c.t.Errorf("cleanup: %v", err)
		}
	}
	if vols := list("volume", "ls", "-q"); len(vols) > 0 {
		if _, err := c.docker(time.Minute, nil, append([]string{"volume", "rm", "-f"}, vols...)...); err != nil {
			c.t.Errorf("cleanup: %v", err)
		}
	}
}

// runClient runs `dfs args...` in a client container on the cluster's network
// with stdin (nil: none): the container harness's client.
func (c *dockerCluster) runClient(timeout time.Duration, stdin []byte, args ...string) procResult {
	c.t.Helper()
	run := []string{"run", "--rm", "--no-healthcheck", "--label", containerLabel + "=" + c.prefix,
		"--network", c.net, "-e", "DFS_COORDINATOR=" + c.coord + ":7000"}
	run = append(run, c.tlsArgs("admin")...)
	if stdin != nil {
		run = append(run, "-i")
	}
	run = append(run, c.image, "--log-level", "warn")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append(run, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	what := "dfs " + shortArgs(args)
	res := procResult{stdout: stdout.String(), stderr: stderr.String()}
	if ctx.Err() != nil {
		// Not fatal: a poll tries again.
		res.code, res.stderr = -1, fmt.Sprintf("%s in a container: no end within %s; stderr: %s", what, timeout, oneLine(res.stderr))
		return res
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		c.t.Fatalf("%s in a container: %v", what, err)
	}
	return res
}

// put stores data at remote through a client container (stdin) and
// returns its SHA-256.
func (c *dockerCluster) put(remote string, data []byte) [sha256.Size]byte {
	c.t.Helper()
	if res := c.client(c.cmdTimeout, data, "put", "--chunk-size", "1MiB", "-", remote); res.code != 0 {
		c.t.Fatalf("put %s (%d bytes): exit %d: %s", remote, len(data), res.code, oneLine(res.stderr))
	}
	return sha256.Sum256(data)
}

// checkFile reads remote back through a client container (stdout) and
// compares it with the digest of what was put.
func (c *dockerCluster) checkFile(remote string, want [sha256.Size]byte) {
	c.t.Helper()
	res := c.dfs(c.cmdTimeout, "get", remote, "-")
	if res.code != 0 {
		c.t.Fatalf("get %s: exit %d: %s", remote, res.code, oneLine(res.stderr))
	}
	got := []byte(res.stdout)
	if sha256.Sum256(got) != want {
		c.t.Fatalf("get %s: %d bytes with sha256 %x, want sha256 %x", remote, len(got), sha256.Sum256(got), want)
	}
}

// waitContainersHealthy waits until Docker reports every server container
// healthy: the image's HEALTHCHECK, `dfs health --live`, passes in each.
func (c *dockerCluster) waitContainersHealthy() {
	c.t.Helper()
	names := append([]string{c.coord}, c.nodes...)
	c.poll("every server container healthy (HEALTHCHECK dfs health --live)", func() (bool, string) {
		out, err := c.docker(time.Minute, nil, append([]string{"inspect", "--format", "{{.Name}} {{.State.Health.Status}}"}, names...)...)
		if err != nil {
			return false, err.Error()
		}
		s := strings.TrimSpace(string(out))
		return strings.Count(s, " healthy") == len(names), s
	})
}
