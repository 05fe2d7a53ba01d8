package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// clientFlags are the flags of a client command: each sets a field of
// cfg, with that field's value as its default. tuning adds the flags of
// the commands that move chunks.
func clientFlags(cfg *client.Config, tuning bool, more ...cli.Flag) []cli.Flag {
	flags := []cli.Flag{
		addrsFlag("coordinator", &cfg.Coordinators, env("COORDINATOR"), "coordinator address, or a comma-separated list of addresses"),
	}
	flags = append(flags, more...)
	if tuning {
		flags = append(flags,
			&cli.IntFlag{Name: "parallel", Value: cfg.Parallel, Destination: &cfg.Parallel, EnvVars: env("PARALLEL"), Usage: "chunks in flight at once"},
			&cli.DurationFlag{Name: "rpc-timeout", Value: cfg.RPCTimeout, Destination: &cfg.RPCTimeout, EnvVars: env("RPC_TIMEOUT"), Usage: "timeout of each call to the coordinator"},
			&cli.DurationFlag{Name: "chunk-timeout", Value: cfg.ChunkTimeout, Destination: &cfg.ChunkTimeout, EnvVars: env("CHUNK_TIMEOUT"), Usage: "timeout for moving one chunk"},
			&cli.DurationFlag{Name: "stream-progress-timeout", Value: cfg.ProgressTimeout, Destination: &cfg.ProgressTimeout, EnvVars: env("STREAM_PROGRESS_TIMEOUT"), Usage: "a chunk stream whose datanode shows no progress this long fails; the chunk goes to (or is read from) another node"},
		)
	}
	return append(flags, &cli.DurationFlag{Name: "failover-timeout", Value: cfg.FailoverTimeout, Destination: &cfg.FailoverTimeout, EnvVars: env("FAILOVER_TIMEOUT"), Usage: "how long to keep retrying while coordinators elect a leader or wait in safe mode"})
}

func jsonFlag(dst *bool) cli.Flag {
	return &cli.BoolFlag{Name: "json", Destination: dst, EnvVars: env("JSON"), Usage: "print JSON, for scripts"}
}

// withClient runs fn with a client built from cfg once the flags are set.
func (a *app) withClient(cfg *client.Config, fn func(ctx context.Context, c *cli.Context, cl *client.Client) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		cfg.Logger = &a.log
		if err := a.sec.client(cfg); err != nil {
			return err
		}
		cl, err := client.New(c.Context, *cfg)
		if err != nil {
			return err
		}
		defer cl.Close()
		return fn(c.Context, c, cl)
	}
}

func (a *app) putCommand() *cli.Command {
	cfg := client.DefaultConfig()
	o := transferOptions{transfers: defaultTransfers}
	return &cli.Command{
		Name: "put", Usage: "store local files (or - for stdin) at a remote path, or in a remote directory", ArgsUsage: "LOCAL... REMOTE",
		Category: "client",
		Flags: clientFlags(&cfg, true,
			&cli.GenericFlag{Name: "chunk-size", Value: byteSize(&cfg.ChunkSize), EnvVars: env("CHUNK_SIZE"), Usage: "chunk size, up to 64MiB (default: the coordinator's)"},
			&cli.GenericFlag{Name: "frame-size", Value: byteSize(&cfg.FrameSize), EnvVars: env("FRAME_SIZE"), Usage: "frame size within a chunk"},
			&cli.IntFlag{Name: "replication", Value: cfg.Replication, Destination: &cfg.Replication, EnvVars: env("REPLICATION"), Usage: "replication factor (default: the coordinator's)"},
			&cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, Destination: &o.recursive, EnvVars: env("PUT_RECURSIVE"), Usage: "put directories and everything below them"},
			&cli.BoolFlag{Name: "no-clobber", Aliases: []string{"n"}, Destination: &o.noClobber, EnvVars: env("PUT_NO_CLOBBER"), Usage: "refuse to replace a remote file that exists (checked before any byte is sent)"},
			transfersFlag(&o.transfers),
		),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() < 2 {
				return rpc.Errorf(rpc.Invalid, "put needs LOCAL and REMOTE (see dfs put --help)")
			}
			return runPutArgs(ctx, cl, a.stdio, c.Args().Slice(), o)
		}),
	}
}

