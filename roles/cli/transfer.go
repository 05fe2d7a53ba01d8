package cli

// Recursive and multi-file transfers (put -r, get -r, several sources),
// put --no-clobber and cat.
//
// The destination follows cp's conventions. With one source, REMOTE (or
// LOCAL) that exists as a directory receives the source under its base
// name, and anything else is the source's new name: put -r dir /r makes
// /r/dir/... when /r is a directory, else /r/.... A trailing / on the
// destination says it is a directory: put a /d/ makes /d/a (creating /d);
// get needs such a local directory to exist. With several sources the
// destination must be a directory. A trailing / on a source changes
// nothing (unlike rsync's).

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// defaultTransfers is how many files a recursive or multi-file transfer
// moves at once.
const defaultTransfers = 8

// transfersFlag is the --transfers flag of put, get and bench.
func transfersFlag(dst *int) cli.Flag {
	return &cli.IntFlag{Name: "transfers", Value: *dst, Destination: dst, EnvVars: env("TRANSFERS"),
		Usage: "files in flight at once in a recursive or multi-file transfer (each moves --parallel chunks at once)"}
}

// transferOptions are the choices of a put or get of several files.
type transferOptions struct {
	// recursive allows directories as sources.
	recursive bool
	// noClobber (put) refuses to replace a remote file; force (get)
	// replaces a local one.
	noClobber, force bool
	// verifyFile (get) also checks each file's SHA-256 recorded at commit
	// (client.GetOptions.VerifyFileDigest).
	verifyFile bool
	// transfers is how many files move at once.
	transfers int
}

func (o transferOptions) check() error {
	if o.transfers < 1 || o.transfers > 256 {
		return rpc.Errorf(rpc.Invalid, "--transfers must be between 1 and 256, not %d", o.transfers)
	}
	return nil
}

// runPutArgs runs put with args, LOCAL... REMOTE (see the file's doc).
func runPutArgs(ctx context.Context, cl *client.Client, stdio IO, args []string, o transferOptions) error {
	if err := o.check(); err != nil {
		return err
	}
	srcs, dst := args[:len(args)-1], args[len(args)-1]
	into := strings.HasSuffix(dst, "/")
	dir := strings.TrimRight(dst, "/")
	if dir == "" {
		dir, into = "/", true // the root
	}
	for _, s := range srcs {
		if s == "-" && len(srcs) > 1 {
			return rpc.Errorf(rpc.Invalid, "put: - (stdin) must be the only LOCAL")
		}
	}
	if srcs[0] == "-" {
		if into {
			return rpc.Errorf(rpc.Invalid, "put - %s: stdin needs a file path as REMOTE, not a directory", client.ShowPath(dst))
		}
		return runPut(ctx, cl, stdio, "-", dst, o.noClobber)
	}
	if !into {
		fi, err := cl.Head(ctx, dst)
		switch {
		case err == nil && fi.IsDir:
			into = true
		case err != nil && rpc.KindOf(err) != rpc.NotFound:
			return err
		}
		if len(srcs) > 1 && !into {
			return rpc.Errorf(rpc.Invalid, "put: several LOCALs need a directory as REMOTE, and %s is not one (end it with / to create it)", client.ShowPath(dst))
		}
	}
	target := func(src string) string {
		if !into {
			return dst
		}
		return path.Join(dir, localBase(src))
	}
	if len(srcs) == 1 {
		if info, err := os.Stat(srcs[0]); err != nil || !info.IsDir() {
			return runPut(ctx, cl, stdio, srcs[0], target(srcs[0]), o.noClobber)
		}
	}

	var total progressTotal
	if stdio.Terminal {
		for _, src := range srcs {
			countLocal(src, &total)
		}
	}
	b := startBatch(ctx, stdio, "put", o, total, func(ctx context.Context, j fileJob, progress client.Progress) error {
		return putLocal(ctx, cl, j.src, j.dst, o.noClobber, progress)
	})
	for _, src := range srcs {
		if err := putSource(b, cl, src, target(src), o.recursive); err != nil {
			b.fail(err)
			break
		}
	}
	return b.wait()
}

