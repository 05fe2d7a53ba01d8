package client

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// IO is where the client commands read and write; tests replace it.
type IO struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
	// Terminal says whether Err is a terminal (progress bars).
	Terminal bool
}

// StdIO returns the process's standard streams.
func StdIO() IO {
	return IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Terminal: isatty.IsTerminal(os.Stderr.Fd())}
}

func env(name string) []string { return []string{"DFS_" + name} }

// CoordinatorFlag is the flag every client command takes.
func CoordinatorFlag() cli.Flag {
	return &cli.StringFlag{
		Name: "coordinator", Value: "127.0.0.1:7000", EnvVars: env("COORDINATOR"),
		Usage: "coordinator address, or a comma-separated list of addresses",
	}
}

func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", EnvVars: env("JSON"), Usage: "print JSON, for scripts"}
}

func failoverFlag() cli.Flag {
	return &cli.DurationFlag{Name: "failover-timeout", Value: DefaultConfig().FailoverTimeout, EnvVars: env("FAILOVER_TIMEOUT"), Usage: "how long to keep retrying while coordinators elect a leader or wait in safe mode"}
}

func tuningFlags() []cli.Flag {
	d := DefaultConfig()
	return []cli.Flag{
		&cli.IntFlag{Name: "parallel", Value: d.Parallel, EnvVars: env("PARALLEL"), Usage: "chunks in flight at once"},
		&cli.DurationFlag{Name: "rpc-timeout", Value: d.RPCTimeout, EnvVars: env("RPC_TIMEOUT"), Usage: "timeout of each call to the coordinator"},
		&cli.DurationFlag{Name: "chunk-timeout", Value: d.ChunkTimeout, EnvVars: env("CHUNK_TIMEOUT"), Usage: "timeout for moving one chunk"},
		&cli.DurationFlag{Name: "stream-progress-timeout", Value: d.ProgressTimeout, EnvVars: env("STREAM_PROGRESS_TIMEOUT"), Usage: "a chunk stream whose datanode shows no progress this long fails; the chunk goes to (or is read from) another node"},
		failoverFlag(),
	}
}