func (a *app) getCommand() *cli.Command {
	cfg := client.DefaultConfig()
	o := transferOptions{transfers: defaultTransfers}
	return &cli.Command{
		Name: "get", Usage: "read remote files into a local file (or - for stdout), or into a local directory", ArgsUsage: "REMOTE... LOCAL",
		Category: "client",
		Flags: clientFlags(&cfg, true,
			&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Destination: &o.force, EnvVars: env("GET_FORCE"), Usage: "overwrite local files that exist (without it, get refuses to)"},
			&cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, Destination: &o.recursive, EnvVars: env("GET_RECURSIVE"), Usage: "get directories and everything below them"},
			&cli.BoolFlag{Name: "verify-file", Destination: &o.verifyFile, EnvVars: env("GET_VERIFY_FILE"), Usage: "also check each file's SHA-256 recorded at commit (a second hashing pass; every frame and chunk is verified without it)"},
			transfersFlag(&o.transfers),
		),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() < 2 {
				return rpc.Errorf(rpc.Invalid, "get needs REMOTE and LOCAL (see dfs get --help)")
			}
			return runGetArgs(ctx, cl, a.stdio, c.Args().Slice(), o)
		}),
	}
}

func (a *app) rmCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var recursive bool
	return &cli.Command{
		Name: "rm", Usage: "delete a remote file or empty directory (-r: a directory and everything below it)", ArgsUsage: "REMOTE", Category: "client",
		Flags: append(clientFlags(&cfg, false), rmRecursiveFlag(&recursive)),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() != 1 {
				return rpc.Errorf(rpc.Invalid, "rm needs one REMOTE path")
			}
			return runRm(ctx, cl, c.Args().First(), recursive)
		}),
	}
}

func (a *app) lsCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var recursive, long, human, asJSON bool
	return &cli.Command{
		Name: "ls", Usage: "list a remote directory", ArgsUsage: "[PATH]", Category: "client", HideHelp: true, UseShortOptionHandling: true,
		Flags: append(clientFlags(&cfg, false),
			&cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, Destination: &recursive, EnvVars: env("LS_RECURSIVE"), Usage: "list everything below PATH"},
			&cli.BoolFlag{Name: "long", Aliases: []string{"l"}, Destination: &long, EnvVars: env("LS_LONG"), Usage: "show size, chunks, replication and modification time"},
			humanReadable(&human, "LS_HUMAN"),
			jsonFlag(&asJSON),
			helpFlag(),
		),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() > 1 {
				return rpc.Errorf(rpc.Invalid, "ls takes at most one PATH")
			}
			dir := c.Args().First()
			if dir == "" {
				dir = "/"
			}
			return runList(ctx, cl, &listPrinter{w: a.stdio.Out, long: long, human: human, asJSON: asJSON}, dir, recursive)
		}),
	}
}

// runLs lists dir to w, each page printed as it arrives (see
// listPrinter), so ls holds one page of the listing at a time.
func runLs(ctx context.Context, cl *client.Client, w io.Writer, dir string, recursive, long, asJSON bool) error {
	return runList(ctx, cl, &listPrinter{w: w, long: long, asJSON: asJSON}, dir, recursive)
}

// runList lists dir with p, as runLs does.
func runList(ctx context.Context, cl *client.Client, p *listPrinter, dir string, recursive bool) error {
	if err := cl.ListPages(ctx, dir, recursive, p.page); err != nil {
		return err
	}
	return p.end()
}

func (a *app) statCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var asJSON bool
	return &cli.Command{
		Name: "stat", Usage: "show a remote file's size, SHA-256, chunks and replicas (of a directory: that it is one)", ArgsUsage: "REMOTE",
		Category: "client",
		Flags:    append(clientFlags(&cfg, false), jsonFlag(&asJSON)),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() != 1 {
				return rpc.Errorf(rpc.Invalid, "stat needs one REMOTE path")
			}
			fi, err := cl.Stat(ctx, c.Args().First())
			if err != nil {
				return err
			}
			return printStat(a.stdio.Out, fi, asJSON)
		}),
	}
}

func (a *app) nodesCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var asJSON bool
	return &cli.Command{
		Name: "nodes", Usage: "list the datanodes", Category: "client",
		Flags: append(clientFlags(&cfg, false), jsonFlag(&asJSON)),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() != 0 {
				return rpc.Errorf(rpc.Invalid, "nodes takes no arguments")
			}
			resp, err := cl.Nodes(ctx)
			if err != nil {
				return err
			}
			return printNodes(a.stdio.Out, resp, asJSON)
		}),
	}
}

