package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// TestGlobalFlagsAnywhere pins where the global flags may stand and which
// one wins: after the command, before it, the environment, the config
// file, the default. An invalid --log-level makes the chosen value show:
// the command fails saying so.
func TestGlobalFlagsAnywhere(t *testing.T) {
	loud := filepath.Join(t.TempDir(), "loud.yaml")
	if err := os.WriteFile(loud, []byte("log-level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  string // DFS_LOG_LEVEL, when set
		args []string
		bad  bool // the loud level was chosen
	}{
		{"after the command", "", []string{"version", "--log-level", "loud"}, true},
		{"before the command", "", []string{"--log-level", "loud", "version"}, true},
		{"after beats before", "", []string{"--log-level", "loud", "version", "--log-level", "warn"}, false},
		{"after beats the environment", "loud", []string{"version", "--log-level", "warn"}, false},
		{"before beats the environment", "loud", []string{"--log-level", "warn", "version"}, false},
		{"the environment", "loud", []string{"version"}, true},
		{"the file given after the command", "", []string{"version", "--config", loud}, true},
		{"the file given before the command", "", []string{"--config", loud, "version"}, true},
		{"a flag beats the file", "", []string{"--config", loud, "version", "--log-level", "warn"}, false},
		{"the environment beats the file", "warn", []string{"version", "--config", loud}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			if tc.env != "" {
				t.Setenv("DFS_LOG_LEVEL", tc.env)
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			r := dfsRun(ctx, nil, tc.args...)
			if !tc.bad {
				is.NoErr(r.err) // a valid level won
				return
			}
			is.True(r.err != nil && strings.Contains(r.err.Error(), `invalid --log-level "loud"`)) // the loud level won
		})
	}
}

// TestSuggest: a mistyped command or flag is refused with the name meant.
func TestSuggest(t *testing.T) {
	is := is.New(t)
	r := dfsRun(t.Context(), nil, "lss")
	is.True(r.err != nil && strings.Contains(r.err.Error(), `Did you mean "ls"?`)) // a command
	r = dfsRun(t.Context(), nil, "ls", "--jsn")
	is.True(r.err != nil && strings.Contains(r.err.Error(), "did you mean --json?")) // a flag
	is.True(!strings.Contains(r.err.Error(), "\n"))                                  // on one line
	r = dfsRun(t.Context(), nil, "ls", "--zzzzzzzzzz")
	is.True(r.err != nil && !strings.Contains(r.err.Error(), "did you mean")) // nothing close: no suggestion
}