// Commands returns the client commands: put, get, rm, ls, stat, nodes.
// log gives the logger (built once flags are parsed); stdio is where
// results go.
func Commands(log func() zerolog.Logger, stdio IO) []*cli.Command {
	d := DefaultConfig()
	withClient := func(fn func(ctx context.Context, c *cli.Context, cl *Client) error) cli.ActionFunc {
		return func(c *cli.Context) error {
			cl, err := New(ConfigFromFlags(c), log())
			if err != nil {
				return err
			}
			defer cl.Close()
			return fn(c.Context, c, cl)
		}
	}
	return []*cli.Command{
		{
			Name: "put", Usage: "store a local file (or - for stdin) at a remote path", ArgsUsage: "LOCAL REMOTE",
			Category: "client",
			Flags: append([]cli.Flag{CoordinatorFlag(),
				&cli.GenericFlag{Name: "chunk-size", Value: new(rpc.ByteSize), EnvVars: env("CHUNK_SIZE"), Usage: "chunk size, up to 64MiB (default: the coordinator's)"},
				&cli.GenericFlag{Name: "frame-size", Value: ptr(rpc.ByteSize(d.FrameSize)), EnvVars: env("FRAME_SIZE"), Usage: "frame size within a chunk"},
				&cli.IntFlag{Name: "replication", EnvVars: env("REPLICATION"), Usage: "replication factor (default: the coordinator's)"},
			}, tuningFlags()...),
			Action: withClient(func(ctx context.Context, c *cli.Context, cl *Client) error {
				if c.NArg() != 2 {
					return rpc.Errorf(rpc.Invalid, "put needs LOCAL and REMOTE (see dfs put --help)")
				}
				return runPut(ctx, cl, stdio, c.Args().Get(0), c.Args().Get(1))
			}),
		},
		{
			Name: "get", Usage: "read a remote file into a local file (or - for stdout)", ArgsUsage: "REMOTE LOCAL",
			Category: "client",
			Flags:    append([]cli.Flag{CoordinatorFlag()}, tuningFlags()...),
			Action: withClient(func(ctx context.Context, c *cli.Context, cl *Client) error {
				if c.NArg() != 2 {
					return rpc.Errorf(rpc.Invalid, "get needs REMOTE and LOCAL (see dfs get --help)")
				}
				return runGet(ctx, cl, stdio, c.Args().Get(0), c.Args().Get(1))
			}),
		},
		{
			Name: "rm", Usage: "delete a remote file", ArgsUsage: "REMOTE", Category: "client",
			Flags: []cli.Flag{CoordinatorFlag(), failoverFlag()},
			Action: withClient(func(ctx context.Context, c *cli.Context, cl *Client) error {
				if c.NArg() != 1 {
					return rpc.Errorf(rpc.Invalid, "rm needs one REMOTE path")
				}
				return cl.Delete(ctx, c.Args().First())
			}),
		},
		{
			Name: "ls", Usage: "list a remote directory", ArgsUsage: "[PATH]", Category: "client",
			Flags: []cli.Flag{CoordinatorFlag(), failoverFlag(),
				&cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, EnvVars: env("LS_RECURSIVE"), Usage: "list everything below PATH"},
				&cli.BoolFlag{Name: "long", Aliases: []string{"l"}, EnvVars: env("LS_LONG"), Usage: "show size, chunks, replication and modification time"},
				jsonFlag(),
			},
			Action: withClient(func(ctx context.Context, c *cli.Context, cl *Client) error {
				if c.NArg() > 1 {
					return rpc.Errorf(rpc.Invalid, "ls takes at most one PATH")
				}
				dir := c.Args().First()
				if dir == "" {
					dir = "/"
				}
				entries, err := cl.List(ctx, dir, c.Bool("recursive"))
				if err != nil {
					return fmt.Errorf("ls %s: %w", ShowPath(dir), err)
				}
				return printList(stdio.Out, entries, c.Bool("long"), c.Bool("json"))
			}),
		},
		{
			Name: "stat", Usage: "show a remote file's size, SHA-256, chunks and replicas", ArgsUsage: "REMOTE",
			Category: "client",
			Flags:    []cli.Flag{CoordinatorFlag(), failoverFlag(), jsonFlag()},
			Action: withClient(func(ctx context.Context, c *cli.Context, cl *Client) error {
				if c.NArg() != 1 {
					return rpc.Errorf(rpc.Invalid, "stat needs one REMOTE path")
				}
				fi, err := cl.Stat(ctx, c.Args().First())
				if err != nil {
					return fmt.Errorf("stat %s: %w", ShowPath(c.Args().First()), err)
				}
				return printStat(stdio.Out, fi, c.Bool("json"))
			}),
		},
		{
			Name: "admin", Usage: "cluster administration", Category: "admin",
			Subcommands: []*cli.Command{
				{
					Name: "decommission", Usage: "drain a datanode: copy its chunks elsewhere and stop placing new ones on it",
					ArgsUsage: "NODE-ID",
					Flags: []cli.Flag{CoordinatorFlag(), failoverFlag(),
						&cli.BoolFlag{Name: "cancel", EnvVars: env("DECOMMISSION_CANCEL"), Usage: "stop draining the node"}},
					Action: withClient(func(ctx context.Context, c *cli.Context, cl *Client) error {
						if c.NArg() != 1 {
							return rpc.Errorf(rpc.Invalid, "admin decommission needs one NODE-ID (or a unique prefix of it)")
						}
						n, err := cl.Decommission(ctx, c.Args().First(), c.Bool("cancel"))
						if err != nil {
							return fmt.Errorf("admin decommission: %w", err)
						}
						state := "draining; dfs nodes shows when it is safe to remove"
						switch {
						case !n.Draining:
							state = "no longer draining"
						case n.Decommissioned:
							state = "decommissioned: safe to remove"
						}
						fmt.Fprintf(stdio.Out, "%s (%s): %s\n", n.NodeId, n.Addr, state)
						return nil
					}),
				},
				{
					Name: "backup", Usage: "write a consistent snapshot of the metadata to FILE (restore with dfs coordinator --restore)",
					ArgsUsage: "FILE",
					Flags:     []cli.Flag{CoordinatorFlag(), failoverFlag()},
					Action: withClient(func(ctx context.Context, c *cli.Context, cl *Client) error {
						if c.NArg() != 1 {
							return rpc.Errorf(rpc.Invalid, "admin backup needs one FILE")
						}
						return runBackup(ctx, cl, c.Args().First())
					}),
				},
			},
		},
		{
			Name: "fsck", Usage: "list files with missing, under-replicated or corrupt chunks; fails if any", ArgsUsage: "[PATH]",
			Category: "admin",
			Flags:    []cli.Flag{CoordinatorFlag(), failoverFlag(), jsonFlag()},
			Action: withClient(func(ctx context.Context, c *cli.Context, cl *Client) error {
				if c.NArg() > 1 {
					return rpc.Errorf(rpc.Invalid, "fsck takes at most one PATH")
				}
				path := c.Args().First()
				if path == "" {
					path = "/"
				}
				files, sum, err := cl.Fsck(ctx, path)
				if err != nil {
					return fmt.Errorf("fsck %s: %w", ShowPath(path), err)
				}
				if err := printFsck(stdio.Out, files, sum, c.Bool("json")); err != nil {
					return err
				}
				if sum.UnreadableFiles > 0 || sum.UnderReplicatedFiles > 0 {
					return rpc.Errorf(rpc.FailedPrecondition, "fsck %s: %d files unreadable, %d not fully replicated", ShowPath(path), sum.UnreadableFiles, sum.UnderReplicatedFiles)
				}
				return nil
			}),
		},
		{
			Name: "nodes", Usage: "list the datanodes", Category: "client",
			Flags: []cli.Flag{CoordinatorFlag(), failoverFlag(), jsonFlag()},
			Action: withClient(func(ctx context.Context, c *cli.Context, cl *Client) error {
				if c.NArg() != 0 {
					return rpc.Errorf(rpc.Invalid, "nodes takes no arguments")
				}
				resp, err := cl.Nodes(ctx)
				if err != nil {
					return fmt.Errorf("nodes: %w", err)
				}
				return printNodes(stdio.Out, resp, c.Bool("json"))
			}),
		},
	}
}

