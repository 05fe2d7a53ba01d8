package cli

// The namespace commands: mv, cp, mkdir, du, chmod, chown, and rm's recursive form.

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// humanFlag is a boolean -h that does not mean --help: urfave/cli takes
// any flag that reads as a true bool under the name "h" for a request for
// help, so this one never reads as a bool (its value prints as "" or
// "human"), and its command hides the built-in help flag and declares a
// --help of its own (see helpFlag).
type humanFlag struct{ on *bool }

// Set sets the flag from "true" or "false" (-h alone is "true").
func (h humanFlag) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return rpc.Errorf(rpc.Invalid, "invalid --human-readable %q: want true or false", s)
	}
	*h.on = v
	return nil
}

// String is "" when off and "human" when on, never a bool (see humanFlag).
func (h humanFlag) String() string {
	if h.on == nil || !*h.on {
		return ""
	}
	return "human"
}

// IsBoolFlag makes -h take no value.
func (humanFlag) IsBoolFlag() bool { return true }

// boolGenericFlag is a GenericFlag over a boolean value (humanFlag):
// its help shows no value placeholder, as a BoolFlag's does not.
type boolGenericFlag struct{ *cli.GenericFlag }

// TakesValue is false: the flag stands alone.
func (boolGenericFlag) TakesValue() bool { return false }

// String renders the flag for help through the wrapper, so that help
// asks its TakesValue.
func (f boolGenericFlag) String() string { return cli.FlagStringer(f) }

// humanReadable returns the -h, --human-readable flag of ls and du.
func humanReadable(dst *bool, envName string) cli.Flag {
	return boolGenericFlag{&cli.GenericFlag{Name: "human-readable", Aliases: []string{"h"}, Value: humanFlag{on: dst}, DefaultText: "false",
		EnvVars: env(envName), Usage: "print sizes in binary units (1.5 KiB, 8 MiB)"}}
}

// helpFlag is the --help of a command whose -h is --human-readable.
func helpFlag() cli.Flag {
	return &cli.BoolFlag{Name: "help", Usage: "show help", DisableDefaultText: true}
}

// size renders n in bytes, or with binary units when human.
func size(n int64, human bool) string {
	if human {
		return rpc.FormatBytes(n)
	}
	return strconv.FormatInt(n, 10)
}

// rmRecursiveFlag is rm's -r.
func rmRecursiveFlag(dst *bool) cli.Flag {
	return &cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, Destination: dst, EnvVars: env("RM_RECURSIVE"),
		Usage: "remove a directory and everything below it"}
}

// runRm removes p: a file or an empty directory, or with recursive a
// directory and everything below it. A missing path fails with NotFound
// even with recursive (as rm -r does, unlike rm -rf); the root cannot be
// removed recursively.
func runRm(ctx context.Context, cl *client.Client, p string, recursive bool) error {
	if !recursive {
		err := cl.Remove(ctx, p)
		if rpc.KindOf(err) == rpc.NotEmpty {
			return rpc.Errorf(rpc.NotEmpty, "%w (rm -r removes it and everything below it)", err)
		}
		return err
	}
	if p == "/" {
		return rpc.Errorf(rpc.Invalid, "rm -r /: refusing to remove the whole namespace (remove what / holds one by one)")
	}
	if _, err := cl.Head(ctx, p); err != nil {
		return err
	}
	return cl.RemoveAll(ctx, p)
}

// sources returns the SRC arguments of mv and cp without trailing
// slashes ("dir/" names the directory dir, as a shell's completion writes
// it).
func sources(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if t := strings.TrimRight(a, "/"); t != "" {
			out[i] = t
		}
	}
	return out
}

// targets resolves the destinations of mv and cp: with one source and a
// DST that neither ends in / nor is an existing directory, DST itself;
// otherwise DST/base(SRC) for each source ("into"). Several sources need
// DST to be a directory (or end in /).
func targets(ctx context.Context, cl *client.Client, op string, srcs []string, dst string) ([]string, error) {
	into := strings.HasSuffix(dst, "/") && dst != "/"
	dir := strings.TrimRight(dst, "/")
	if dir == "" {
		dir, into = "/", true
	}
	if !into {
		fi, err := cl.Head(ctx, dir)
		switch {
		case err == nil && fi.IsDir:
			into = true
		case err != nil && rpc.KindOf(err) != rpc.NotFound:
			return nil, err
		}
	}
	if !into {
		if len(srcs) > 1 {
			return nil, rpc.Errorf(rpc.Invalid, "%s: %s is not a directory; several sources go into a directory (end DST with / to say so)", op, client.ShowPath(dst))
		}
		return []string{dst}, nil
	}
	out := make([]string, len(srcs))
	for i, s := range srcs {
		base := path.Base(s)
		if s == "/" || base == "." || base == "/" {
			return nil, rpc.Errorf(rpc.Invalid, "%s: cannot move or copy %s into a directory", op, client.ShowPath(s))
		}
		out[i] = path.Join(dir, base)
	}
	return out, nil
}

