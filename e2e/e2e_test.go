package e2e

import (
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	dfscli "github.com/dfs-project/dfs/roles/cli"
)

// root is the repository's root, seen from this package's directory
// (where go test runs the tests): the binary is built there, and
// deploy/, docs/ and testdata/ are read from there.
const root = ".."

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// commandFlags returns the global flags (key "") and the flags of every
// command and subcommand, keyed "dfs <command>", as the binary declares
// them.
func commandFlags() map[string][]cli.Flag {
	app := dfscli.App(dfscli.Version{}, dfscli.IO{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}, io.Discard)
	out := map[string][]cli.Flag{"": app.Flags}
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			name := prefix + " " + c.Name
			out[name] = c.Flags
			walk(name, c.Subcommands)
		}
	}
	walk("dfs", app.Commands)
	return out
}

// flagEnvs returns the environment variables a flag reads.
func flagEnvs(f cli.Flag) []string {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		return d.GetEnvVars()
	}
	return nil
}