func (a *app) fsckCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var asJSON bool
	return &cli.Command{
		Name: "fsck", Usage: "list files with missing, under-replicated or corrupt chunks; fails if any", ArgsUsage: "[PATH]",
		Category: "admin",
		Flags:    append(clientFlags(&cfg, false), jsonFlag(&asJSON)),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() > 1 {
				return rpc.Errorf(rpc.Invalid, "fsck takes at most one PATH")
			}
			path := c.Args().First()
			if path == "" {
				path = "/"
			}
			files, sum, err := cl.Fsck(ctx, path)
			if err != nil {
				return err
			}
			if err := printFsck(a.stdio.Out, files, sum, asJSON); err != nil {
				return err
			}
			if sum.UnreadableFiles > 0 || sum.UnderReplicatedFiles > 0 {
				return rpc.Errorf(rpc.FailedPrecondition, "fsck %s: %d files unreadable, %d not fully replicated", client.ShowPath(path), sum.UnreadableFiles, sum.UnderReplicatedFiles)
			}
			return nil
		}),
	}
}

// adminCommand holds the administration subcommands: decommission and
// backup through the coordinator, salvage offline on files.
func (a *app) adminCommand() *cli.Command {
	return &cli.Command{
		Name: "admin", Usage: "cluster administration", Category: "admin",
		Subcommands: []*cli.Command{a.decommissionCommand(), a.backupCommand(), a.salvageCommand(), a.caCommand(), a.certCommand(), a.tokenCommand()},
	}
}

func (a *app) decommissionCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var cancel, asJSON bool
	return &cli.Command{
		Name: "decommission", Usage: "drain a datanode: copy its chunks elsewhere and stop placing new ones on it",
		ArgsUsage: "NODE-ID",
		Flags: append(clientFlags(&cfg, false),
			&cli.BoolFlag{Name: "cancel", Destination: &cancel, EnvVars: env("DECOMMISSION_CANCEL"), Usage: "stop draining the node"},
			jsonFlag(&asJSON)),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() != 1 {
				return rpc.Errorf(rpc.Invalid, "admin decommission needs one NODE-ID (or a unique prefix of it)")
			}
			n, err := cl.Decommission(ctx, c.Args().First(), cancel)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdio.Out, nodeStatusJSON(*n))
			}
			state := "draining; dfs nodes shows when it is safe to remove"
			switch {
			case !n.Draining:
				state = "no longer draining"
			case n.Decommissioned:
				state = "decommissioned: safe to remove"
			}
			fmt.Fprintf(a.stdio.Out, "%s (%s): %s\n", n.ID, n.Addr, state)
			return nil
		}),
	}
}

func (a *app) backupCommand() *cli.Command {
	cfg := client.DefaultConfig()
	return &cli.Command{
		Name: "backup", Usage: "write a consistent snapshot of the metadata to FILE (restore with dfs coordinator --restore)",
		ArgsUsage: "FILE",
		Flags:     clientFlags(&cfg, false),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() != 1 {
				return rpc.Errorf(rpc.Invalid, "admin backup needs one FILE")
			}
			return runBackup(ctx, cl, c.Args().First())
		}),
	}
}

