package cli

import (
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"
	"github.com/urfave/cli/v2"
)

// configDocPath is the page that documents every flag.
const configDocPath = "../../docs/configuration.md"

// configDocGlobal is the heading of the global flags' section; every other
// flag section is headed "dfs <command>".
const configDocGlobal = "Global flags"

// configDocRow is one flag row of docs/configuration.md:
// | `--name`, `-alias` | `DFS_ENV` or none | `default` ... | description |
type configDocRow struct {
	line    int
	names   []string // as written, dashes included
	envs    []string // nil for "none"
	deflt   string   // the first backquoted token of the default cell
	hasDesc bool
}

var configDocCode = regexp.MustCompile("`([^`]*)`")

// parseConfigDoc returns the flag rows of each "## " section, keyed by
// the heading's text. Rows are table lines whose first cell starts with a
// backquoted dash.
func parseConfigDoc(t *testing.T, doc string) map[string][]configDocRow {
	t.Helper()
	is := is.New(t)
	out := map[string][]configDocRow{}
	section := ""
	for i, line := range strings.Split(doc, "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			section = strings.TrimSpace(h)
			continue
		}
		if !strings.HasPrefix(line, "| `-") {
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		is.Equal(len(cells), 4) // a flag row has four cells: flag | environment | default | description
		row := configDocRow{line: i + 1, hasDesc: strings.TrimSpace(cells[3]) != ""}
		for _, m := range configDocCode.FindAllStringSubmatch(cells[0], -1) {
			row.names = append(row.names, m[1])
		}
		if env := strings.TrimSpace(cells[1]); env != "none" {
			for _, m := range configDocCode.FindAllStringSubmatch(env, -1) {
				row.envs = append(row.envs, m[1])
			}
			is.True(len(row.envs) > 0) // the environment cell is "none" or backquoted variable names
		}
		m := configDocCode.FindStringSubmatch(cells[2])
		is.True(m != nil) // the default cell starts with the backquoted default
		row.deflt = m[1]
		out[section] = append(out[section], row)
	}
	return out
}

// configDocNames renders a flag's names as the doc writes them: "--name"
// for long names, "-x" for one-letter aliases.
func configDocNames(f cli.Flag) []string {
	var out []string
	for _, n := range f.Names() {
		if len(n) == 1 {
			out = append(out, "-"+n)
		} else {
			out = append(out, "--"+n)
		}
	}
	return out
}

// configDocDefault renders a flag's default as the doc writes it: the
// text `dfs CMD --help` shows, without Go quotes, and "" when empty.
func configDocDefault(t *testing.T, f cli.Flag) string {
	t.Helper()
	d, ok := f.(cli.DocGenerationFlag)
	if !ok {
		t.Fatalf("flag %s: %T does not describe its default", f.Names()[0], f)
	}
	s := d.GetDefaultText()
	if u, err := strconv.Unquote(s); err == nil {
		s = u
	}
	if s == "" {
		return `""`
	}
	return s
}

func configDocEnvs(f cli.Flag) []string {
	if d, ok := f.(cli.DocGenerationFlag); ok && len(d.GetEnvVars()) > 0 {
		return d.GetEnvVars()
	}
	return nil
}

// configDocCommands returns the flags of every command and subcommand,
// keyed by the doc's section heading.
func configDocCommands(app *cli.App) map[string][]cli.Flag {
	out := map[string][]cli.Flag{configDocGlobal: app.Flags}
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			name := prefix + " " + c.Name
			for _, f := range c.Flags {
				// The hidden copies of the global flags are documented once,
				// under Global flags.
				if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
					continue
				}
				// --help is not listed (the doc says so), also where a
				// command declares its own (its -h is --human-readable).
				if f.Names()[0] == "help" {
					continue
				}
				out[name] = append(out[name], f)
			}
			walk(name, c.Subcommands)
		}
	}
	walk("dfs", app.Commands)
	return out
}

// TestConfigDoc checks docs/configuration.md against the real flag
// definitions: every flag of every command has exactly one row in its
// command's section with its names, environment variables and default, and
// no row documents a flag or command that does not exist.
func TestConfigDoc(t *testing.T) {
	is := is.New(t)
	doc, err := os.ReadFile(configDocPath)
	is.NoErr(err) // docs/configuration.md is readable
	sections := parseConfigDoc(t, string(doc))
	app := App(Version{}, IO{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}, io.Discard)
	commands := configDocCommands(app)
	is.True(len(commands) > 1) // the app has commands to document

	for section, rows := range sections {
		if _, ok := commands[section]; !ok {
			t.Errorf("%s:%d: section %q documents flags, but there is no such command", configDocPath, rows[0].line, section)
		}
	}

	for section, flags := range commands {
		t.Run(section, func(t *testing.T) {
			is := is.New(t)
			if len(flags) == 0 {
				return
			}
			rows, ok := sections[section]
			if !ok {
				t.Fatalf("%s has no \"## %s\" section with the command's flags", configDocPath, section)
			}
			byName := map[string]configDocRow{}
			for _, r := range rows {
				is.True(len(r.names) > 0) // a row names its flag
				if _, dup := byName[r.names[0]]; dup {
					t.Errorf("%s:%d: %s is documented twice in %q", configDocPath, r.line, r.names[0], section)
				}
				byName[r.names[0]] = r
			}
			for _, f := range flags {
				names := configDocNames(f)
				want := configDocRow{names: names, envs: configDocEnvs(f), deflt: configDocDefault(t, f)}
				r, ok := byName[names[0]]
				if !ok {
					t.Errorf("%s: %q has no row for %s; add:\n%s", configDocPath, section, names[0], want.render())
					continue
				}
				delete(byName, names[0])
				if !slices.Equal(r.names, want.names) || !slices.Equal(r.envs, want.envs) || r.deflt != want.deflt || !r.hasDesc {
					t.Errorf("%s:%d: row for %s in %q is out of date; want:\n%s", configDocPath, r.line, names[0], section, want.render())
				}
			}
			for name, r := range byName {
				t.Errorf("%s:%d: %q documents %s, which the command does not have", configDocPath, r.line, section, name)
			}
		})
	}
}

// render returns the row as it should appear, with a placeholder
// description.
func (r configDocRow) render() string {
	q := func(ss []string) string {
		if len(ss) == 0 {
			return "none"
		}
		return "`" + strings.Join(ss, "`, `") + "`"
	}
	return "| " + q(r.names) + " | " + q(r.envs) + " | `" + r.deflt + "` | DESCRIPTION |"
}
