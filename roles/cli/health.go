package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// defaultHealthTimeout bounds one `dfs health` check: below the 5s a
// container HEALTHCHECK gives it, above a loaded server's answer time.
const defaultHealthTimeout = 3 * time.Second

// healthCommand returns `dfs health`: one check of a running coordinator or
// datanode for scripts, supervisors and the container image's HEALTHCHECK
// (which has no shell). It prints one line and exits 0 when the server
// serves, non-zero otherwise.
func (a *app) healthCommand() *cli.Command {
	addr, timeout, live := "127.0.0.1:7000", defaultHealthTimeout, false
	return &cli.Command{
		Name: "health", Usage: "check that a coordinator or datanode is ready (a coordinator: its cluster can take writes): one line, exit 0 if it is, 1 if not", Category: "server",
		Flags: []cli.Flag{
			// DFS_LISTEN comes second: where a role's environment sets its
			// listen address (a container, a systemd environment file), the
			// check follows it without being told.
			&cli.StringFlag{Name: "addr", Value: addr, Destination: &addr, EnvVars: []string{"DFS_HEALTH_ADDR", "DFS_LISTEN"}, Usage: "gRPC address of the server to check (an unspecified host means this machine)"},
			&cli.DurationFlag{Name: "timeout", Value: timeout, Destination: &timeout, EnvVars: env("HEALTH_TIMEOUT"), Usage: "give up after this long"},
			&cli.BoolFlag{Name: "live", Destination: &live, EnvVars: env("HEALTH_LIVE"), Usage: "only check that the server serves (liveness, for container health checks): a coordinator whose cluster cannot take writes passes"},
		},
		Action: exitOneAction(func(c *cli.Context) error {
			if c.NArg() > 0 {
				return rpc.Errorf(rpc.Invalid, "health takes no arguments, got %q (use --addr)", c.Args().First())
			}
			if timeout <= 0 {
				return rpc.Errorf(rpc.Invalid, "health: --timeout must be positive")
			}
			dial, err := healthDialAddr(addr)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context, timeout)
			defer cancel()
			opts, err := a.sec.dialOptions(a.log)
			if err != nil {
				return err
			}
			state, err := checkHealth(ctx, dial, !live, opts...)
			if err != nil {
				return fmt.Errorf("health %s: %w", dial, err)
			}
			fmt.Fprintf(a.stdio.Out, "%s: %s\n", dial, state)
			return nil
		}),
	}
}

// healthDialAddr turns a listen address into one to dial: an empty or
// unspecified host ("0.0.0.0:7000", ":7000", "[::]:7000") means this
// machine's loopback.
func healthDialAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", rpc.Errorf(rpc.Invalid, "health: invalid --addr %q: want host:port", addr)
	}
	ip := net.ParseIP(host)
	switch {
	case host == "" || (ip != nil && ip.IsUnspecified() && ip.To4() != nil):
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}

// checkHealth asks the server at addr whether it serves, through the
// standard gRPC health service. A server without that service is asked
// through the dfs services instead (DataNode.HealthCheck, then
// Coordinator.ListNodes), with the same meaning: a datanode that answers
// and a coordinator that leads (in safe mode too) serve, a standby does
// not. With ready, a coordinator that serves must also say that its
// cluster can take writes (out of safe mode, enough placeable datanodes
// for the replication factor). It returns a short description of the
// server's state, or an error saying why it does not serve or is not
// ready; ctx bounds it all.
func checkHealth(ctx context.Context, addr string, ready bool, opts ...grpc.DialOption) (string, error) {
	cc, err := rpc.Dial(addr, opts...)
	if err != nil {
		return "", err
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	switch {
	case err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING && ready:
		return checkWritable(ctx, cc)
	case err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING:
		return "serving", nil
	case err == nil:
		return "", rpc.Errorf(rpc.Unavailable, "not serving (health status %s)", resp.GetStatus())
	case status.Code(err) == codes.Unimplemented:
		return checkDFSHealth(ctx, cc, ready)
	}
	return "", healthCallError(ctx, err)
}

// checkWritable asks a server that serves whether it is a coordinator
// whose cluster can take writes; any other server is ready once it
// serves.
func checkWritable(ctx context.Context, cc *grpc.ClientConn) (string, error) {
	ln, err := dfspb.NewCoordinatorClient(cc).ListNodes(ctx, &dfspb.ListNodesRequest{})
	switch {
	case status.Code(err) == codes.Unimplemented:
		return "serving", nil // a datanode: serving is ready
	case err != nil:
		return "", healthCallError(ctx, err)
	}
	if r := ln.Readiness; r != nil && !r.Writable {
		return "", rpc.Errorf(rpc.Unavailable, "serving but not ready: %s", r.Reason)
	}
	if r := ln.Readiness; r != nil {
		return fmt.Sprintf("serving, ready (coordinator: %d of %d datanodes can take writes, replication %d)", r.PlaceableNodes, len(ln.Nodes), r.Replication), nil
	}
	return "serving", nil
}

// checkDFSHealth checks a server that has no standard health service with
// the cheapest call each role answers.
func checkDFSHealth(ctx context.Context, cc *grpc.ClientConn, ready bool) (string, error) {
	hc, err := dfspb.NewDataNodeClient(cc).HealthCheck(ctx, &dfspb.HealthCheckRequest{})
	if err == nil {
		return fmt.Sprintf("serving (datanode %s, %d chunks)", rpc.NodeID(hc.NodeId).Short(), hc.ChunkCount), nil
	}
	if status.Code(err) != codes.Unimplemented {
		return "", healthCallError(ctx, err)
	}
	ln, err := dfspb.NewCoordinatorClient(cc).ListNodes(ctx, &dfspb.ListNodesRequest{})
	switch {
	case err == nil && ready && ln.Readiness != nil && !ln.Readiness.Writable:
		return "", rpc.Errorf(rpc.Unavailable, "serving but not ready: %s", ln.Readiness.Reason)
	case err == nil && ln.SafeMode:
		return fmt.Sprintf("serving (coordinator in safe mode: %s)", ln.SafeModeStatus), nil
	case err == nil:
		return fmt.Sprintf("serving (coordinator, %d datanodes)", len(ln.Nodes)), nil
	case status.Code(err) == codes.Unimplemented:
		return "", rpc.Errorf(rpc.FailedPrecondition, "answers gRPC but is neither a coordinator nor a datanode (no health, DataNode or Coordinator service)")
	}
	if ns, ok := rpc.NotServingOf(rpc.FromStatus(err)); ok {
		// As the standard health service has it: a coordinator that
		// starts or stands by does not serve.
		leader := ns.Leader
		if leader == "" {
			leader = "not known yet"
		}
		return "", rpc.Errorf(rpc.Unavailable, "not serving: coordinator standing by (leader %s)", leader)
	}
	return "", healthCallError(ctx, err)
}

// healthCallError renders a failed call as one readable clause.
func healthCallError(ctx context.Context, err error) error {
	st := status.Convert(err)
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || st.Code() == codes.DeadlineExceeded:
		return rpc.Errorf(rpc.DeadlineExceeded, "no answer in time (--timeout)")
	case st.Code() == codes.Unavailable && strings.Contains(st.Message(), "transport"):
		// grpc's message: connection error: desc = "transport: Error
		// while dialing: dial tcp ...: connect: connection refused"
		msg := st.Message()
		if i := strings.LastIndex(msg, "dial "); i >= 0 {
			msg = strings.TrimSuffix(msg[i:], `"`)
		}
		return rpc.Errorf(rpc.Unavailable, "unreachable: %s", msg)
	}
	return rpc.FromStatus(err)
}
