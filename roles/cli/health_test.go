package cli

// Tests of `dfs health`, run in process through App against a real
// cluster and against small gRPC servers that play the other cases: the
// standard health service serving or not, a server with no dfs service, a
// standby coordinator, a silent listener, nothing listening.

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// healthRun runs `dfs health args...` in process.
func healthRun(t *testing.T, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	return dfsRun(ctx, nil, append([]string{"health"}, args...)...)
}

// startGRPC serves srv on a loopback port until the test ends and returns
// the address; register adds services to it.
func startGRPC(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// standbyCoordinator answers ListNodes as a standby does.
type standbyCoordinator struct {
	dfspb.UnimplementedCoordinatorServer
}

func (standbyCoordinator) ListNodes(context.Context, *dfspb.ListNodesRequest) (*dfspb.ListNodesResponse, error) {
	return nil, rpc.ToStatus(rpc.NotServingError("coord2:7000", time.Second, "standing by: coord2:7000 leads"))
}

// checkFailure fails the test unless the command failed with one line
// on stderr that says want.
func checkFailure(t *testing.T, r cmdResult, want string) {
	t.Helper()
	is := is.New(t)
	is.True(r.err != nil)                              // the check fails (exit 1)
	is.Equal(r.out, "")                                // nothing on stdout
	is.True(!strings.Contains(r.err.Error(), "\n"))    // one line
	is.True(strings.Contains(r.err.Error(), "health")) // the message names the command
	if !strings.Contains(r.err.Error(), want) {
		t.Errorf("dfs health: %q, want it to say %q", r.err, want)
	}
}

func TestHealth(t *testing.T) {
	t.Run("Cluster", func(t *testing.T) {
		is := is.New(t)
		c := startInprocCluster(t)
		addrs := []string{c.Addr()}
		for _, n := range c.Nodes() {
			addrs = append(addrs, n.Node.Addr())
		}
		for _, addr := range addrs {
			r := healthRun(t, "--addr", addr)
			is.NoErr(r.err)                                     // a running coordinator or datanode is healthy
			is.True(strings.HasPrefix(r.out, addr+": serving")) // one line naming the address
			is.Equal(strings.Count(r.out, "\n"), 1)             // exactly one line
		}
	})

	t.Run("NotWritable", func(t *testing.T) {
		// Two datanodes, replication 3: the coordinator serves, but every
		// put would fail, so it is not ready; --live only asks whether it
		// serves.
		is := is.New(t)
		c := startInprocCluster(t, func(cfg *roles.ClusterConfig) { cfg.Nodes = 2 })
		checkFailure(t, healthRun(t, "--addr", c.Addr()), "serving but not ready: cannot take writes: not enough datanodes: need 3 for replication, 2 usable")
		nodes := dfsRun(t.Context(), nil, "nodes", "--coordinator", c.Addr())
		is.NoErr(nodes.err)
		is.True(strings.HasPrefix(nodes.out, "writes refused: cannot take writes: not enough datanodes")) // dfs nodes says it first
		r := healthRun(t, "--addr", c.Addr(), "--live")
		is.NoErr(r.err)                         // it is alive
		is.Equal(r.out, c.Addr()+": serving\n") // and says so
		_, err := c.AddNode()
		is.NoErr(err) // a third datanode
		is.NoErr(c.WaitHealthy(3, time.Minute))
		r = healthRun(t, "--addr", c.Addr())
		is.NoErr(r.err)                                                                     // makes the cluster ready
		is.True(strings.HasPrefix(r.out, c.Addr()+": serving, ready (coordinator: 3 of 3")) // and the line says so
	})

	t.Run("StandardServing", func(t *testing.T) {
		is := is.New(t)
		addr := startGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, health.NewServer()) })
		r := healthRun(t, "--addr", addr)
		is.NoErr(r.err)                     // SERVING is healthy
		is.Equal(r.out, addr+": serving\n") // the line says so
	})

	t.Run("StandardNotServing", func(t *testing.T) {
		hs := health.NewServer()
		hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		addr := startGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
		checkFailure(t, healthRun(t, "--addr", addr), "not serving (health status NOT_SERVING)")
	})

	t.Run("Standby", func(t *testing.T) {
		addr := startGRPC(t, func(s *grpc.Server) { dfspb.RegisterCoordinatorServer(s, standbyCoordinator{}) })
		checkFailure(t, healthRun(t, "--addr", addr), "not serving: coordinator standing by (leader coord2:7000)")
	})

	t.Run("NotDFS", func(t *testing.T) {
		addr := startGRPC(t, func(*grpc.Server) {})
		checkFailure(t, healthRun(t, "--addr", addr), "neither a coordinator nor a datanode")
	})

	t.Run("NothingListens", func(t *testing.T) {
		addr := rolestest.FreeAddr(t)
		checkFailure(t, healthRun(t, "--addr", addr), "unreachable")
	})

	t.Run("Silent", func(t *testing.T) {
		addr := rolestest.SilentListener(t)
		checkFailure(t, healthRun(t, "--addr", addr, "--timeout", "300ms"), "no answer in time")
	})

	t.Run("ListenAddress", func(t *testing.T) {
		// An unspecified host means this machine, so the role's own
		// DFS_LISTEN finds it; DFS_HEALTH_ADDR wins over it.
		is := is.New(t)
		addr := startGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, health.NewServer()) })
		_, port, err := net.SplitHostPort(addr)
		is.NoErr(err)
		t.Setenv("DFS_LISTEN", "0.0.0.0:"+port)
		r := healthRun(t)
		is.NoErr(r.err)                                  // DFS_LISTEN's port on loopback
		is.Equal(r.out, "127.0.0.1:"+port+": serving\n") // the dialed address
		r = healthRun(t, "--addr", ":"+port)
		is.NoErr(r.err) // an empty host is loopback too
		t.Setenv("DFS_HEALTH_ADDR", rolestest.FreeAddr(t))
		checkFailure(t, healthRun(t), "unreachable")
	})

	t.Run("BadInput", func(t *testing.T) {
		checkFailure(t, healthRun(t, "--addr", "127.0.0.1"), `invalid --addr "127.0.0.1"`)
		checkFailure(t, healthRun(t, "--timeout", "0s"), "--timeout must be positive")
		checkFailure(t, healthRun(t, "127.0.0.1:7000"), "health takes no arguments")
	})
}