func ptr[T any](v T) *T { return &v }

// ConfigFromFlags builds a client configuration from the command's flags.
func ConfigFromFlags(c *cli.Context) Config {
	cfg := DefaultConfig()
	cfg.Coordinators = SplitAddrs(c.String("coordinator"))
	if c.IsSet("parallel") {
		cfg.Parallel = c.Int("parallel")
	}
	if c.IsSet("rpc-timeout") {
		cfg.RPCTimeout = c.Duration("rpc-timeout")
	}
	if c.IsSet("failover-timeout") {
		cfg.FailoverTimeout = c.Duration("failover-timeout")
	}
	if c.IsSet("chunk-timeout") {
		cfg.ChunkTimeout = c.Duration("chunk-timeout")
	}
	if c.IsSet("stream-progress-timeout") {
		cfg.ProgressTimeout = c.Duration("stream-progress-timeout")
	}
	if v, ok := c.Generic("chunk-size").(*rpc.ByteSize); ok {
		cfg.ChunkSize = int64(*v)
	}
	if v, ok := c.Generic("frame-size").(*rpc.ByteSize); ok {
		cfg.FrameSize = int64(*v)
	}
	if c.IsSet("replication") {
		cfg.Replication = c.Int("replication")
	}
	return cfg
}

// SplitAddrs splits a comma-separated address list.
func SplitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func progressBar(stdio IO, size int64, what string) (Progress, func()) {
	if !stdio.Terminal {
		return nil, func() {}
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(stdio.Err),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionClearOnFinish(),
	)
	return func(n int64) { bar.Add64(n) }, func() { bar.Finish() }
}

