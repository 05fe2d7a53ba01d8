package e2e

// Checks of the deployment files under deploy/ that need no running
// system: the systemd units pass `systemd-analyze verify`, their example
// environment files name only variables the roles read, and the compose
// file parses.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// systemdUnits are the units in deploy/systemd and the example environment
// file each reads, with the command it runs.
var systemdUnits = []struct {
	unit, env, command string
	args               string   // after the command on the ExecStart line
	want               []string // lines the unit must hold
}{
	{"dfs-coordinator.service", "coordinator.env", "coordinator", "", serverUnitLines},
	{"dfs-datanode.service", "datanode.env", "datanode", "", serverUnitLines},
	// The gateway keeps no data: its state directory is its own.
	{"dfs-s3.service", "s3.env", "s3", "", []string{"User=dfs", "Type=notify", "NotifyAccess=main", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "ExecReload=/bin/kill -HUP $MAINPID"}},
	// A mount runs outside any mount namespace of its own, so that its
	// mount is everyone's: no ProtectSystem= and the like.
	{"dfs-mount@.service", "mount.env", "mount", " %f", []string{"Type=notify", "NotifyAccess=main", "Restart=on-failure", "NoNewPrivileges=yes", "ExecReload=/bin/kill -HUP $MAINPID"}},
}

// serverUnitLines are the lines every server unit holds.
var serverUnitLines = []string{"User=dfs", "Type=notify", "NotifyAccess=main", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "ReadWritePaths=/var/lib/dfs/"}

// systemdBinary is the path the units start dfs from.
const systemdBinary = "/usr/local/bin/dfs"

// TestSystemdUnits runs `systemd-analyze verify` on each unit. verify
// refuses a unit whose ExecStart binary does not exist, so the units are
// copied into a temp dir with the binary's path replaced by this test's
// own executable (any executable file would do: verify only checks that it
// exists and is executable). verify reports unknown keys and bad values as
// warnings with exit status 0, so any line naming a unit fails the test.
// It needs no running systemd (PID 1 may be anything), only the
// systemd-analyze command from Debian's systemd package.
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd units not verified: systemd-analyze is not installed (Debian: apt-get install systemd)")
	}
	is := is.New(t)
	self, err := os.Executable()
	is.NoErr(err) // the test binary's path
	dir := t.TempDir()
	var paths []string
	for _, u := range systemdUnits {
		b, err := os.ReadFile(filepath.Join(root, "deploy", "systemd", u.unit))
		is.NoErr(err) // the unit is readable
		unit := string(b)
		is.True(strings.Contains(unit, "ExecStart="+systemdBinary+" "+u.command+u.args+"\n")) // the unit runs its role
		is.True(strings.Contains(unit, "EnvironmentFile=/etc/dfs/"+u.env+"\n"))               // the unit reads its environment file
		for _, want := range u.want {
			if !strings.Contains(unit, "\n"+want) {
				t.Errorf("%s: no %s line", u.unit, want)
			}
		}
		p := filepath.Join(dir, u.unit)
		is.NoErr(os.WriteFile(p, []byte(strings.ReplaceAll(unit, systemdBinary, self)), 0o644)) // the copy is written
		paths = append(paths, p)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, analyze, append([]string{"verify"}, paths...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		ours := false
		for _, u := range systemdUnits {
			ours = ours || strings.Contains(line, u.unit)
		}
		if ours {
			t.Errorf("systemd-analyze verify: %s", line)
		} else {
			t.Logf("systemd-analyze verify (not about our units): %s", line)
		}
	}
}

// envLine is one VAR=value line of an environment file, possibly
// commented out (a documented default).
var envLine = regexp.MustCompile(`^#?(DFS_[A-Z0-9_]+)=`)

