package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// benchTransfers is bench's default --transfers: more files in flight
// than a put -r's default, as the small-file figure has.
const benchTransfers = 16

// benchTree times a recursive put and get of res.TreeFiles files of
// res.TreeFileBytes, res.TreeTransfers at once, through the code of
// `dfs put -r` and `dfs get -r`: the files are written to a local
// temporary directory (100 to a subdirectory), put to /bench/tree, got
// back into another local directory, and then deleted, both sides.
func benchTree(ctx context.Context, cl *client.Client, res *BenchResult, say func(string, ...any)) error {
	if res.TreeFileBytes < 0 || res.TreeFiles < 0 {
		return rpc.Errorf(rpc.Invalid, "the recursive put needs --recursive-files and --recursive-file-size of 0 or more")
	}
	const remote = "/bench/tree"
	dir, err := os.MkdirTemp("", "dfs-bench-tree-*")
	if err != nil {
		return fmt.Errorf("bench: %w", localErr(err))
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src")
	data := make([]byte, res.TreeFileBytes)
	roles.NewPatternReader(res.TreeFileBytes).Read(data)
	for i := range res.TreeFiles {
		p := filepath.Join(src, fmt.Sprintf("%03d", i/100), fmt.Sprintf("%06d", i))
		if i%100 == 0 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return fmt.Errorf("bench: %w", localErr(err))
			}
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return fmt.Errorf("bench: %w", localErr(err))
		}
	}
	if err := cl.RemoveAll(ctx, remote); err != nil {
		return err
	}
	quiet := IO{Err: io.Discard}
	o := transferOptions{recursive: true, transfers: res.TreeTransfers}
	say("putting %d files of %s recursively...", res.TreeFiles, rpc.FormatBytes(res.TreeFileBytes))
	start := time.Now()
	if err := runPutArgs(ctx, cl, quiet, []string{src, remote}, o); err != nil {
		return err
	}
	res.TreePutsPerSec = float64(res.TreeFiles) / time.Since(start).Seconds()
	say("getting them back recursively...")
	start = time.Now()
	if err := runGetArgs(ctx, cl, quiet, []string{remote, filepath.Join(dir, "dst")}, o); err != nil {
		return err
	}
	res.TreeGetsPerSec = float64(res.TreeFiles) / time.Since(start).Seconds()
	return cl.RemoveAll(ctx, remote)
}