// putSource hands the batch the files of one source of a put: the file
// itself, or every file below the directory (after creating remote, so
// that a file in its way fails before any byte moves), and creates the
// directories that hold no file remotely, so the tree arrives whole.
// Entries that are neither regular files nor directories (symbolic links,
// devices, sockets) are skipped with a notice, as rsync and rclone do.
func putSource(b *batch, cl *client.Client, src, remote string, recursive bool) error {
	info, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("put %s: %w", client.ShowPath(remote), localErr(err))
	}
	switch {
	case info.Mode().IsRegular():
		return b.submit(fileJob{src: src, dst: remote, size: info.Size()})
	case !info.IsDir():
		return rpc.Errorf(rpc.Invalid, "put %s: %s is not a regular file", client.ShowPath(remote), client.ShowPath(src))
	case !recursive:
		return rpc.Errorf(rpc.Invalid, "put %s: %s is a directory (-r puts it and everything below it)", client.ShowPath(remote), client.ShowPath(src))
	}
	if err := cl.MkdirAll(b.ctx, remote); err != nil {
		return err
	}
	return walkLocal(src, "", localVisitor{
		file: func(local, rel string, size int64) error {
			return b.submit(fileJob{src: local, dst: path.Join(remote, rel), size: size})
		},
		emptyDir: func(rel string) error {
			if err := b.ctx.Err(); err != nil {
				return context.Cause(b.ctx)
			}
			return cl.MkdirAll(b.ctx, path.Join(remote, rel))
		},
		skip: func(local string) {
			b.notice("put: skipping %s: not a regular file or directory", client.ShowPath(local))
		},
	})
}

// localVisitor is what walkLocal calls: file for each regular file (its
// local path, its path below the root with / separators, its size),
// emptyDir for each directory below the root that holds no file or
// directory, skip for anything else.
type localVisitor struct {
	file     func(local, rel string, size int64) error
	emptyDir func(rel string) error
	skip     func(local string)
}

// walkLocal walks the local directory dir, rel below the walk's root, in
// lexical order, holding one directory's names per level.
func walkLocal(dir, rel string, v localVisitor) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", client.ShowPath(dir), localErr(err))
	}
	held := false
	for _, e := range entries {
		local, r := filepath.Join(dir, e.Name()), path.Join(rel, e.Name())
		switch {
		case e.IsDir():
			held = true
			if err := walkLocal(local, r, v); err != nil {
				return err
			}
		case e.Type().IsRegular():
			info, err := e.Info()
			if err != nil {
				return fmt.Errorf("stat %s: %w", client.ShowPath(local), localErr(err))
			}
			held = true
			if err := v.file(local, r, info.Size()); err != nil {
				return err
			}
		default:
			if v.skip != nil {
				v.skip(local)
			}
		}
	}
	if !held && rel != "" && v.emptyDir != nil {
		return v.emptyDir(rel)
	}
	return nil
}

// countLocal adds the regular files below src (or src itself) to t; what
// it cannot read it leaves out (the transfer reports it).
func countLocal(src string, t *progressTotal) {
	info, err := os.Stat(src)
	if err != nil {
		return
	}
	if !info.IsDir() {
		t.files, t.bytes = t.files+1, t.bytes+info.Size()
		return
	}
	walkLocal(src, "", localVisitor{file: func(_, _ string, size int64) error {
		t.files, t.bytes = t.files+1, t.bytes+size
		return nil
	}})
}

// localBase is the name a local source takes in a remote directory: its
// base name, or "" for the root (its contents go into the directory).
func localBase(src string) string {
	if abs, err := filepath.Abs(src); err == nil {
		src = abs
	}
	if b := filepath.Base(src); b != string(filepath.Separator) {
		return b
	}
	return ""
}