func (a *app) mvCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var noClobber bool
	return &cli.Command{
		Name: "mv", Usage: "rename a file or a directory, or move several into a directory (atomic, no data moves)",
		ArgsUsage: "SRC DST | SRC... DIR/", Category: "client",
		Flags: append(clientFlags(&cfg, false),
			&cli.BoolFlag{Name: "no-clobber", Aliases: []string{"n"}, Destination: &noClobber, EnvVars: env("MV_NO_CLOBBER"), Usage: "refuse to replace an existing destination"}),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() < 2 {
				return rpc.Errorf(rpc.Invalid, "mv needs SRC and DST (see dfs mv --help)")
			}
			args := c.Args().Slice()
			srcs, dst := sources(args[:len(args)-1]), args[len(args)-1]
			dsts, err := targets(ctx, cl, "mv", srcs, dst)
			if err != nil {
				return err
			}
			for i, s := range srcs {
				if err := cl.Rename(ctx, s, dsts[i], &client.RenameOptions{NoReplace: noClobber}); err != nil {
					return err
				}
			}
			return nil
		}),
	}
}

func (a *app) cpCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var noClobber, recursive bool
	return &cli.Command{
		Name: "cp", Usage: "copy a file on the cluster (the copy shares the chunks: no data moves), or several into a directory",
		ArgsUsage: "SRC DST | SRC... DIR/", Category: "client",
		Flags: append(clientFlags(&cfg, false),
			&cli.BoolFlag{Name: "no-clobber", Aliases: []string{"n"}, Destination: &noClobber, EnvVars: env("CP_NO_CLOBBER"), Usage: "refuse to replace an existing file"},
			&cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, Destination: &recursive, EnvVars: env("CP_RECURSIVE"), Usage: "copy directories and everything below them"}),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() < 2 {
				return rpc.Errorf(rpc.Invalid, "cp needs SRC and DST (see dfs cp --help)")
			}
			args := c.Args().Slice()
			srcs, dst := sources(args[:len(args)-1]), args[len(args)-1]
			dsts, err := targets(ctx, cl, "cp", srcs, dst)
			if err != nil {
				return err
			}
			opts := &client.CopyOptions{IfNotExist: noClobber}
			for i, s := range srcs {
				if err := runCp(ctx, cl, s, dsts[i], recursive, opts); err != nil {
					return err
				}
			}
			return nil
		}),
	}
}

// runCp copies src to dst: a file with one server-side Copy; with
// recursive, a directory by making each directory below it and copying
// each file, one by one (not atomic: a failure leaves what was copied).
func runCp(ctx context.Context, cl *client.Client, src, dst string, recursive bool, opts *client.CopyOptions) error {
	fi, err := cl.Head(ctx, src)
	if err != nil {
		return err
	}
	if !fi.IsDir {
		_, err := cl.Copy(ctx, src, dst, opts)
		return err
	}
	if !recursive {
		return rpc.Errorf(rpc.Invalid, "cp %s: is a directory (cp -r copies it and everything below it)", client.ShowPath(src))
	}
	if dst == src || strings.HasPrefix(dst, strings.TrimRight(src, "/")+"/") {
		return rpc.Errorf(rpc.Invalid, "cp -r %s %s: cannot copy a directory into itself", client.ShowPath(src), client.ShowPath(dst))
	}
	return cl.Walk(ctx, src, func(p string, e client.DirEntry, err error) error {
		if err != nil {
			return err
		}
		to := dst
		if p != src {
			to = path.Join(dst, strings.TrimPrefix(p, strings.TrimRight(src, "/")+"/"))
		}
		if e.IsDir {
			return cl.MkdirAll(ctx, to)
		}
		_, err = cl.Copy(ctx, p, to, opts)
		return err
	})
}

func (a *app) mkdirCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var parents bool
	return &cli.Command{
		Name: "mkdir", Usage: "create directories", ArgsUsage: "PATH...", Category: "client",
		Flags: append(clientFlags(&cfg, false),
			&cli.BoolFlag{Name: "parents", Aliases: []string{"p"}, Destination: &parents, EnvVars: env("MKDIR_PARENTS"), Usage: "create missing parents too, and accept an existing directory"}),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() == 0 {
				return rpc.Errorf(rpc.Invalid, "mkdir needs at least one PATH")
			}
			for _, p := range c.Args().Slice() {
				mk := cl.Mkdir
				if parents {
					mk = cl.MkdirAll
				}
				if err := mk(ctx, p); err != nil {
					return err
				}
			}
			return nil
		}),
	}
}

// duJSON is one line of du: a path and what lies below it.
type duJSON struct {
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
	Files int64  `json:"files"`
	Dirs  int64  `json:"dirs"`
}

func (a *app) duCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var summary, human, asJSON bool
	return &cli.Command{
		Name: "du", Usage: "show the bytes and files below paths: each subdirectory, then the total", ArgsUsage: "[PATH...]",
		Category: "client", HideHelp: true, UseShortOptionHandling: true,
		Flags: append(clientFlags(&cfg, false),
			&cli.BoolFlag{Name: "summarize", Aliases: []string{"s"}, Destination: &summary, EnvVars: env("DU_SUMMARIZE"), Usage: "one line per PATH: its total only"},
			humanReadable(&human, "DU_HUMAN"),
			jsonFlag(&asJSON),
			helpFlag(),
		),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			paths := c.Args().Slice()
			if len(paths) == 0 {
				paths = []string{"/"}
			}
			var out []duJSON
			for _, p := range paths {
				lines, err := runDu(ctx, cl, p, summary)
				if err != nil {
					return err
				}
				out = append(out, lines...)
			}
			return printDu(a.stdio.Out, out, human, asJSON)
		}),
	}
}

