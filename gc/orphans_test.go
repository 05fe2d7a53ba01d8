package gc_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/gc"
	"github.com/dfs-project/dfs/rpc"
)

// TestOrphans runs the cases of testdata/orphans, one look each; when
// each chunk was first seen carries from one look to the next in the file
// until a reset:
//
//	orphans now=DURATION grace=DURATION
//	reported CHUNK NODE...
//	referenced CHUNK...
//	placed CHUNK...
//	claimed CHUNK...
//	----
//	orphans: CHUNK@NODE...        (only when there are some)
//	first-seen: CHUNK=DURATION... (only when there are some)
//
//	reset
//	----
//	ok
//
// Times are durations after a fixed time.
func TestOrphans(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var firstSeen map[rpc.ChunkID]time.Time
	datadriven.RunTest(t, "testdata/orphans", func(t *testing.T, tc *datadriven.TestData) string {
		switch tc.Cmd {
		case "reset":
			firstSeen = nil
			return "ok"
		case "orphans":
		default:
			t.Fatalf("%s: unknown command %q", tc.Pos, tc.Cmd)
		}
		in := gc.Inventory{FirstSeen: firstSeen}
		for _, a := range tc.CmdArgs {
			k, v := a.Key, strings.Join(a.Vals, ",")
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("%s: %s: %v", tc.Pos, k, err)
			}
			switch k {
			case "now":
				in.Now = t0.Add(d)
			case "grace":
				in.Grace = d
			default:
				t.Fatalf("%s: unknown argument %q", tc.Pos, k)
			}
		}
		var reported []rpc.ChunkID
		holders := map[rpc.ChunkID][]rpc.NodeID{}
		sets := map[string]map[rpc.ChunkID]bool{"referenced": {}, "placed": {}, "claimed": {}}
		for _, line := range strings.Split(tc.Input, "\n") {
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			words := strings.Fields(line)
			switch {
			case len(words) < 2:
				t.Fatalf("%s: %q: want a kind and a chunk", tc.Pos, line)
			case words[0] == "reported":
				id := rpc.ChunkID(words[1])
				reported = append(reported, id)
				for _, n := range words[2:] {
					holders[id] = append(holders[id], rpc.NodeID(n))
				}
			case sets[words[0]] != nil:
				for _, w := range words[1:] {
					sets[words[0]][rpc.ChunkID(w)] = true
				}
			default:
				t.Fatalf("%s: %q: unknown kind %q", tc.Pos, line, words[0])
			}
		}
		in.Reported = func(yield func(rpc.ChunkID, []rpc.NodeID) bool) {
			for _, id := range reported {
				if !yield(id, holders[id]) {
					return
				}
			}
		}
		in.Referenced = func(id rpc.ChunkID) bool { return sets["referenced"][id] }
		in.Placed = func(id rpc.ChunkID) bool { return sets["placed"][id] }
		in.Claimed = func(id rpc.ChunkID) bool { return sets["claimed"][id] }

		var orphans []gc.Orphan
		orphans, firstSeen = gc.Orphans(in)

		var b strings.Builder
		if len(orphans) > 0 {
			b.WriteString("orphans:")
			for _, o := range orphans {
				fmt.Fprintf(&b, " %s@%s", o.Chunk, o.Node)
			}
			b.WriteString("\n")
		}
		if len(firstSeen) > 0 {
			b.WriteString("first-seen:")
			for _, id := range slices.Sorted(maps.Keys(firstSeen)) {
				fmt.Fprintf(&b, " %s=%s", id, firstSeen[id].Sub(t0))
			}
			b.WriteString("\n")
		}
		return b.String()
	})
}

// TestOrphansLeavesItsInputAlone: the first-seen times passed in are not
// modified, and a nil function means nothing is needed that way.
func TestOrphansLeavesItsInputAlone(t *testing.T) {
	is := is.New(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	before := map[rpc.ChunkID]time.Time{"gone": t0, "old": t0}
	in := gc.Inventory{
		Reported:  maps.All(map[rpc.ChunkID][]rpc.NodeID{"old": {"n1"}, "new": {"n2"}}),
		FirstSeen: before,
		Grace:     time.Minute,
		Now:       t0.Add(time.Hour),
	}
	orphans, after := gc.Orphans(in)
	is.Equal(orphans, []gc.Orphan{{Node: "n1", Chunk: "old"}})                      // nil Referenced, Placed, Claimed: nothing needs it
	is.Equal(after, map[rpc.ChunkID]time.Time{"old": t0, "new": t0.Add(time.Hour)}) // the new state
	is.Equal(before, map[rpc.ChunkID]time.Time{"gone": t0, "old": t0})              // the old one untouched
	is.Equal(len(in.FirstSeen), 2)                                                  // still the caller's map
}