func runPut(ctx context.Context, cl *Client, stdio IO, local, remote string) error {
	var r io.Reader
	size := int64(-1)
	if local == "-" {
		r = stdio.In
	} else {
		f, err := os.Open(local)
		if err != nil {
			return fmt.Errorf("put %s: %w", ShowPath(remote), localErr(err))
		}
		defer f.Close()
		info, err := f.Stat()
		if err != nil {
			return fmt.Errorf("put %s: %w", ShowPath(remote), localErr(err))
		}
		if !info.Mode().IsRegular() {
			return rpc.Errorf(rpc.Invalid, "put %s: %s is not a regular file", ShowPath(remote), ShowPath(local))
		}
		r, size = f, info.Size()
	}
	progress, done := progressBar(stdio, size, "put "+remote)
	defer done()
	_, err := cl.Put(ctx, remote, r, size, progress)
	return err
}

func localErr(err error) error {
	if os.IsNotExist(err) {
		return rpc.Errorf(rpc.NotFound, "local file: %v", err)
	}
	return rpc.Errorf(rpc.Invalid, "local file: %v", err)
}

func runGet(ctx context.Context, cl *Client, stdio IO, remote, local string) error {
	if local == "-" {
		_, err := cl.Get(ctx, remote, stdio.Out, nil)
		return err
	}
	if info, err := os.Stat(local); err == nil && info.IsDir() {
		local = filepath.Join(local, filepath.Base(remote))
	}
	// Write beside the target and rename once verified: a failed get
	// leaves no partial file and any earlier file intact.
	tmp, err := os.CreateTemp(filepath.Dir(local), "."+filepath.Base(local)+".dfs-*")
	if err != nil {
		return fmt.Errorf("get %s: %w", ShowPath(remote), localErr(err))
	}
	defer os.Remove(tmp.Name())
	fi, err := cl.head(ctx, remote) // the size, without the chunk map
	size := int64(-1)
	if err == nil {
		size = fi.Size
	}
	progress, done := progressBar(stdio, size, "get "+remote)
	_, err = cl.Get(ctx, remote, tmp, progress)
	done()
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), local); err != nil {
		return fmt.Errorf("get %s: %w", ShowPath(remote), localErr(err))
	}
	return nil
}

// runBackup writes the backup beside file and renames it into place once
// it is complete and fsynced, so a failed backup never leaves a file that
// looks whole.
func runBackup(ctx context.Context, cl *Client, file string) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".dfs-*")
	if err != nil {
		return fmt.Errorf("admin backup: %w", localErr(err))
	}
	defer os.Remove(tmp.Name())
	err = cl.Backup(ctx, tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("admin backup: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("admin backup: %w", localErr(err))
	}
	return nil
}

// listJSON is one entry of `ls --json`.
type listJSON struct {
	Path        string    `json:"path"`
	Dir         bool      `json:"dir"`
	Size        int64     `json:"size"`
	Chunks      uint32    `json:"chunks,omitempty"`
	Replication uint32    `json:"replication,omitempty"`
	Modified    time.Time `json:"modified,omitzero"`
}

