package main

import (
	"fmt"
	"net/http"
	_ "net/http/pprof" // served only when DFS_PPROF_LISTEN is set
	"os"
	"slices"
)

// servePprof serves net/http/pprof on DFS_PPROF_LISTEN (a 127.0.0.1
// address) for a coordinator, so that `dfs bench scale` runs can be
// profiled. Unset, nothing is served.
func servePprof(args []string) {
	addr := os.Getenv("DFS_PPROF_LISTEN")
	if addr == "" || !slices.Contains(args, "coordinator") {
		return
	}
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			fmt.Fprintln(os.Stderr, "dfs: pprof:", err)
		}
	}()
}
