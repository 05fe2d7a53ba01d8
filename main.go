// Command dfs is a distributed file system in one binary: it runs as the
// coordinator, as a datanode, as a whole development cluster, or as the
// client (put, get, rm, ls, stat, mv, cp, mkdir, du, nodes, bench). The
// command line lives in roles/cli.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/dfs-project/dfs/roles/cli"
)

// Set at build time by the Makefile.
var (
	version = "dev"
	commit  = "none"
)

func main() {
	os.Exit(run(os.Args))
}

func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// A second signal stops at once.
		<-ctx.Done()
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		fmt.Fprintln(os.Stderr, "dfs: interrupted twice, exiting")
		os.Exit(130)
	}()
	return cli.Run(ctx, args, cli.Version{Version: version, Commit: commit}, cli.StdIO(), os.Stderr)
}