func progressBar(stdio IO, size int64, what string) (client.Progress, func()) {
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

// runPut stores one local file (or stdin, for -) at remote, with a
// progress bar on a terminal; with noClobber only if remote holds no file.
func runPut(ctx context.Context, cl *client.Client, stdio IO, local, remote string, noClobber bool) error {
	var r io.Reader
	size := int64(-1)
	if local == "-" {
		r = stdio.In
	} else {
		f, n, err := openLocal(local, remote)
		if err != nil {
			return err
		}
		defer f.Close()
		r, size = f, n
	}
	progress, done := progressBar(stdio, size, "put "+remote)
	defer done()
	return putReader(ctx, cl, r, size, remote, noClobber, progress)
}

func localErr(err error) error {
	if os.IsNotExist(err) {
		return rpc.Errorf(rpc.NotFound, "local file: %w", err)
	}
	return rpc.Errorf(rpc.Invalid, "local file: %w", err)
}

// runGet reads remote into local (a file, a directory to put it in under
// its base name, or - for stdout). An existing local file is not
// overwritten unless o.force, as hdfs dfs -get does: refused before any
// byte is read, and again, atomically, when the file is put in place (a
// hard link of the finished file, which fails if the name was taken
// meanwhile). The file gets mode 0644 less the umask, as a file the user
// created would.
func runGet(ctx context.Context, cl *client.Client, stdio IO, remote, local string, o transferOptions) error {
	if local == "-" {
		_, err := cl.Get(ctx, remote, stdio.Out, &client.GetOptions{VerifyFileDigest: o.verifyFile})
		return err
	}
	if info, err := os.Stat(local); err == nil && info.IsDir() {
		local = filepath.Join(local, filepath.Base(remote))
	}
	size := int64(-1)
	if stdio.Terminal {
		// The progress bar's size, without the chunk map.
		if fi, err := cl.Head(ctx, remote); err == nil {
			size = fi.Size
		}
	}
	progress, done := progressBar(stdio, size, "get "+remote)
	defer done()
	return getFile(ctx, cl, remote, local, o, progress)
}

// getFile reads remote into the local file local, for runGet and the
// recursive get, as runGet says: never over an existing file unless
// o.force, and through a temporary file beside it; into a device or a
// named pipe directly.
func getFile(ctx context.Context, cl *client.Client, remote, local string, o transferOptions, progress client.Progress) error {
	exists := func() error {
		return rpc.Errorf(rpc.Exists, "get %s: local file %s exists (-f overwrites it)", client.ShowPath(remote), local)
	}
	if info, err := os.Stat(local); err == nil && !info.Mode().IsRegular() && !info.IsDir() {
		// A device or a named pipe (/dev/null, /dev/stdout, a FIFO): the
		// bytes go into it, as cp's do. Renaming over it would replace
		// the device with a file, and -f changes nothing.
		return getInto(ctx, cl, remote, local, o, progress)
	}
	if _, err := os.Lstat(local); err == nil && !o.force {
		return exists()
	}
	// Write beside the target and rename once verified: a failed get
	// leaves no partial file and any earlier file intact.
	tmp, err := os.CreateTemp(filepath.Dir(local), "."+filepath.Base(local)+".dfs-*")
	if err != nil {
		return fmt.Errorf("get %s: %w", client.ShowPath(remote), localErr(err))
	}
	defer os.Remove(tmp.Name())
	_, err = cl.Get(ctx, remote, tmp, &client.GetOptions{Progress: progress, VerifyFileDigest: o.verifyFile})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644&^umask())
	}
	if err != nil {
		return err
	}
	place := os.Rename
	if !o.force {
		place = os.Link // fails if local exists: no clobbering, however late it appeared
	}
	if err := place(tmp.Name(), local); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return exists()
		}
		return fmt.Errorf("get %s: %w", client.ShowPath(remote), localErr(err))
	}
	return nil
}

// getInto reads remote into local, a device or a named pipe, by writing
// to it.
func getInto(ctx context.Context, cl *client.Client, remote, local string, o transferOptions, progress client.Progress) error {
	f, err := os.OpenFile(local, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("get %s: %w", client.ShowPath(remote), localErr(err))
	}
	_, err = cl.Get(ctx, remote, f, &client.GetOptions{Progress: progress, VerifyFileDigest: o.verifyFile})
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("get %s: %w", client.ShowPath(remote), localErr(cerr))
	}
	return err
}

// umask returns the process's file mode creation mask, from
// /proc/self/status (reading it with umask(2) would change it, for a
// moment, under the process's other threads); 022 where it cannot be read.
func umask() os.FileMode {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o022
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return os.FileMode(m)
			}
		}
	}
	return 0o022
}

// runBackup writes the backup beside file and renames it into place once
// it is complete and fsynced, so a failed backup never leaves a file that
// looks whole.
func runBackup(ctx context.Context, cl *client.Client, file string) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".dfs-*")
	if err != nil {
		return fmt.Errorf("admin backup: %w", localErr(err))
	}
	defer os.Remove(tmp.Name())
	err = cl.Backup(ctx, tmp)
	if err == nil {
		err = tmp.Sync()
		if err != nil {
			err = fmt.Errorf("admin backup: %w", err)
		}
	}
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("admin backup: %w", cerr)
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("admin backup: %w", localErr(err))
	}
	return nil
}