// runDu returns the usage of p: without summary, first that of each
// directory directly below p (as du --max-depth=1 does), then p's total.
func runDu(ctx context.Context, cl *client.Client, p string, summary bool) ([]duJSON, error) {
	var out []duJSON
	if !summary {
		for e, err := range cl.List(ctx, p, nil) {
			if err != nil {
				return nil, err
			}
			if !e.IsDir {
				continue
			}
			u, err := cl.Usage(ctx, e.Path)
			if err != nil {
				return nil, err
			}
			out = append(out, duJSON{Path: e.Path, Bytes: u.Bytes, Files: u.Files, Dirs: u.Dirs})
		}
	}
	u, err := cl.Usage(ctx, p)
	if err != nil {
		return nil, err
	}
	return append(out, duJSON{Path: p, Bytes: u.Bytes, Files: u.Files, Dirs: u.Dirs}), nil
}

// printDu prints du's lines: size and file count right-aligned, then the
// path; or a JSON array.
func printDu(w io.Writer, lines []duJSON, human, asJSON bool) error {
	if asJSON {
		if lines == nil {
			lines = []duJSON{}
		}
		return writeJSON(w, lines)
	}
	sizes, files := make([]string, len(lines)), make([]string, len(lines))
	var ws, wf int
	for i, l := range lines {
		sizes[i], files[i] = size(l.Bytes, human), fmt.Sprintf("%d files", l.Files)
		if l.Files == 1 {
			files[i] = "1 file"
		}
		ws, wf = max(ws, len(sizes[i])), max(wf, len(files[i]))
	}
	for i, l := range lines {
		if _, err := fmt.Fprintf(w, "%*s  %*s  %s\n", ws, sizes[i], wf, files[i], client.ShowPath(l.Path)); err != nil {
			return err
		}
	}
	return nil
}

// parseMode parses chmod's MODE: octal permission bits, with the sticky
// bit (1000) and nothing above it ("750", "0644", "1777").
func parseMode(s string) (fs.FileMode, error) {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o1777 || s == "" {
		return 0, rpc.Errorf(rpc.Invalid, "mode %q: want octal permission bits, 0 to 1777 (e.g. 750, 0644, 1777)", s)
	}
	m := fs.FileMode(n) & fs.ModePerm
	if n&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m, nil
}

// apply calls fn for each path, and with recursive for everything below
// each directory too (a directory before what it holds).
func apply(ctx context.Context, cl *client.Client, paths []string, recursive bool, fn func(p string) error) error {
	for _, p := range paths {
		if !recursive {
			if err := fn(p); err != nil {
				return err
			}
			continue
		}
		err := cl.Walk(ctx, p, func(path string, _ client.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return fn(path)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (a *app) chmodCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var recursive bool
	return &cli.Command{
		Name: "chmod", Usage: "set the permission bits (octal, with 1000 the sticky bit) of files and directories: the owner or a superuser may",
		ArgsUsage: "MODE PATH...", Category: "client",
		Flags: append(clientFlags(&cfg, false),
			&cli.BoolFlag{Name: "recursive", Aliases: []string{"R"}, Destination: &recursive, EnvVars: env("CHMOD_RECURSIVE"), Usage: "change everything below directories too"}),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() < 2 {
				return rpc.Errorf(rpc.Invalid, "chmod needs a MODE and at least one PATH")
			}
			mode, err := parseMode(c.Args().First())
			if err != nil {
				return err
			}
			return apply(ctx, cl, c.Args().Tail(), recursive, func(p string) error { return cl.Chmod(ctx, p, mode) })
		}),
	}
}

func (a *app) chownCommand() *cli.Command {
	cfg := client.DefaultConfig()
	var recursive bool
	return &cli.Command{
		Name: "chown", Usage: "set the owner (a superuser may) or the group (the owner may, to a group they are in) of files and directories",
		ArgsUsage: "[USER][:GROUP] PATH...", Category: "client",
		Flags: append(clientFlags(&cfg, false),
			&cli.BoolFlag{Name: "recursive", Aliases: []string{"R"}, Destination: &recursive, EnvVars: env("CHOWN_RECURSIVE"), Usage: "change everything below directories too"}),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() < 2 {
				return rpc.Errorf(rpc.Invalid, "chown needs a USER[:GROUP] and at least one PATH")
			}
			user, group, _ := strings.Cut(c.Args().First(), ":")
			if user == "" && group == "" {
				return rpc.Errorf(rpc.Invalid, "chown %q: name a user, a :group or both", c.Args().First())
			}
			return apply(ctx, cl, c.Args().Tail(), recursive, func(p string) error { return cl.Chown(ctx, p, user, group) })
		}),
	}
}
