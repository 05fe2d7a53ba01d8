package repair

import (
	"flag"
	"os"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the expected output in testdata files")

// testCase is one case of a testdata file, in the style of pebble's
// datadriven files:
//
//	# comments and blank lines between cases
//	command key=value flag
//	input line
//	----
//	expected output, up to a blank line or the end of the file
type testCase struct {
	pos   string            // file:line of the command
	cmd   string            // the command's first word
	args  map[string]string // its key=value words; a bare word maps to ""
	input []string          // the lines between the command and ----
	want  string            // the expected output

	wantFrom, wantTo int // the lines of the expected output
}

// runTestdata runs every case of the file at path through run, which
// returns the output; with -update, the file's expected outputs are
// rewritten with what run returned.
func runTestdata(t *testing.T, path string, run func(t *testing.T, tc *testCase) string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	cases := parseTestdata(t, path, lines)
	var got []string
	for _, tc := range cases {
		out := strings.TrimRight(run(t, tc), "\n")
		got = append(got, out)
		if !*update && out != tc.want {
			t.Errorf("%s: %s:\ngot:\n%s\nwant:\n%s", tc.pos, tc.cmd, out, tc.want)
		}
	}
	if !*update {
		return
	}
	var w strings.Builder
	next := 0
	for i, tc := range cases {
		for _, l := range lines[next:tc.wantFrom] {
			w.WriteString(l + "\n")
		}
		if got[i] != "" {
			w.WriteString(got[i] + "\n")
		}
		next = tc.wantTo
	}
	for _, l := range lines[next:] {
		w.WriteString(l + "\n")
	}
	if err := os.WriteFile(path, []byte(w.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func parseTestdata(t *testing.T, path string, lines []string) []*testCase {
	t.Helper()
	var cases []*testCase
	for i := 0; i < len(lines); {
		line := strings.TrimSpace(lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			i++
			continue
		}
		words := strings.Fields(line)
		tc := &testCase{pos: path + ":" + strconv.Itoa(i+1), cmd: words[0], args: map[string]string{}}
		for _, w := range words[1:] {
			k, v, _ := strings.Cut(w, "=")
			tc.args[k] = v
		}
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "----"; i++ {
			tc.input = append(tc.input, strings.TrimSpace(lines[i]))
		}
		if i == len(lines) {
			t.Fatalf("%s: no ---- after the input", tc.pos)
		}
		i++
		tc.wantFrom = i
		var want []string
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			want = append(want, lines[i])
		}
		tc.wantTo = i
		tc.want = strings.Join(want, "\n")
		cases = append(cases, tc)
	}
	return cases
}