// TestSystemdEnvFiles checks that every variable the example environment
// files set or show commented out is one the unit's command (or the global
// flags) reads, so a renamed flag cannot leave a silently ignored setting.
func TestSystemdEnvFiles(t *testing.T) {
	commands := commandFlags()
	for _, u := range systemdUnits {
		t.Run(u.env, func(t *testing.T) {
			is := is.New(t)
			known := map[string]bool{}
			for _, f := range append(commands[""], commands["dfs "+u.command]...) {
				for _, e := range flagEnvs(f) {
					known[e] = true
				}
			}
			is.True(len(known) > 2) // the command's flags were found
			f, err := os.Open(filepath.Join(root, "deploy", "systemd", u.env))
			is.NoErr(err) // the example is readable
			defer f.Close()
			sc := bufio.NewScanner(f)
			seen := 0
			for n := 1; sc.Scan(); n++ {
				m := envLine.FindStringSubmatch(sc.Text())
				if m == nil {
					continue
				}
				seen++
				if !known[m[1]] {
					t.Errorf("%s:%d: %s is not read by dfs %s", u.env, n, m[1], u.command)
				}
			}
			is.NoErr(sc.Err())
			is.True(seen > 0) // the example sets variables
		})
	}
}

// TestComposeFile checks that deploy/compose.yaml parses, when a compose
// tool is installed; running it is TestContainers' and make cluster-up's
// job.
func TestComposeFile(t *testing.T) {
	compose, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Skip("deploy/compose.yaml not checked: docker-compose is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"-f", filepath.Join(root, "deploy", "compose.yaml"), "-p", "dfs", "config", "-q"}
	out, err := exec.CommandContext(ctx, compose, args...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestDeployDocsMatchUnits checks that docs/operations.md describes the
// units as they are: how systemd knows they started and when it restarts
// them.
func TestDeployDocsMatchUnits(t *testing.T) {
	is := is.New(t)
	b, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	is.NoErr(err)
	doc := string(b)
	for _, u := range systemdUnits {
		unit, err := os.ReadFile(filepath.Join(root, "deploy", "systemd", u.unit))
		is.NoErr(err)
		for _, key := range []string{"Type=", "Restart="} {
			m := regexp.MustCompile(`(?m)^` + key + `(\S+)$`).FindStringSubmatch(string(unit))
			is.True(m != nil) // the unit sets it
			if !strings.Contains(doc, "`"+key+m[1]+"`") {
				t.Errorf("docs/operations.md does not say `%s%s` as %s does", key, m[1], u.unit)
			}
		}
	}
	for _, stale := range []string{"Restart=always", "Type=exec", "Type=simple"} {
		is.True(!strings.Contains(doc, stale)) // nothing the units do not say
	}
}

// TestComposeCluster checks what deploy/compose.yaml runs, without a
// compose tool: four datanodes, so that one down still leaves three for
// replication 3; the coordinator's admin endpoint published on the host's
// loopback; and liveness health checks (--live), since the datanodes wait
// for the coordinator to be healthy and a coordinator without datanodes
// is not ready for writes. The images' HEALTHCHECK is --live too.
func TestComposeCluster(t *testing.T) {
	is := is.New(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy", "compose.yaml"))
	is.NoErr(err)
	compose := string(b)
	is.Equal(strings.Count(compose, "command: [datanode,"), 4) // four datanodes
	for i := 1; i <= 4; i++ {
		is.True(strings.Contains(compose, fmt.Sprintf(`--advertise, "datanode%d:7000"`, i))) // each advertising its own name
	}
	is.True(strings.Contains(compose, `--admin-listen, "0.0.0.0:7080"]`)) // the coordinator serves its admin endpoint
	is.True(strings.Contains(compose, `ports: ["127.0.0.1:7080:7080"]`))  // published on the host's loopback only
	is.True(strings.Contains(compose, `test: ["CMD", "/dfs", "health", "--live"]`))
	for _, f := range []string{filepath.Join(root, "Dockerfile"), filepath.Join(root, "deploy", "image", "Dockerfile.multistage")} {
		b, err := os.ReadFile(f)
		is.NoErr(err)
		is.True(strings.Contains(string(b), `CMD ["/dfs", "health", "--live"]`)) // the image's HEALTHCHECK checks liveness
	}
}
