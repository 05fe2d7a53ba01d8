package coordinator

import (
	"fmt"
	"testing"

	"github.com/matryer/is"
)

// TestMapCursor: a walk paused between steps while entries are added and
// removed visits every entry present for the whole walk exactly once,
// never one removed before it was reached, and reports the end once.
func TestMapCursor(t *testing.T) {
	is := is.New(t)
	m := map[string]int{}
	for i := range 1000 {
		m[fmt.Sprint("keep", i)] = i
		m[fmt.Sprint("drop", i)] = i
	}
	c := mapCursor[string, int]{m: m}
	defer c.close()
	seen, deleted := map[string]int{}, map[string]bool{}
	wraps, steps, late := 0, 0, 0
	for wraps == 0 && steps < 1000 {
		if c.step(7, func(k string, _ int) {
			seen[k]++
			if deleted[k] {
				late++
			}
		}) {
			wraps++
		}
		steps++
		// Between steps: remove an entry, add three (the map grows).
		deleted[fmt.Sprint("drop", steps)] = true
		delete(m, fmt.Sprint("drop", steps))
		for j := range 3 {
			m[fmt.Sprint("new", steps, "-", j)] = j
		}
	}
	is.Equal(wraps, 1) // the walk ended
	for i := range 1000 {
		is.Equal(seen[fmt.Sprint("keep", i)], 1) // every kept entry once
	}
	for _, n := range seen {
		is.Equal(n, 1) // nothing twice
	}
	is.Equal(late, 0) // nothing removed before it was reached

	// The next step starts a new walk.
	again := 0
	for range 10000 {
		if c.step(100, func(string, int) { again++ }) {
			break
		}
	}
	is.Equal(again, len(m)) // the whole map, as it is now
}