// putLocal stores the local file at remote, or with noClobber only if
// remote holds no file: that is checked as the upload opens, before any
// byte is sent, and again atomically when the file commits.
func putLocal(ctx context.Context, cl *client.Client, local, remote string, noClobber bool, progress client.Progress) error {
	f, size, err := openLocal(local, remote)
	if err != nil {
		return err
	}
	defer f.Close()
	return putReader(ctx, cl, f, size, remote, noClobber, progress)
}

// openLocal opens the regular local file to put at remote, and returns
// its size; errors name the remote path, as a put's do.
func openLocal(local, remote string) (*os.File, int64, error) {
	f, err := os.Open(local)
	if err != nil {
		return nil, 0, fmt.Errorf("put %s: %w", client.ShowPath(remote), localErr(err))
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("put %s: %w", client.ShowPath(remote), localErr(err))
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, 0, rpc.Errorf(rpc.Invalid, "put %s: %s is not a regular file", client.ShowPath(remote), client.ShowPath(local))
	}
	return f, info.Size(), nil
}

// putReader stores r (size bytes, or -1 when unknown) at remote: with
// Put, which reads r straight into its chunk buffers, or with noClobber
// through a Writer created with IfNotExist.
func putReader(ctx context.Context, cl *client.Client, r io.Reader, size int64, remote string, noClobber bool, progress client.Progress) error {
	if !noClobber {
		_, err := cl.Put(ctx, remote, r, size, progress)
		return err
	}
	w, err := cl.Create(ctx, remote, &client.CreateOptions{IfNotExist: true, Size: size, Progress: progress})
	if err != nil {
		return err
	}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			w.Abort()
			return fmt.Errorf("put %s: %w", client.ShowPath(remote), localErr(rerr))
		}
	}
	return w.Close()
}

// runGetArgs runs get with args, REMOTE... LOCAL (see the file's doc).
func runGetArgs(ctx context.Context, cl *client.Client, stdio IO, args []string, o transferOptions) error {
	if err := o.check(); err != nil {
		return err
	}
	srcs, dst := args[:len(args)-1], args[len(args)-1]
	if dst == "-" {
		if len(srcs) > 1 || o.recursive {
			return rpc.Errorf(rpc.Invalid, "get: - (stdout) takes one REMOTE file, without -r (dfs cat writes several)")
		}
		return runGet(ctx, cl, stdio, srcs[0], dst, o)
	}
	into := strings.HasSuffix(dst, string(filepath.Separator))
	info, err := os.Stat(dst)
	isDir := err == nil && info.IsDir()
	if (into || len(srcs) > 1) && !isDir {
		if err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("get: %w", localErr(err))
		}
		what := "does not exist"
		if err == nil {
			what = "is not a directory"
		}
		return rpc.Errorf(rpc.Invalid, "get: LOCAL %s %s; several REMOTEs, or a LOCAL ending in %c, need an existing local directory", client.ShowPath(dst), what, filepath.Separator)
	}
	if len(srcs) == 1 && !o.recursive {
		return runGet(ctx, cl, stdio, srcs[0], dst, o)
	}
	target := func(src string) string {
		if !isDir {
			return dst
		}
		return filepath.Join(dst, filepath.FromSlash(strings.TrimPrefix(path.Base(src), "/")))
	}

	var total progressTotal
	if stdio.Terminal {
		for _, src := range srcs {
			countRemote(ctx, cl, src, &total)
		}
	}
	b := startBatch(ctx, stdio, "get", o, total, func(ctx context.Context, j fileJob, progress client.Progress) error {
		return getFile(ctx, cl, j.src, j.dst, o, progress)
	})
	for _, src := range srcs {
		if err := getSource(b, cl, src, target(src), o.recursive); err != nil {
			b.fail(err)
			break
		}
	}
	return b.wait()
}

