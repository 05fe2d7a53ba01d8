// Package cli is dfs's command line: every subcommand, the printers and
// JSON shapes of their output, and the config file.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/rpc"
)

// IO is where the commands read and write; tests replace it.
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

// Version says which build runs; main sets it from the linker flags.
type Version struct {
	Version string
	Commit  string
}

// Run runs the command line args (args[0] is the program name) until ctx
// ends and returns the process's exit code, which says the error's kind
// (see exitCode). An error is printed to stdio.Err as one line; logs go to
// logw.
func Run(ctx context.Context, args []string, v Version, stdio IO, logw io.Writer) int {
	err := App(v, stdio, logw).RunContext(ctx, args)
	if err != nil {
		fmt.Fprintf(stdio.Err, "dfs: %s\n", oneLine(err.Error()))
	}
	return exitCode(err)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// env is the environment variable of an option.
func env(name string) []string { return []string{"DFS_" + name} }

func ptr[T any](v T) *T { return &v }

// app is the state one run of the command line shares: where it prints,
// and the logger and config file its global options give.
type app struct {
	stdio   IO
	logw    io.Writer
	version Version
	global  globals
	log     zerolog.Logger
	sec     security
}

// App builds the command line; logs go to logw, results to stdio. Each
// option is declared once, as a flag whose Destination (or Value, for
// sizes and address lists) is the field of the role's Config it sets; the
// roles and the composition root (package roles) do the work.
func App(v Version, stdio IO, logw io.Writer) *cli.App {
	a := &app{stdio: stdio, logw: logw, version: v, log: zerolog.Nop()}
	usageError := func(c *cli.Context, err error, isSub bool) error {
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok && cli.SuggestFlag != nil {
			if s := cli.SuggestFlag(c.Command.VisibleFlags(), strings.TrimLeft(name, "-"), false); s != "" {
				return rpc.Errorf(rpc.Invalid, "%v (did you mean %s? see %s --help)", err, s, c.Command.HelpName)
			}
		}
		return rpc.Errorf(rpc.Invalid, "%v (see %s --help)", err, c.Command.HelpName)
	}
	cmds := []*cli.Command{
		a.coordinatorCommand(), a.datanodeCommand(), a.devCommand(), a.s3Command(), a.benchCommand(), a.healthCommand(),
		a.putCommand(), a.getCommand(), a.catCommand(), a.rmCommand(), a.lsCommand(), a.statCommand(),
		a.adminCommand(), a.fsckCommand(), a.nodesCommand(),
		a.versionCommand(),
		a.mvCommand(), a.cpCommand(), a.mkdirCommand(), a.duCommand(), a.chmodCommand(), a.chownCommand(), a.completionCommand(), a.manCommand(),
		a.mountCommand(),
	}
	var wire func(cs []*cli.Command)
	wire = func(cs []*cli.Command) {
		for _, c := range cs {
			c.OnUsageError = usageError
			if len(c.Subcommands) > 0 {
				wire(c.Subcommands)
				if c.Action == nil {
					continue
				}
				// A command that runs itself too (bench, beside bench
				// scale) reads the global options as a leaf does.
			}
			// The global options work after the command too
			// (dfs ls --log-level debug): each command has hidden copies.
			own := c.Flags
			c.Flags = append(c.Flags, a.global.commandFlags()...)
			c.Before = func(ctx *cli.Context) error { return a.setUp(ctx, own) }
		}
	}
	wire(cmds)
	return &cli.App{
		Name:                 "dfs",
		Usage:                "a distributed file system in one binary",
		Description:          exitHelp,
		Version:              fmt.Sprintf("%s (commit %s, %s)", v.Version, v.Commit, runtime.Version()),
		Flags:                a.global.appFlags(),
		Commands:             cmds,
		Writer:               stdio.Out,
		ErrWriter:            stdio.Err,
		EnableBashCompletion: true,
		Suggest:              true,
		OnUsageError:         usageError,
		ExitErrHandler:       func(*cli.Context, error) {},
	}
}

// versionCommand prints the version, commit and Go version.
func (a *app) versionCommand() *cli.Command {
	var asJSON bool
	return &cli.Command{
		Name: "version", Usage: "print the version, commit and Go version",
		Flags: []cli.Flag{jsonFlag(&asJSON)},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return rpc.Errorf(rpc.Invalid, "version takes no arguments")
			}
			if asJSON {
				return writeJSON(a.stdio.Out, versionJSON{Version: a.version.Version, Commit: a.version.Commit, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH})
			}
			fmt.Fprintf(a.stdio.Out, "dfs %s\ncommit %s\n%s %s/%s\n", a.version.Version, a.version.Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
