package cli

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
)

// globals are the options every command takes: the config file and the
// logger's level and format.
type globals struct{}

// The global options: name, default, environment variable and usage.
var globalOptions = []struct{ name, value, env, usage string }{
	{"config", "", "DFS_CONFIG", "YAML file of options (flag names as keys) for the command run; flags and environment variables override it"},
	{"log-level", "info", "DFS_LOG_LEVEL", "debug, info, warn or error"},
	{"log-format", "auto", "DFS_LOG_FORMAT", "auto (console on a terminal, else JSON), console or json"},
}

// appFlags are the global options as the app declares them, before the
// command; they read the environment.
func (globals) appFlags() []cli.Flag {
	out := make([]cli.Flag, 0, len(globalOptions))
	for _, o := range globalOptions {
		out = append(out, &cli.StringFlag{Name: o.name, Value: o.value, EnvVars: []string{o.env}, Usage: o.usage})
	}
	return out
}

// commandFlags are the global options as a command takes them, after
// its name: hidden (dfs --help lists them once) and without environment
// variables (the app's copies read those), so that a command's copy is
// set only when given after the command.
func (globals) commandFlags() []cli.Flag {
	out := make([]cli.Flag, 0, len(globalOptions))
	for _, o := range globalOptions {
		out = append(out, &cli.StringFlag{Name: o.name, Value: o.value, Usage: o.usage, Hidden: true})
	}
	return out
}

// value resolves a global option for the command run by c: given after
// the command, then before it or in the environment, then in the config
// file, then the default.
func (globals) value(c *cli.Context, file *ConfigFile, name string) string {
	if c.IsSet(name) {
		return c.String(name)
	}
	// The parent context looks the name up from there to the app, whose
	// copies read the environment.
	if lineage := c.Lineage(); len(lineage) > 1 && lineage[1].IsSet(name) {
		return lineage[1].String(name)
	}
	if v, ok := file.Value(name); ok && name != "config" {
		return v
	}
	for _, o := range globalOptions {
		if o.name == name {
			return o.value
		}
	}
	return ""
}

// setUp runs before each command: it reads the config file into the
// command's own flags (those not set on the command line or by the
// environment) and builds the logger.
func (a *app) setUp(c *cli.Context, own []cli.Flag) error {
	file, err := LoadConfigFile(a.global.value(c, nil, "config"))
	if err != nil {
		return err
	}
	if err := file.Apply(c, own, a.global.appFlags()); err != nil {
		return err
	}
	a.log, err = newLogger(a.logw, a.global.value(c, file, "log-level"), a.global.value(c, file, "log-format"))
	return err
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
