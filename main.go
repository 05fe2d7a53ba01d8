// Command dfs is a distributed file system in one binary: it runs as the
// coordinator, as a datanode, as a whole development cluster, or as the
// client (put, get, rm, ls, stat, nodes, bench).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
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

	app := newApp(client.StdIO(), os.Stderr)
	if err := app.RunContext(ctx, args); err != nil {
		fmt.Fprintf(os.Stderr, "dfs: %s\n", oneLine(err.Error()))
		return 1
	}
	return 0
}

// newApp builds the command line; logs go to logw, results to stdio.
func newApp(stdio client.IO, logw io.Writer) *cli.App {
	var log zerolog.Logger
	var config *roles.ConfigFile
	usageError := func(c *cli.Context, err error, isSub bool) error {
		return fmt.Errorf("%v (see %s --help)", err, c.Command.HelpName)
	}
	global := []cli.Flag{
		&cli.StringFlag{Name: "config", EnvVars: []string{"DFS_CONFIG"}, Usage: "YAML file of options (flag names as keys) for the command run; flags and environment variables override it"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"DFS_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "auto", EnvVars: []string{"DFS_LOG_FORMAT"}, Usage: "auto (console on a terminal, else JSON), console or json"},
	}
	cmds := append(roles.Commands(func() zerolog.Logger { return log }, stdio), versionCommand(stdio))
	var wire func(cs []*cli.Command)
	wire = func(cs []*cli.Command) {
		for _, c := range cs {
			c.OnUsageError = usageError
			c.Before = func(ctx *cli.Context) error { return config.Apply(ctx, ctx.Command.Flags, global) }
			wire(c.Subcommands)
		}
	}
	wire(cmds)
	return &cli.App{
		Name:    "dfs",
		Usage:   "a distributed file system in one binary",
		Version: fmt.Sprintf("%s (commit %s, %s)", version, commit, runtime.Version()),
		Flags:   global,
		Before: func(c *cli.Context) error {
			var err error
			if config, err = roles.LoadConfigFile(c.String("config")); err != nil {
				return err
			}
			// The file may set the global flags too; which keys belong to
			// the command is checked once the command runs.
			if err := config.ApplyGlobal(c, global); err != nil {
				return err
			}
			log, err = newLogger(logw, c.String("log-level"), c.String("log-format"))
			return err
		},
		Commands:             cmds,
		Writer:               stdio.Out,
		ErrWriter:            stdio.Err,
		EnableBashCompletion: true,
		OnUsageError:         usageError,
		ExitErrHandler:       func(*cli.Context, error) {},
	}
}

// versionCommand prints the version, commit and Go version.
func versionCommand(stdio client.IO) *cli.Command {
	return &cli.Command{
		Name: "version", Usage: "print the version, commit and Go version",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("version takes no arguments")
			}
			fmt.Fprintf(stdio.Out, "dfs %s\ncommit %s\n%s %s/%s\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// newLogger is the only place that touches zerolog's globals.
func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", level)
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	// Durations as Go writes them ("1.5s", "250ms"): a bare number in a
	// JSON line says nothing of its unit.
	zerolog.DurationFieldFormat = zerolog.DurationFormatString
	var l zerolog.Logger
	switch format {
	case "json":
		l = zerolog.New(w)
	case "console":
		l = zerolog.New(zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"})
	case "auto":
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			l = zerolog.New(zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"})
		} else {
			l = zerolog.New(w)
		}
	default:
		return zerolog.Nop(), fmt.Errorf("invalid --log-format %q: want auto, console or json", format)
	}
	return l.Level(lvl).With().Timestamp().Logger(), nil
}
