package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/urfave/cli/v2"
)

// runWithConfig runs a command with three flags through a config file and
// returns what the command saw.
func runWithConfig(t *testing.T, file string, env map[string]string, args ...string) (map[string]string, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	got := map[string]string{}
	var cf *ConfigFile
	cmd := &cli.Command{
		Name: "role",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "default:1", EnvVars: []string{"DFS_TEST_LISTEN"}},
			&cli.DurationFlag{Name: "timeout", Value: time.Second, EnvVars: []string{"DFS_TEST_TIMEOUT"}},
			&cli.StringFlag{Name: "peers", EnvVars: []string{"DFS_TEST_PEERS"}},
		},
		Before: func(c *cli.Context) error { return cf.Apply(c, c.Command.Flags, nil) },
		Action: func(c *cli.Context) error {
			got["listen"], got["timeout"], got["peers"] = c.String("listen"), c.Duration("timeout").String(), c.String("peers")
			return nil
		},
	}
	app := &cli.App{
		Flags: []cli.Flag{&cli.StringFlag{Name: "config"}},
		Before: func(c *cli.Context) error {
			var err error
			cf, err = LoadConfigFile(c.String("config"))
			return err
		},
		Commands: []*cli.Command{cmd},
	}
	err := app.RunContext(context.Background(), append([]string{"dfs", "--config", file, "role"}, args...))
	return got, err
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dfs.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFilePrecedence(t *testing.T) {
	is := is.New(t)
	file := writeConfig(t, "listen: file:1\ntimeout: 5s\npeers: [a:1, b:2]\n")
	got, err := runWithConfig(t, file, nil)
	is.NoErr(err)
	is.Equal(got["listen"], "file:1") // the file beats the default
	is.Equal(got["timeout"], "5s")    // typed values parse
	is.Equal(got["peers"], "a:1,b:2") // a list becomes a comma-separated list

	got, err = runWithConfig(t, file, map[string]string{"DFS_TEST_LISTEN": "env:1"})
	is.NoErr(err)
	is.Equal(got["listen"], "env:1") // the environment beats the file
	is.Equal(got["timeout"], "5s")   // the file still sets the rest

	got, err = runWithConfig(t, file, map[string]string{"DFS_TEST_LISTEN": "env:1"}, "--listen", "flag:1")
	is.NoErr(err)
	is.Equal(got["listen"], "flag:1") // the command line beats everything
}

func TestConfigFileRefusals(t *testing.T) {
	for _, tt := range []struct {
		name, text, want string
	}{
		{"unknown key", "listen: a:1\nlistn: b:2\n", `unknown key "listn"`},
		{"invalid duration", "timeout: forever\n", `invalid value "forever" for timeout`},
		{"not a mapping", "- listen\n", "config file"},
		{"nested value", "listen: {a: 1}\n", `key "listen"`},
		{"broken yaml", "listen: [a\n", "config file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			_, err := runWithConfig(t, writeConfig(t, tt.text), nil)
			is.True(err != nil)                             // refused
			is.True(strings.Contains(err.Error(), tt.want)) // saying what is wrong
			is.True(!strings.Contains(err.Error(), "\n"))   // on one line
		})
	}
	is := is.New(t)
	_, err := runWithConfig(t, filepath.Join(t.TempDir(), "missing.yaml"), nil)
	is.True(err != nil && strings.Contains(err.Error(), "no such file")) // a missing file is an error
}
