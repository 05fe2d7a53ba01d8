// Package grpctest serves fake gRPC servers for tests: a coordinator or a
// datanode that answers as a test needs, on a loopback port.
package grpctest

import (
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/dfs-project/dfs/rpc"
)

// Serve serves what register registers, with dfs's server options and
// no log, on a free loopback port until t ends, and returns the address.
func Serve(t testing.TB, register func(*grpc.Server)) string {
	t.Helper()
	srv := grpc.NewServer(rpc.ServerOptions(zerolog.Nop())...)
	register(srv)
	lis, err := rpc.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}
