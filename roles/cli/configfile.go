package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"
)

// ConfigFile holds the options read from a YAML config file: one flat
// mapping from flag name (without dashes) to value, for the command being
// run and the global flags. A value applies only where neither the command
// line nor the flag's environment variable set it, so the precedence is
// flag > environment > file > default.
//
// It is read by hand rather than through urfave/cli's altsrc, which would
// change what files mean: altsrc refuses a size ("64MiB") for a generic
// flag and a list for a string flag (coordinator: [a:7000, b:7000]), and
// silently ignores a key that names no flag. Apply works on any flag by
// its name, so no option is listed twice.
type ConfigFile struct {
	Path   string
	values map[string]string
}

// LoadConfigFile reads and parses path. An empty path is no file.
func LoadConfigFile(path string) (*ConfigFile, error) {
	cf := &ConfigFile{Path: path, values: map[string]string{}}
	if path == "" {
		return cf, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var raw map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config file %s: %v", path, firstLine(err.Error()))
	}
	for k, v := range raw {
		s, err := scalar(v)
		if err != nil {
			return nil, fmt.Errorf("config file %s: key %q: %v", path, k, err)
		}
		cf.values[k] = s
	}
	return cf, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// scalar renders a YAML value as a flag value; a list becomes a
// comma-separated list (coordinator and etcd addresses).
func scalar(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(v), nil
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			s, err := scalar(e)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("want a plain value or a list, got %T", v)
}

// Apply sets, on the command context c, every value of the file that names
// one of flags and was not set on the command line or by the environment.
// Keys that are none of flags and none of also are an error, as is a value
// the flag refuses.
func (cf *ConfigFile) Apply(c *cli.Context, flags []cli.Flag, also []cli.Flag) error {
	if cf == nil || len(cf.values) == 0 {
		return nil
	}
	known := map[string]bool{}
	for _, f := range append(slices.Clone(flags), also...) {
		for _, n := range f.Names() {
			known[n] = true
		}
	}
	var unknown []string
	for k := range cf.values {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("config file %s: unknown key %q for dfs %s", cf.Path, unknown[0], c.Command.FullName())
	}
	for _, f := range flags {
		name := f.Names()[0]
		v, ok := cf.values[name]
		if !ok || c.IsSet(name) {
			continue
		}
		if err := c.Set(name, v); err != nil {
			return fmt.Errorf("config file %s: invalid value %q for %s: %v", cf.Path, v, name, err)
		}
	}
	return nil
}

// Value returns the file's value for the option name, if it has one.
func (cf *ConfigFile) Value(name string) (string, bool) {
	if cf == nil {
		return "", false
	}
	v, ok := cf.values[name]
	return v, ok
}