func printList(w io.Writer, entries []*dfspb.ListEntry, long, asJSON bool) error {
	if asJSON {
		out := make([]listJSON, 0, len(entries))
		for _, e := range entries {
			j := listJSON{Path: e.Path, Dir: e.IsDir, Size: e.Size, Chunks: e.Chunks, Replication: e.Replication}
			if !e.IsDir {
				j.Modified = time.UnixMilli(e.ModifiedUnixMs).UTC()
			}
			out = append(out, j)
		}
		return writeJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, e := range entries {
		name := e.Path
		if e.IsDir {
			name += "/"
		}
		if !long {
			fmt.Fprintln(tw, name)
			continue
		}
		if e.IsDir {
			fmt.Fprintf(tw, "d\t-\t-\t-\t-\t%s\n", name)
			continue
		}
		fmt.Fprintf(tw, "-\t%d\t%d chunks\tx%d\t%s\t%s\n", e.Size, e.Chunks, e.Replication,
			time.UnixMilli(e.ModifiedUnixMs).UTC().Format(time.RFC3339), name)
	}
	return tw.Flush()
}

type replicaJSON struct {
	NodeID string `json:"node_id"`
	Addr   string `json:"addr"`
	State  string `json:"state"`
}

type chunkJSON struct {
	Index     uint32        `json:"index"`
	ID        string        `json:"id"`
	Offset    int64         `json:"offset"`
	Size      int64         `json:"size"`
	Digest    string        `json:"digest"`
	FrameSize int64         `json:"frame_size"`
	Replicas  []replicaJSON `json:"replicas"`
}

type statJSON struct {
	Path        string      `json:"path"`
	Size        int64       `json:"size"`
	SHA256      string      `json:"sha256"`
	ChunkSize   int64       `json:"chunk_size"`
	Replication uint32      `json:"replication"`
	Version     uint64      `json:"version"`
	Modified    time.Time   `json:"modified"`
	Chunks      []chunkJSON `json:"chunks"`
}

// StateName renders a node state for people and scripts.
func StateName(s dfspb.NodeState) string {
	return stateFromProto(s).String()
}

func printStat(w io.Writer, fi *dfspb.FileInfo, asJSON bool) error {
	j := statJSON{
		Path: fi.Path, Size: fi.Size, SHA256: hex.EncodeToString(fi.Sha256), ChunkSize: fi.ChunkSize,
		Replication: fi.Replication, Version: fi.Version, Modified: time.UnixMilli(fi.ModifiedUnixMs).UTC(),
		Chunks: []chunkJSON{},
	}
	for _, ch := range fi.Chunks {
		cj := chunkJSON{Index: ch.Index, ID: ch.ChunkId, Offset: ch.Offset, Size: ch.Size, Digest: hex.EncodeToString(ch.Digest), FrameSize: ch.FrameSize, Replicas: []replicaJSON{}}
		for _, r := range ch.Replicas {
			cj.Replicas = append(cj.Replicas, replicaJSON{NodeID: r.NodeId, Addr: r.Addr, State: StateName(r.State)})
		}
		j.Chunks = append(j.Chunks, cj)
	}
	if asJSON {
		return writeJSON(w, j)
	}
	fmt.Fprintf(w, "path:        %s\n", j.Path)
	fmt.Fprintf(w, "size:        %d (%s)\n", j.Size, rpc.FormatBytes(j.Size))
	fmt.Fprintf(w, "sha256:      %s\n", j.SHA256)
	fmt.Fprintf(w, "chunk size:  %s\n", rpc.FormatBytes(j.ChunkSize))
	fmt.Fprintf(w, "replication: %d\n", j.Replication)
	fmt.Fprintf(w, "version:     %d\n", j.Version)
	fmt.Fprintf(w, "modified:    %s\n", j.Modified.Format(time.RFC3339))
	fmt.Fprintf(w, "chunks:      %d\n", len(j.Chunks))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range j.Chunks {
		var reps []string
		for _, r := range c.Replicas {
			reps = append(reps, fmt.Sprintf("%s@%s(%s)", rpc.NodeID(r.NodeID).Short(), r.Addr, r.State))
		}
		fmt.Fprintf(tw, "  %d\t%s\t%d\t%s\n", c.Index, c.ID, c.Size, strings.Join(reps, " "))
	}
	return tw.Flush()
}

type nodeJSON struct {
	NodeID         string `json:"node_id"`
	Addr           string `json:"addr"`
	State          string `json:"state"`
	Draining       bool   `json:"draining,omitempty"`
	Decommissioned bool   `json:"decommissioned,omitempty"`
	CorruptChunks  int64  `json:"corrupt_chunks,omitempty"`
	// ConflictAddr is another address a registration with this node ID
	// came from lately, refused because the node was alive here.
	ConflictAddr string `json:"conflict_addr,omitempty"`
	// DiskError is why the node takes no new chunks (its disk is not
	// writable); FailingUntil, while set, is when the coordinator stops
	// placing it last after reports of failed streams.
	DiskError     string     `json:"disk_error,omitempty"`
	FailingUntil  *time.Time `json:"failing_until,omitempty"`
	Capacity      int64      `json:"capacity"`
	Used          int64      `json:"used"`
	Free          int64      `json:"free"`
	Chunks        int64      `json:"chunks"`
	LastHeartbeat time.Time  `json:"last_heartbeat"`
}

func printNodes(w io.Writer, resp *dfspb.ListNodesResponse, asJSON bool) error {
	out := make([]nodeJSON, 0, len(resp.Nodes))
	for _, n := range resp.Nodes {
		j := nodeJSON{
			NodeID: n.NodeId, Addr: n.Addr, State: StateName(n.State), Draining: n.Draining, Decommissioned: n.Decommissioned,
			CorruptChunks: n.CorruptChunks, ConflictAddr: n.ConflictAddr, DiskError: n.DiskError, Capacity: n.Capacity, Used: n.Used,
			Free: n.Free, Chunks: n.ChunkCount, LastHeartbeat: time.UnixMilli(n.LastHeartbeatUnixMs).UTC(),
		}
		if n.FailingUntilUnixMs > 0 {
			j.FailingUntil = ptr(time.UnixMilli(n.FailingUntilUnixMs).UTC())
		}
		out = append(out, j)
	}
	if asJSON {
		return writeJSON(w, out)
	}
	if resp.SafeMode {
		fmt.Fprintf(w, "coordinator %s in safe mode: %s\n", resp.Leader, resp.SafeModeStatus)
	} else if r := resp.Readiness; r != nil && !r.Writable {
		fmt.Fprintf(w, "writes refused: %s\n", r.Reason)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tSTATE\tUSED/CAPACITY\tCHUNKS\tLAST HEARTBEAT")
	for _, n := range out {
		state := n.State
		switch {
		case n.Decommissioned:
			state += ", decommissioned (safe to remove)"
		case n.Draining:
			state += ", draining"
		}
		if n.CorruptChunks > 0 {
			state += fmt.Sprintf(", %d corrupt", n.CorruptChunks)
		}
		if n.ConflictAddr != "" {
			state += fmt.Sprintf(", ID also claimed from %s (refused)", n.ConflictAddr)
		}
		if n.DiskError != "" {
			state += ", disk not writable (no new chunks)"
		}
		if n.FailingUntil != nil {
			state += fmt.Sprintf(", failing streams (placed last for %s)", time.Until(*n.FailingUntil).Round(time.Second))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s / %s\t%d\t%s ago\n", n.NodeID, n.Addr, state,
			rpc.FormatBytes(n.Used), rpc.FormatBytes(n.Capacity), n.Chunks, time.Since(n.LastHeartbeat).Round(100*time.Millisecond))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range out {
		if n.DiskError != "" {
			fmt.Fprintf(w, "datanode %s: %s\n", rpc.NodeID(n.NodeID).Short(), n.DiskError)
		}
	}
	if h := resp.Health; h != nil {
		fmt.Fprintf(w, "\nchunks: %d, under-replicated: %d (no live copy: %d), corrupt copies: %d\n", h.Chunks, h.UnderReplicated, h.Missing, h.CorruptCopies)
		fmt.Fprintf(w, "repairs: %d in progress, %d done (%s copied)\n", h.RepairsInProgress, h.RepairsDone, rpc.FormatBytes(h.BytesRepaired))
		fmt.Fprintf(w, "deletions: %d pending, %d chunks deleted (%s reclaimed), %d orphans collected\n", h.PendingDeletions, h.ChunksDeleted, rpc.FormatBytes(h.BytesReclaimed), h.OrphansDeleted)
	}
	return nil
}

type fsckChunkJSON struct {
	Index        uint32   `json:"index"`
	ID           string   `json:"id"`
	Replication  uint32   `json:"replication"`
	Live         uint32   `json:"live"`
	CorruptNodes []string `json:"corrupt_nodes,omitempty"`
	DeadNodes    []string `json:"dead_nodes,omitempty"`
	Repairing    bool     `json:"repairing,omitempty"`
}

type fsckFileJSON struct {
	Path       string          `json:"path"`
	Size       int64           `json:"size"`
	Unreadable bool            `json:"unreadable"`
	Chunks     []fsckChunkJSON `json:"chunks"`
}

type fsckJSON struct {
	Files                []fsckFileJSON `json:"files"`
	FilesChecked         int64          `json:"files_checked"`
	ChunksChecked        int64          `json:"chunks_checked"`
	Healthy              int64          `json:"healthy_files"`
	UnderReplicatedFiles int64          `json:"under_replicated_files"`
	UnreadableFiles      int64          `json:"unreadable_files"`
	UnderReplicated      int64          `json:"under_replicated_chunks"`
	CorruptCopies        int64          `json:"corrupt_copies"`
	RepairsInProgress    int64          `json:"repairs_in_progress"`
	BytesReclaimed       int64          `json:"bytes_reclaimed"`
}

func printFsck(w io.Writer, files []*dfspb.FsckFile, sum *dfspb.FsckSummary, asJSON bool) error {
	j := fsckJSON{Files: []fsckFileJSON{}, FilesChecked: sum.Files, ChunksChecked: sum.Chunks, Healthy: sum.HealthyFiles,
		UnderReplicatedFiles: sum.UnderReplicatedFiles, UnreadableFiles: sum.UnreadableFiles}
	if h := sum.Health; h != nil {
		j.UnderReplicated, j.CorruptCopies, j.RepairsInProgress, j.BytesReclaimed = h.UnderReplicated, h.CorruptCopies, h.RepairsInProgress, h.BytesReclaimed
	}
	for _, f := range files {
		fj := fsckFileJSON{Path: f.Path, Size: f.Size, Unreadable: f.Unreadable, Chunks: []fsckChunkJSON{}}
		for _, c := range f.Chunks {
			fj.Chunks = append(fj.Chunks, fsckChunkJSON{Index: c.Index, ID: c.ChunkId, Replication: c.Replication, Live: c.Live,
				CorruptNodes: c.CorruptNodes, DeadNodes: c.DeadNodes, Repairing: c.Repairing})
		}
		j.Files = append(j.Files, fj)
	}
	if asJSON {
		return writeJSON(w, j)
	}
	for _, f := range j.Files {
		what := "under-replicated"
		if f.Unreadable {
			what = "UNREADABLE"
		}
		fmt.Fprintf(w, "%s: %s\n", ShowPath(f.Path), what)
		for _, c := range f.Chunks {
			fmt.Fprintf(w, "  chunk %d %s: %d of %d live copies", c.Index, c.ID, c.Live, c.Replication)
			if len(c.CorruptNodes) > 0 {
				fmt.Fprintf(w, ", corrupt on %d", len(c.CorruptNodes))
			}
			if len(c.DeadNodes) > 0 {
				fmt.Fprintf(w, ", on %d dead nodes", len(c.DeadNodes))
			}
			if c.Repairing {
				fmt.Fprint(w, ", repairing")
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintf(w, "%d files, %d chunks: %d healthy, %d under-replicated, %d unreadable; %d repairs in progress\n",
		j.FilesChecked, j.ChunksChecked, j.Healthy, j.UnderReplicatedFiles, j.UnreadableFiles, j.RepairsInProgress)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
