package repair

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
)

// TestAssess runs the cases of testdata/assess:
//
//	assess want=N [size=BYTES] [repairing]
//	copy NODE healthy|suspect|dead [unknown] good|mismatch|corrupt [draining] [registered=DURATION]
//	candidate NODE healthy|suspect|dead [free=BYTES] [queued]
//	----
//	counted=N want=N [missing=N copyable|lost]
//	sources: NODE...   (each line only when not empty)
//	holders: NODE...
//	trim: NODE...
//	bad: NODE...
//	corrupt: NODE...
//	still-needed: NODE...
//
// A copy's node registered DURATION after a fixed time (0 by default); a
// queued candidate has the deletion of the chunk's copy queued.
func TestAssess(t *testing.T) {
	datadriven.RunTest(t, "testdata/assess", func(t *testing.T, tc *datadriven.TestData) string {
		if tc.Cmd != "assess" {
			t.Fatalf("%s: unknown command %q", tc.Pos, tc.Cmd)
		}
		ch := Chunk{ID: "c", Size: 1}
		for _, a := range tc.CmdArgs {
			k, v := a.Key, strings.Join(a.Vals, ",")
			switch k {
			case "want":
				ch.Want = atoi(t, tc.Pos, v)
			case "size":
				ch.Size = int64(atoi(t, tc.Pos, v))
			case "repairing":
				ch.Repairing = true
			default:
				t.Fatalf("%s: unknown argument %q", tc.Pos, k)
			}
		}
		var candidates []placement.Node
		queued := map[rpc.NodeID]bool{}
		for _, line := range strings.Split(tc.Input, "\n") {
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			words := strings.Fields(line)
			if len(words) < 2 {
				t.Fatalf("%s: %q: want a kind and a node", tc.Pos, line)
			}
			node := rpc.NodeID(words[1])
			switch words[0] {
			case "copy":
				ch.Copies = append(ch.Copies, parseCopy(t, tc.Pos, node, words[2:]))
			case "candidate":
				c := placement.Node{ID: node, Free: 1 << 40}
				for _, w := range words[2:] {
					k, v, _ := strings.Cut(w, "=")
					switch k {
					case "healthy", "suspect", "dead":
						c.State = parseState(w)
					case "free":
						c.Free = int64(atoi(t, tc.Pos, v))
					case "queued":
						queued[node] = true
					default:
						t.Fatalf("%s: %q: unknown word %q", tc.Pos, line, w)
					}
				}
				candidates = append(candidates, c)
			default:
				t.Fatalf("%s: %q: unknown kind %q", tc.Pos, line, words[0])
			}
		}
		return formatAssessment(Assess(ch, candidates, func(n rpc.NodeID) bool { return queued[n] }), ch.Want)
	})
}

func parseCopy(t *testing.T, pos string, node rpc.NodeID, words []string) Copy {
	t.Helper()
	c := Copy{Node: node, Addr: string(node) + ":1", Known: true, Registered: time.Unix(0, 0)}
	kinds := 0
	for _, w := range words {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "healthy", "suspect", "dead":
			c.State = parseState(w)
		case "unknown":
			c.Known = false
		case "good":
			c.Good = true
			kinds++
		case "mismatch":
			kinds++
		case "corrupt":
			c.Corrupt = true
			kinds++
		case "draining":
			c.Draining = true
		case "registered":
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("%s: %v", pos, err)
			}
			c.Registered = c.Registered.Add(d)
		default:
			t.Fatalf("%s: copy on %s: unknown word %q", pos, node, w)
		}
	}
	if kinds != 1 {
		t.Fatalf("%s: copy on %s: want exactly one of good, mismatch, corrupt", pos, node)
	}
	return c
}

func parseState(w string) placement.State {
	switch w {
	case "suspect":
		return placement.Suspect
	case "dead":
		return placement.Dead
	}
	return placement.Healthy
}

func atoi(t *testing.T, pos, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s: %v", pos, err)
	}
	return n
}

func formatAssessment(a Assessment, want int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "counted=%d want=%d", a.Counted, want)
	switch {
	case a.Copyable():
		fmt.Fprintf(&b, " missing=%d copyable", a.Missing)
	case a.Lost():
		fmt.Fprintf(&b, " missing=%d lost", a.Missing)
	}
	b.WriteString("\n")
	list := func(name string, ids []rpc.NodeID) {
		if len(ids) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s:", name)
		for _, id := range ids {
			fmt.Fprintf(&b, " %s", id)
		}
		b.WriteString("\n")
	}
	var sources []rpc.NodeID
	for _, s := range a.Sources {
		sources = append(sources, s.ID)
	}
	list("sources", sources)
	list("holders", a.Holders)
	list("trim", a.Trim)
	list("bad", a.Bad)
	list("corrupt", a.Corrupt)
	list("still-needed", a.StillNeeded)
	return b.String()
}

// TestAssessNeed: a copyable chunk's assessment is the repair.Need the
// controller takes, with the chunk's committed size, frame size and
// digest and each source's address and state.
func TestAssessNeed(t *testing.T) {
	is := is.New(t)
	ch := Chunk{ID: chunk(7), Size: 300, FrameSize: 100, Digest: []byte{1, 2, 3}, Want: 2, Copies: []Copy{
		{Node: "a", Addr: "10.0.0.1:7001", Known: true, State: placement.Suspect, Good: true},
		{Node: "b", Addr: "10.0.0.2:7001", Known: true, State: placement.Dead, Good: true},
	}}
	a := Assess(ch, nil, nil)
	is.True(a.Copyable()) // one live good copy to copy from
	is.Equal(a.Need, Need{Chunk: chunk(7), Size: 300, FrameSize: 100, Digest: []byte{1, 2, 3}, Missing: 1,
		Sources: []placement.Node{{ID: "a", Addr: "10.0.0.1:7001", State: placement.Suspect}},
		Holders: []rpc.NodeID{"a", "b"}}) // the need as the controller takes it
}

// TestAssessAsksQueuedOnlyWhenShort: whether a deletion is queued on a
// candidate is asked only of a copyable chunk short of copies, the only
// case where it decides anything.
func TestAssessAsksQueuedOnlyWhenShort(t *testing.T) {
	is := is.New(t)
	asked := 0
	queued := func(rpc.NodeID) bool { asked++; return false }
	candidates := []placement.Node{{ID: "d", State: placement.Healthy, Free: 1 << 30}}
	good := func(n rpc.NodeID) Copy { return Copy{Node: n, Known: true, Good: true} }
	Assess(Chunk{ID: "c", Want: 2, Copies: []Copy{good("a"), good("b")}}, candidates, queued)
	is.Equal(asked, 0) // enough copies: nothing to place
	Assess(Chunk{ID: "c", Want: 2, Copies: []Copy{{Node: "a", Known: true, State: placement.Dead, Good: true}}}, candidates, queued)
	is.Equal(asked, 0) // lost: nothing to copy from
	Assess(Chunk{ID: "c", Want: 2, Copies: []Copy{good("a")}}, candidates, queued)
	is.Equal(asked, 1) // short and copyable: is there room?
}
