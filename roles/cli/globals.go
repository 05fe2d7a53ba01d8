package cli

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/rpc"
)

// globals are the options every command takes: the config file, the
// logger's level and format, and how the command's connections are
// secured (TLS files, a bearer token, or --insecure).
type globals struct{}

// The global options: name, default, environment variable, usage, and
// whether it is a boolean (a flag without a value).
var globalOptions = []struct {
	name, value, env, usage string
	boolean                 bool
}{
	{"config", "", "DFS_CONFIG", "YAML file of options (flag names as keys) for the command run; flags and environment variables override it", false},
	{"log-level", "info", "DFS_LOG_LEVEL", "debug, info, warn or error", false},
	{"log-format", "auto", "DFS_LOG_FORMAT", "auto (console on a terminal, else JSON), console or json", false},
	{"tls-ca", "", "DFS_TLS_CA", "PEM file of the CA that signs the cluster's certificates (dfs admin ca init); every connection uses TLS", false},
	{"tls-cert", "", "DFS_TLS_CERT", "this process's certificate (dfs admin cert issue): a server's, or a client's, whose name is the user", false},
	{"tls-key", "", "DFS_TLS_KEY", "the private key of --tls-cert", false},
	{"tls-crl", "", "DFS_TLS_CRL", "the CA's revocation list (dfs admin cert revoke): certificates it lists are refused", false},
	{"token", "", "DFS_TOKEN", "bearer token (dfs admin token create) a client authenticates with instead of a certificate", false},
	{"insecure", "false", "DFS_INSECURE", "run in plain text, without TLS or authentication (anyone who reaches a port can do anything)", true},
}

// appFlags are the global options as the app declares them, before the
// command; they read the environment.
func (globals) appFlags() []cli.Flag {
	out := make([]cli.Flag, 0, len(globalOptions))
	for _, o := range globalOptions {
		if o.boolean {
			out = append(out, &cli.BoolFlag{Name: o.name, EnvVars: []string{o.env}, Usage: o.usage})
			continue
		}
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
		if o.boolean {
			out = append(out, &cli.BoolFlag{Name: o.name, Usage: o.usage, Hidden: true})
			continue
		}
		out = append(out, &cli.StringFlag{Name: o.name, Value: o.value, Usage: o.usage, Hidden: true})
	}
	return out
}

// boolOption reports whether a global option is a boolean.
func boolOption(name string) bool {
	for _, o := range globalOptions {
		if o.name == name {
			return o.boolean
		}
	}
	return false
}

// value resolves a global option for the command run by c: given after
// the command, then before it or in the environment, then in the config
// file, then the default.
func (globals) value(c *cli.Context, file *ConfigFile, name string) string {
	get := (*cli.Context).String
	if boolOption(name) {
		get = func(c *cli.Context, name string) string { return strconv.FormatBool(c.Bool(name)) }
	}
	if c.IsSet(name) {
		return get(c, name)
	}
	// The parent context looks the name up from there to the app, whose
	// copies read the environment.
	if lineage := c.Lineage(); len(lineage) > 1 && lineage[1].IsSet(name) {
		return get(lineage[1], name)
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
	if err != nil {
		return err
	}
	a.sec = security{
		files: pki.Files{
			CA: a.global.value(c, file, "tls-ca"), Cert: a.global.value(c, file, "tls-cert"),
			Key: a.global.value(c, file, "tls-key"), CRL: a.global.value(c, file, "tls-crl"),
		},
		token: a.global.value(c, file, "token"),
	}
	a.sec.insecure, err = strconv.ParseBool(a.global.value(c, file, "insecure"))
	if err != nil {
		return rpc.Errorf(rpc.Invalid, "--insecure: %w", err)
	}
	return a.sec.check()
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