// getSource hands the batch the files of one source of a get: the file
// itself, or every file below the remote directory, creating the local
// directories (empty ones too) on the way, each before what it holds.
func getSource(b *batch, cl *client.Client, src, local string, recursive bool) error {
	fi, err := cl.Head(b.ctx, src)
	if err != nil {
		return err
	}
	if !fi.IsDir {
		return b.submit(fileJob{src: src, dst: local, size: fi.Size})
	}
	if !recursive {
		return rpc.Errorf(rpc.Invalid, "get %s: a directory (-r gets it and everything below it)", client.ShowPath(src))
	}
	if err := os.MkdirAll(local, 0o777); err != nil {
		return fmt.Errorf("get %s: %w", client.ShowPath(src), localErr(err))
	}
	prefix := strings.TrimSuffix(src, "/") + "/"
	for e, err := range cl.List(b.ctx, src, &client.ListOptions{Recursive: true}) {
		if err != nil {
			return err
		}
		rel, ok := strings.CutPrefix(e.Path, prefix)
		if !ok || !filepath.IsLocal(filepath.FromSlash(rel)) {
			return rpc.Errorf(rpc.Internal, "get %s: the listing holds %s, which is not below it", client.ShowPath(src), client.ShowPath(e.Path))
		}
		to := filepath.Join(local, filepath.FromSlash(rel))
		if e.IsDir {
			if err := os.MkdirAll(to, 0o777); err != nil {
				return fmt.Errorf("get %s: %w", client.ShowPath(e.Path), localErr(err))
			}
			continue
		}
		if err := b.submit(fileJob{src: e.Path, dst: to, size: e.Size}); err != nil {
			return err
		}
	}
	return nil
}

// countRemote adds the files below src (or src itself) to t, from the
// coordinator's sums; what it cannot read it leaves out.
func countRemote(ctx context.Context, cl *client.Client, src string, t *progressTotal) {
	fi, err := cl.Head(ctx, src)
	switch {
	case err != nil:
	case !fi.IsDir:
		t.files, t.bytes = t.files+1, t.bytes+fi.Size
	default:
		if u, err := cl.Usage(ctx, src); err == nil {
			t.files, t.bytes = t.files+u.Files, t.bytes+u.Bytes
		}
	}
}

// fileJob is one file of a batch: from src to dst, size bytes.
type fileJob struct {
	src, dst string
	size     int64
}

// progressTotal is what a batch will move: files and bytes.
type progressTotal struct{ files, bytes int64 }

// batch moves the files of one recursive or multi-file put or get, up to
// transfers at once, and shows their progress. A file refused because its
// destination exists (a get without -f, a put --no-clobber) is reported on
// stderr and the others go on; any other failure ends the batch: the
// files in flight are canceled and the rest are not started.
type batch struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	op     string
	force  bool
	jobs   chan fileJob
	wg     sync.WaitGroup
	errw   *lockedWriter
	bar    *progressbar.ProgressBar // nil when stderr is not a terminal
	total  progressTotal

	mu      sync.Mutex
	err     error // the failure that ended the batch
	files   int64 // handed over
	done    int64 // moved
	refused int64 // left alone: their destination exists
}

// startBatch starts o.transfers workers that run do for each file
// submitted; do's progress is nil when there is no progress bar.
func startBatch(ctx context.Context, stdio IO, op string, o transferOptions, total progressTotal,
	do func(ctx context.Context, j fileJob, progress client.Progress) error) *batch {
	ctx, cancel := context.WithCancelCause(ctx)
	b := &batch{ctx: ctx, cancel: cancel, op: op, force: o.force, jobs: make(chan fileJob), errw: &lockedWriter{w: stdio.Err}, total: total}
	var progress client.Progress
	if stdio.Terminal {
		b.bar = progressbar.NewOptions64(total.bytes,
			progressbar.OptionSetWriter(b.errw),
			progressbar.OptionSetDescription(b.describe()),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionThrottle(100*time.Millisecond),
		)
		progress = func(n int64) { b.bar.Add64(n) }
	}
	for range o.transfers {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			for j := range b.jobs {
				if b.ctx.Err() != nil {
					continue // ended: drain
				}
				err := do(b.ctx, j, progress)
				b.finished(j, err)
			}
		}()
	}
	return b
}

