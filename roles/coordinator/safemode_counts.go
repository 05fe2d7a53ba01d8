package coordinator

// locatedCounts is safe mode's counts over today's refIndex and
// locations, until the chunk index keeps the counts as counters: it copies
// the references (refs' lock held only for the copy) and checks each
// chunk's copies under the locations' lock for that chunk alone, so report
// pages, /metrics and the other readers of refs go on meanwhile. It is
// O(chunks) per call; safe mode calls it off its own loop.
func locatedCounts(refs *refIndex, locs *locations) func() (missing, under, total int) {
	return func() (missing, under, total int) {
		all := refs.snapshot()
		for _, x := range all {
			good, _ := locs.check(x.chunk)
			switch n := len(good); {
			case n == 0:
				missing++
				under++
			case n < int(x.repl):
				under++
			}
		}
		return missing, under, len(all)
	}
}
