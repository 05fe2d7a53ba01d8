package coordinator

import (
	"slices"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/rpc"
)

// TestTrimFirst: of a chunk's surplus copies, the ones on suspect nodes
// are trimmed first, so the copies that stay are on healthy nodes; among
// nodes in the same state, the one that (re)joined last loses its copy.
func TestTrimFirst(t *testing.T) {
	is := is.New(t)
	t0 := time.Now()
	copyOn := func(node string, state placement.State, registered time.Duration) copyState {
		return copyState{node: rpc.NodeID(node), info: nodeInfo{state: state, known: true}, registry: t0.Add(registered)}
	}
	counts := []copyState{
		copyOn("old-healthy", placement.Healthy, 0),
		copyOn("new-healthy", placement.Healthy, 2*time.Minute),
		copyOn("old-suspect", placement.Suspect, time.Minute),
		copyOn("new-suspect", placement.Suspect, 3*time.Minute),
	}
	slices.SortFunc(counts, trimFirst)
	var order []string
	for _, cs := range counts {
		order = append(order, string(cs.node))
	}
	is.Equal(order, []string{"new-suspect", "old-suspect", "new-healthy", "old-healthy"})
}