// describe is the progress bar's description: the files moved.
func (b *batch) describe() string {
	if b.total.files > 0 {
		return fmt.Sprintf("%s %d/%d files", b.op, b.done, b.total.files)
	}
	return fmt.Sprintf("%s %d files", b.op, b.done)
}

// submit hands j to a worker. It fails, without handing it over, once the
// batch has ended.
func (b *batch) submit(j fileJob) error {
	select {
	case b.jobs <- j:
		b.mu.Lock()
		b.files++
		b.mu.Unlock()
		return nil
	case <-b.ctx.Done():
		return context.Cause(b.ctx)
	}
}

// finished records the end of j.
func (b *batch) finished(j fileJob, err error) {
	switch {
	case err == nil:
		b.mu.Lock()
		b.done++
		if b.bar != nil {
			b.bar.Describe(b.describe())
		}
		b.mu.Unlock()
	case rpc.KindOf(err) == rpc.Exists:
		b.mu.Lock()
		b.refused++
		b.mu.Unlock()
		b.notice("%s", err.Error())
	default:
		b.fail(err)
	}
}

// fail ends the batch with err, unless it ended already.
func (b *batch) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
	b.cancel(err)
}

// notice prints one line on stderr, as a failure would be.
func (b *batch) notice(format string, args ...any) {
	nl := ""
	if b.bar != nil {
		nl = "\n" // below the bar
	}
	fmt.Fprintf(b.errw, "%sdfs: %s\n", nl, oneLine(fmt.Sprintf(format, args...)))
}

// wait waits for the files handed over and returns what ended the batch,
// or, when files were left alone because their destination exists, an
// error of kind Exists that counts them.
func (b *batch) wait() error {
	close(b.jobs)
	b.wg.Wait()
	b.cancel(nil)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bar != nil {
		// The bar stays, as the transfer's summary, when it went well.
		if b.err == nil {
			b.bar.Finish()
			b.bar.Describe(b.describe())
		} else {
			b.bar.Exit()
		}
		fmt.Fprintln(b.errw)
	}
	if b.err != nil {
		return b.err
	}
	if b.refused > 0 {
		how := "-f overwrites them"
		if b.op == "put" {
			how = "without --no-clobber put replaces them"
		}
		return rpc.Errorf(rpc.Exists, "%s: %d of %d files not written, refused as existing (%s)", b.op, b.refused, b.files, how)
	}
	return nil
}

// lockedWriter serializes the writes of the progress bar and of the
// notices, which come from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (a *app) catCommand() *cli.Command {
	cfg := client.DefaultConfig()
	return &cli.Command{
		Name: "cat", Usage: "write remote files to stdout, one after the other", ArgsUsage: "REMOTE...",
		Category: "client",
		Flags:    clientFlags(&cfg, true),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() == 0 {
				return rpc.Errorf(rpc.Invalid, "cat needs at least one REMOTE path")
			}
			return runCat(ctx, cl, a.stdio.Out, c.Args().Slice())
		}),
	}
}

// runCat writes the files at paths to w in order, each through a Reader
// that verifies every frame as it arrives (and the file's SHA-256 at its
// end), so a file is streamed, never held whole. It stops at the first
// file that fails; what was written of it stays written.
func runCat(ctx context.Context, cl *client.Client, w io.Writer, paths []string) error {
	for _, p := range paths {
		r, err := cl.Open(ctx, p)
		if err != nil {
			return err
		}
		_, err = r.WriteTo(w)
		r.Close()
		if err != nil {
			if rpc.KindOf(err) == rpc.Other {
				// Not the SDK's: writing to w failed.
				return fmt.Errorf("cat %s: write output: %w", client.ShowPath(p), err)
			}
			return err
		}
	}
	return nil
}
