package coordinator

import (
	"bytes"
	"context"
	"encoding/hex"
	"hash/maphash"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// chunkIndex is the coordinator's one in-memory record of chunks: which
// chunks committed files reference (with the committed size, frame size,
// digest prefix and replication) and, from the datanodes' own reports, which
// nodes hold a copy of each. It replaces a reference map and a location
// map of maps that held every chunk twice (~1 KB of heap per one-chunk
// file); see docs/architecture.md, "The chunk index", for the layout and
// its figures.
//
// Chunk IDs are interned to dense slots in pages of fixed-size entries,
// found through an open-addressing table of slots; node IDs to small
// indexes. A copy is 20 bits inline in its chunk's entry (3 inline, more
// in a side map): the node index and flags. A copy of a committed chunk
// does not keep what its node reported, only whether that matched the
// committed size, frame size and digest prefix (the index keeps the
// first rpc.DigestPrefixSize bytes of a committed digest: whoever needs
// the whole one takes it from the file's record or the source datanode);
// a copy reported before its chunk is committed (an open upload's, or an
// orphan's) keeps its report in a small side table until the commit
// decides. Each node has a packed list of the slots it holds a copy of
// (slotList), so that a full inventory forgets the node's
// copies in O(that node's copies), and the safe mode counters (referenced
// chunks, those without a good copy, those under their replication) are
// kept up to date as copies and references change, so reading them is
// O(1).
//
// Copies whose deletion is queued are held apart: they are still on their
// nodes' disks (for --gc-delay, or until their node is back), but they are
// not counted, listed or served. The health scan takes one back (restore)
// when its chunk needs it after all. Waiters are woken on every change.
//
// The reference side of the index is seen through refIndex (the same
// value under another type), so that its callers keep their vocabulary.
type chunkIndex struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change

	pages []*[pageSize]entry // slot s is pages[s/pageSize][s%pageSize]
	used  int32              // slots handed out so far
	free  []int32            // freed slots, reused first
	table []int32            // open addressing (linear probing): slot+1, 0 empty
	live  int                // slots in table
	seed  maphash.Seed
	odd   map[rpc.ChunkID]int32 // IDs not in rpc.NewChunkID's form (tests, old data)
	names map[int32]rpc.ChunkID // their slots' IDs

	more    map[int32][]copyRef // copies beyond the inline ones
	frames  frameCodes
	pending map[copyKey]replicaMeta // reports of copies of chunks not committed

	// seen holds, for each node whose full inventory is under way, the
	// slots of the copies reports have listed since it began: its last
	// page forgets the node's other copies (mark and sweep). An inventory
	// abandoned midway keeps its list until the node's next one begins or
	// the node is forgotten: at most the node's copies, 4 bytes each.
	seen map[uint16][]int32

	nodeIdx  map[rpc.NodeID]uint16
	holders  []nodeCopies // by node index; 0 is unused
	nodeFree []uint16
	scratch  []byte // room to pack a node's list into

	// The counters (total: referenced chunks) change under mu and are read
	// without it, so safe mode, /metrics and the status page never wait
	// behind a report page.
	files, total, missing, under atomic.Int64
}

const (
	pageSize     = 1 << 14
	inlineCopies = 3
	maxNodes     = 1<<16 - 1
)

// chunkKey is a chunk ID in rpc.NewChunkID's form: 16 bytes of hash and
// the chunk's index.
type chunkKey struct {
	hash  [16]byte
	index uint32
}

// entry is one slot: a chunk, its committed metadata when a commit
// referenced it, and its copies. 52 bytes (see TestChunkIndexEntrySize):
// the committed digest is kept as its first rpc.DigestPrefixSize bytes,
// the frame size as a code, the replication beside the flags, and the
// inline copies as their nodes' indexes and 4 bits of flags each.
type entry struct {
	key    chunkKey
	size   int32 // committed; at most rpc.MaxChunkSize, -1 for metadata no report matches
	digest [rpc.DigestPrefixSize]byte
	nodes  [inlineCopies]uint16 // the inline copies' nodes (0: none)
	cflags uint16               // their flags: copyBits bits each (see copyAt)
	refs   uint16               // committed files referencing it (saturates)
	frame  uint8                // the committed frame size's code (see frameCodes)
	flags  uint8                // entryUsed..., and above them the replication (see repl)
}

const (
	entryUsed      = 1 << iota
	entryCommitted // size, frame and digest hold the committed metadata
	entryOdd       // the ID is in names, not key

	entryFlagBits = iota
	maxRepl       = 1<<(8-entryFlagBits) - 1 // at least rpc.MaxReplication
)

// repl returns the replication the last file referencing e asks for.
func (e *entry) repl() uint32 { return uint32(e.flags >> entryFlagBits) }

// setRepl records the replication the last file referencing e asks for.
func (e *entry) setRepl(repl uint32) {
	e.flags = e.flags&(1<<entryFlagBits-1) | uint8(min(repl, maxRepl))<<entryFlagBits
}

// copyRef is one copy: its node's index in the low 16 bits (indexes start
// at 1: 0 is no copy) and copyBits bits of flags above.
type copyRef uint32

const (
	copyCorrupt copyRef = 1 << (16 + iota) // failed verification on its node; not served
	copyHeld                               // deletion queued: not counted
	copyBad                                // reported size, frame size or digest differ from the committed ones
	copyPending                            // chunk not committed: the report is in pending

	copyBits = iota
)

func (c copyRef) node() uint16 { return uint16(c) }

// copyAt returns e's inline copy i.
func (e *entry) copyAt(i int) copyRef {
	f := e.cflags >> (copyBits * i) & (1<<copyBits - 1)
	return copyRef(e.nodes[i]) | copyRef(f)<<16
}

// setCopy makes c e's inline copy i.
func (e *entry) setCopy(i int, c copyRef) {
	const mask = 1<<copyBits - 1
	e.nodes[i] = c.node()
	e.cflags = e.cflags&^(mask<<(copyBits*i)) | uint16(c>>16&mask)<<(copyBits*i)
}

// copyHandle is where a copy is kept: inline in an entry, or in the side
// map of copies beyond them.
type copyHandle struct {
	e    *entry
	i    int
	more *copyRef // when not inline
}

func (h copyHandle) get() copyRef {
	if h.more != nil {
		return *h.more
	}
	return h.e.copyAt(h.i)
}

func (h copyHandle) set(c copyRef) {
	if h.more != nil {
		*h.more = c
		return
	}
	h.e.setCopy(h.i, c)
}

// copyKey names one copy for the pending table.
type copyKey struct {
	slot int32
	node uint16
}

// nodeCopies is one node's list of slots: every slot it holds a copy of,
// and stale ones (the copy since removed, or listed twice) that compact
// drops. slots.len()-stale is the node's number of copies.
type nodeCopies struct {
	id    rpc.NodeID
	slots slotList
	stale int
}

// frameCodes gives the frame sizes in use one-byte codes, so that an
// entry keeps a code rather than an int32: a cluster uses the default and
// the odd configured size. Codes are never taken back; past the 254th
// size, an entry's frame size is kept by slot in a side map, under
// oddFrame. Code 0 is no frame size.
type frameCodes struct {
	sizes []int32 // by code
	codes map[int32]uint8
	odd   map[int32]int32 // slot -> frame size, for the entries under oddFrame
}

const oddFrame = 1<<8 - 1

// code returns frame's code, taking one if it has none, for slot s.
func (f *frameCodes) code(s int32, frame int32) uint8 {
	if c, ok := f.codes[frame]; ok {
		return c
	}
	if len(f.sizes) < oddFrame {
		if f.codes == nil {
			f.sizes, f.codes = []int32{0}, map[int32]uint8{}
		}
		c := uint8(len(f.sizes))
		f.sizes = append(f.sizes, frame)
		f.codes[frame] = c
		return c
	}
	if f.odd == nil {
		f.odd = map[int32]int32{}
	}
	f.odd[s] = frame
	return oddFrame
}

// size returns the frame size of slot s, whose code is c.
func (f *frameCodes) size(s int32, c uint8) int32 {
	switch c {
	case 0:
		return 0
	case oddFrame:
		return f.odd[s]
	}
	return f.sizes[c]
}

// forget drops what slot s, whose code is c, kept beside its code.
func (f *frameCodes) forget(s int32, c uint8) {
	if c == oddFrame {
		delete(f.odd, s)
	}
}

// replicaMeta is what the index knows of one copy: what its node reported
// (for a chunk not committed) or, for a committed chunk, the committed
// metadata (its digest a prefix, see entry) when the report matched it and
// mismatch otherwise.
type replicaMeta struct {
	size      int64
	frameSize int64
	digest    []byte
	corrupt   bool // failed verification on the node; not served
	mismatch  bool // reported size, frame size or digest differ from the committed ones
}

// reportedCopy is one chunk copy a datanode reports storing.
type reportedCopy struct {
	id              rpc.ChunkID
	size, frameSize int64
	digest          []byte
}

// matches reports whether the copy is a good copy of ch. Digests are
// compared over the shorter (see rpc.DigestsMatch): the index keeps a
// prefix of a committed chunk's digest.
func (m replicaMeta) matches(ch meta.Chunk) bool {
	return !m.corrupt && !m.mismatch && m.size == ch.Size && m.frameSize == ch.FrameSize && rpc.DigestsMatch(m.digest, ch.Digest)
}

// locations is the index as the location side of the coordinator sees it.
type locations = chunkIndex

func newChunkIndex() *chunkIndex {
	return &chunkIndex{
		changed: make(chan struct{}),
		table:   make([]int32, 1024),
		seed:    maphash.MakeSeed(),
		odd:     map[rpc.ChunkID]int32{},
		names:   map[int32]rpc.ChunkID{},
		more:    map[int32][]copyRef{},
		pending: map[copyKey]replicaMeta{},
		seen:    map[uint16][]int32{},
		nodeIdx: map[rpc.NodeID]uint16{},
		holders: make([]nodeCopies, 1),
	}
}

// newLocations returns an empty index, for its location side.
func newLocations() *locations { return newChunkIndex() }

// refs returns the index as the reference side sees it.
func (ix *chunkIndex) refs() *refIndex { return (*refIndex)(ix) }

// --- slots

func (ix *chunkIndex) at(s int32) *entry { return &ix.pages[s/pageSize][s%pageSize] }

// parseKey returns id's key, if id is in rpc.NewChunkID's form (as
// rpc.ParseChunkID accepts it: 32 lower-case hex digits, "_", the index in
// decimal without leading zeros), so that the key gives the ID back.
func parseKey(id rpc.ChunkID) (chunkKey, bool) {
	var k chunkKey
	if len(id) < 34 || len(id) > 43 || id[32] != '_' {
		return k, false
	}
	for i := range len(k.hash) {
		hi, lo := hexDigit[id[2*i]], hexDigit[id[2*i+1]]
		if hi|lo > 0xf {
			return k, false
		}
		k.hash[i] = hi<<4 | lo
	}
	digits := id[33:]
	if len(digits) > 1 && digits[0] == '0' {
		return k, false
	}
	var n uint64
	for i := range len(digits) {
		c := digits[i]
		if c < '0' || c > '9' {
			return k, false
		}
		if n = n*10 + uint64(c-'0'); n > rpc.MaxChunkIndex {
			return k, false
		}
	}
	k.index = uint32(n)
	return k, true
}

// hexDigit maps a byte to its value as a lower-case hex digit, and any
// other byte to 0xff.
var hexDigit = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c-'a') + 10
	}
	return t
}()

func (k chunkKey) id() rpc.ChunkID {
	var b [32 + 1 + 10]byte
	hex.Encode(b[:32], k.hash[:])
	b[32] = '_'
	return rpc.ChunkID(strconv.AppendUint(b[:33], uint64(k.index), 10))
}

func (ix *chunkIndex) idOf(s int32) rpc.ChunkID {
	e := ix.at(s)
	if e.flags&entryOdd != 0 {
		return ix.names[s]
	}
	return e.key.id()
}

func (ix *chunkIndex) home(k chunkKey) int {
	return int(maphash.Comparable(ix.seed, k)) & (len(ix.table) - 1)
}

// lookup returns id's slot, or -1.
func (ix *chunkIndex) lookup(id rpc.ChunkID) int32 {
	k, ok := parseKey(id)
	return ix.lookupKey(id, k, ok)
}

// lookupKey is lookup with id's key already parsed (ok: id has one).
func (ix *chunkIndex) lookupKey(id rpc.ChunkID, k chunkKey, ok bool) int32 {
	if !ok {
		if s, ok := ix.odd[id]; ok {
			return s
		}
		return -1
	}
	mask := len(ix.table) - 1
	for i := ix.home(k); ix.table[i] != 0; i = (i + 1) & mask {
		if s := ix.table[i] - 1; ix.at(s).key == k {
			return s
		}
	}
	return -1
}

// intern returns id's slot, taking one if it has none.
func (ix *chunkIndex) intern(id rpc.ChunkID) int32 {
	k, ok := parseKey(id)
	if s := ix.lookupKey(id, k, ok); s >= 0 {
		return s
	}
	var s int32
	if n := len(ix.free); n > 0 {
		s, ix.free = ix.free[n-1], ix.free[:n-1]
	} else {
		s = ix.used
		ix.used++
		if int(s/pageSize) == len(ix.pages) {
			ix.pages = append(ix.pages, new([pageSize]entry))
		}
	}
	e := ix.at(s)
	e.flags = entryUsed
	if !ok {
		e.flags |= entryOdd
		ix.odd[id], ix.names[s] = s, id
		return s
	}
	e.key = k
	if (ix.live+1)*10 > len(ix.table)*7 {
		ix.grow()
	}
	ix.insert(s)
	ix.live++
	return s
}

func (ix *chunkIndex) insert(s int32) {
	mask := len(ix.table) - 1
	i := ix.home(ix.at(s).key)
	for ix.table[i] != 0 {
		i = (i + 1) & mask
	}
	ix.table[i] = s + 1
}

func (ix *chunkIndex) grow() {
	old := ix.table
	ix.table = make([]int32, 2*len(old))
	for _, v := range old {
		if v != 0 {
			ix.insert(v - 1)
		}
	}
}

// release frees slot s if nothing refers to it any more: no file and no
// copy.
func (ix *chunkIndex) release(s int32) {
	e := ix.at(s)
	if e.flags&entryUsed == 0 || e.refs > 0 || e.nodes != [inlineCopies]uint16{} || len(ix.more[s]) > 0 {
		return
	}
	if e.flags&entryOdd != 0 {
		delete(ix.odd, ix.names[s])
		delete(ix.names, s)
	} else {
		ix.unlink(s)
		ix.live--
	}
	ix.frames.forget(s, e.frame)
	*e = entry{}
	ix.free = append(ix.free, s)
}

// unlink removes s from the table, shifting back the entries after it
// that probed past its place (deletion without tombstones).
func (ix *chunkIndex) unlink(s int32) {
	mask := len(ix.table) - 1
	i := ix.home(ix.at(s).key)
	for ix.table[i] != s+1 {
		i = (i + 1) & mask
	}
	ix.table[i] = 0
	for j := (i + 1) & mask; ix.table[j] != 0; j = (j + 1) & mask {
		h := ix.home(ix.at(ix.table[j] - 1).key)
		// Move j's slot to the hole at i unless its home lies
		// cyclically in (i, j].
		if (i < j && (h <= i || h > j)) || (i > j && h <= i && h > j) {
			ix.table[i], ix.table[j] = ix.table[j], 0
			i = j
		}
	}
}

// --- nodes

// node returns id's index, taking one if create; 0 if it has none.
func (ix *chunkIndex) node(id rpc.NodeID, create bool) uint16 {
	if n, ok := ix.nodeIdx[id]; ok || !create {
		return n
	}
	var n uint16
	switch k := len(ix.nodeFree); {
	case k > 0:
		n, ix.nodeFree = ix.nodeFree[k-1], ix.nodeFree[:k-1]
	case len(ix.holders) <= maxNodes:
		n = uint16(len(ix.holders))
		ix.holders = append(ix.holders, nodeCopies{})
	default:
		return 0 // 65,535 nodes known at once: far beyond any cluster
	}
	ix.nodeIdx[id] = n
	ix.holders[n] = nodeCopies{id: id}
	return n
}

// compact packs node n's list (see slotList): a slot is kept once, and
// only when the node has a copy there. Without stale slots, every slot
// listed has a copy of the node's and is listed once, so none is looked
// up.
func (ix *chunkIndex) compact(n uint16) {
	nc := &ix.holders[n]
	var keep func(s int32) bool
	if nc.stale > 0 {
		keep = func(s int32) bool { _, ok := ix.find(s, n); return ok }
	}
	ix.scratch = nc.slots.pack(keep, ix.scratch)
	nc.stale = 0
	if cap(ix.scratch) > 1<<20 {
		ix.scratch = nil // a large list's room is not kept
	}
}

// --- copies

// find returns where node n's copy in slot s is, if it has one.
func (ix *chunkIndex) find(s int32, n uint16) (copyHandle, bool) {
	e := ix.at(s)
	for i, m := range e.nodes {
		if m == n {
			return copyHandle{e: e, i: i}, true
		}
	}
	more := ix.more[s]
	for i := range more {
		if more[i].node() == n {
			return copyHandle{more: &more[i]}, true
		}
	}
	return copyHandle{}, false
}

// eachCopy calls fn with every copy in slot s.
func (ix *chunkIndex) eachCopy(s int32, fn func(c copyRef)) {
	e := ix.at(s)
	for i, m := range e.nodes {
		if m != 0 {
			fn(e.copyAt(i))
		}
	}
	for _, c := range ix.more[s] {
		fn(c)
	}
}

// putCopy records node n's copy in slot s with flags, the report m of a
// chunk not committed in pending.
func (ix *chunkIndex) putCopy(s int32, n uint16, flags copyRef, m replicaMeta) {
	if n == 0 {
		return
	}
	e := ix.at(s)
	if e.flags&entryCommitted != 0 {
		if m.size != int64(e.size) || m.frameSize != ix.frameOf(s) || !rpc.DigestsMatch(m.digest, e.digest[:]) {
			flags |= copyBad
		}
		delete(ix.pending, copyKey{s, n})
	} else {
		flags |= copyPending
		m.digest = bytes.Clone(m.digest)
		m.corrupt, m.mismatch = false, false
		ix.pending[copyKey{s, n}] = m
	}
	c := copyRef(n) | flags
	if h, ok := ix.find(s, n); ok {
		h.set(c)
		return
	}
	if ix.holders[n].slots.full() {
		ix.compact(n)
	}
	ix.holders[n].slots.add(s)
	for i, m := range e.nodes {
		if m == 0 {
			e.setCopy(i, c)
			return
		}
	}
	ix.more[s] = append(ix.more[s], c)
}

// dropCopy forgets node n's copy in slot s, if any, and frees the slot
// when nothing else refers to it.
func (ix *chunkIndex) dropCopy(s int32, n uint16) bool {
	e := ix.at(s)
	found := false
	for i, m := range e.nodes {
		if m == n {
			e.setCopy(i, 0)
			found = true
		}
	}
	if more := ix.more[s]; !found && len(more) > 0 {
		if i := slices.IndexFunc(more, func(c copyRef) bool { return c.node() == n }); i >= 0 {
			more = slices.Delete(more, i, i+1)
			found = true
			if len(more) == 0 {
				delete(ix.more, s)
			} else {
				ix.more[s] = more
			}
		}
	}
	if !found {
		return false
	}
	delete(ix.pending, copyKey{s, n})
	nc := &ix.holders[n]
	if nc.stale++; nc.stale > nc.slots.len()/2+64 {
		ix.compact(n)
	}
	ix.release(s)
	return true
}

// dropAll forgets every copy on node n.
func (ix *chunkIndex) dropAll(n uint16) {
	nc := &ix.holders[n]
	slots := nc.slots
	nc.slots = slotList{}
	slots.each(func(s int32) {
		if _, ok := ix.find(s, n); ok {
			ix.change(s, func() { ix.dropCopy(s, n) })
		}
	})
	ix.holders[n].stale = 0
}

// frameOf returns slot s's committed frame size.
func (ix *chunkIndex) frameOf(s int32) int64 { return int64(ix.frames.size(s, ix.at(s).frame)) }

// metaOf returns what the index knows of copy c in slot s; digest is the
// committed digest's prefix, shared by the copies that matched it.
func (ix *chunkIndex) metaOf(s int32, c copyRef, digest []byte) replicaMeta {
	var m replicaMeta
	if c&copyPending != 0 {
		m = ix.pending[copyKey{s, c.node()}]
	} else {
		e := ix.at(s)
		m = replicaMeta{size: int64(e.size), frameSize: ix.frameOf(s), digest: digest, mismatch: c&copyBad != 0}
	}
	m.corrupt = c&copyCorrupt != 0
	return m
}

// --- counters

// class is what slot s adds to the counters.
func (ix *chunkIndex) class(s int32) (total, missing, under int) {
	e := ix.at(s)
	if e.refs == 0 {
		return 0, 0, 0
	}
	good := 0
	ix.eachCopy(s, func(c copyRef) {
		if c&(copyCorrupt|copyHeld|copyBad|copyPending) == 0 {
			good++
		}
	})
	switch {
	case good == 0:
		return 1, 1, 1
	case good < int(e.repl()):
		return 1, 0, 1
	}
	return 1, 0, 0
}

// change applies fn to slot s, keeping the counters right. s must be
// in use when change is called; fn may free it.
func (ix *chunkIndex) change(s int32, fn func()) {
	t0, m0, u0 := ix.class(s)
	fn()
	var t1, m1, u1 int
	if ix.at(s).flags&entryUsed != 0 {
		t1, m1, u1 = ix.class(s)
	}
	ix.total.Add(int64(t1 - t0))
	ix.missing.Add(int64(m1 - m0))
	ix.under.Add(int64(u1 - u0))
}

// counts returns the referenced chunks without any reported good copy,
// those with fewer reported good copies than their replication (the
// missing ones among them), and the referenced chunks, in O(1). A good
// copy is counted (not held apart), not corrupt, and matches the
// committed size, frame size and digest prefix, whatever its node's
// state. It takes no lock: each counter is exact, but a change being
// applied may show in one before the others.
func (ix *chunkIndex) counts() (missing, under, total int) {
	return int(ix.missing.Load()), int(ix.under.Load()), int(ix.total.Load())
}

func (ix *chunkIndex) notifyLocked() {
	close(ix.changed)
	ix.changed = make(chan struct{})
}

// --- the location side

// copies returns every counted copy of id.
func (ix *chunkIndex) copies(id rpc.ChunkID) map[rpc.NodeID]replicaMeta {
	return ix.copiesIf(id, false)
}

// heldCopies returns the copies of id held apart, awaiting deletion.
func (ix *chunkIndex) heldCopies(id rpc.ChunkID) map[rpc.NodeID]replicaMeta {
	return ix.copiesIf(id, true)
}

func (ix *chunkIndex) copiesIf(id rpc.ChunkID, held bool) map[rpc.NodeID]replicaMeta {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	s := ix.lookup(id)
	if s < 0 {
		return nil
	}
	out := make(map[rpc.NodeID]replicaMeta, inlineCopies)
	digest := bytes.Clone(ix.at(s).digest[:])
	ix.eachCopy(s, func(c copyRef) {
		if (c&copyHeld != 0) == held {
			out[ix.holders[c.node()].id] = ix.metaOf(s, c, digest)
		}
	})
	return out
}

// each calls fn with every chunk with counted copies, under the lock: fn
// must be quick and must not call ix.
func (ix *chunkIndex) each(fn func(id rpc.ChunkID)) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for s := range ix.used {
		if ix.counted(s) > 0 {
			fn(ix.idOf(s))
		}
	}
}

// counted returns how many counted copies slot s has (0 for a free slot).
func (ix *chunkIndex) counted(s int32) int {
	n := 0
	ix.eachCopy(s, func(c copyRef) {
		if c&copyHeld == 0 {
			n++
		}
	})
	return n
}

// reported returns every chunk with counted copies and the nodes holding
// them.
func (ix *chunkIndex) reported() map[rpc.ChunkID][]rpc.NodeID {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	out := make(map[rpc.ChunkID][]rpc.NodeID)
	for s := range ix.used {
		if ix.counted(s) > 0 {
			out[ix.idOf(s)] = ix.nodesOf(s)
		}
	}
	return out
}

// nodesOf returns the nodes with a counted copy in slot s, sorted.
func (ix *chunkIndex) nodesOf(s int32) []rpc.NodeID {
	out := []rpc.NodeID{}
	ix.eachCopy(s, func(c copyRef) {
		if c&copyHeld == 0 {
			out = append(out, ix.holders[c.node()].id)
		}
	})
	slices.Sort(out)
	return out
}

// chunksOn returns the chunks node holds a copy of, counted or held
// apart, in O(the node's copies).
func (ix *chunkIndex) chunksOn(node rpc.NodeID) []rpc.ChunkID {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n := ix.node(node, false)
	if n == 0 {
		return nil
	}
	ix.holders[n].stale++ // look every slot up: the list is then exact
	ix.compact(n)
	out := make([]rpc.ChunkID, 0, ix.holders[n].slots.len())
	ix.holders[n].slots.each(func(s int32) { out = append(out, ix.idOf(s)) })
	return out
}

// forget holds apart copies the coordinator has decided to delete, so
// that the decision is not taken twice.
func (ix *chunkIndex) forget(dels []meta.Deletion) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, d := range dels {
		s, n := ix.lookup(d.Chunk), ix.node(d.Node, false)
		if s < 0 || n == 0 {
			continue
		}
		ix.change(s, func() {
			if h, ok := ix.find(s, n); ok {
				h.set(h.get() | copyHeld)
			}
		})
	}
	ix.notifyLocked()
}

// perNode returns how many copies, counted or held apart, each node is
// known to hold.
func (ix *chunkIndex) perNode() map[rpc.NodeID]int64 {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	out := map[rpc.NodeID]int64{}
	for _, nc := range ix.holders[1:] {
		if k := nc.slots.len() - nc.stale; nc.id != "" && k > 0 {
			out[nc.id] = int64(k)
		}
	}
	return out
}

// restore counts a held copy again (its deletion was called off).
func (ix *chunkIndex) restore(node rpc.NodeID, id rpc.ChunkID) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	s, n := ix.lookup(id), ix.node(node, false)
	if s < 0 || n == 0 {
		return
	}
	if h, ok := ix.find(s, n); ok && h.get()&copyHeld != 0 {
		ix.change(s, func() { h.set(h.get() &^ copyHeld) })
		ix.notifyLocked()
	}
}

// report applies one datanode report: one page of a full inventory, or
// changes. A copy for which queued is true (its deletion is queued) is
// held apart: it stays on the node's disk until GC gets to it, so reports
// still list it, and counted again it would be trimmed a second time.
// Corrupt chunks keep their copy on record, marked, until the coordinator
// has it deleted. The lock is held for this page only.
//
// A full inventory replaces what the node was thought to hold by mark and
// sweep, so that its copies stay counted while its pages arrive: its
// first page unmarks the node's copies, every copy put since is marked
// seen, and its last page forgets the copies not seen, both in O(the
// node's copies); report returns those copies' chunks, whose health
// changed. p is the zero inventoryPage for an incremental report.
func (ix *chunkIndex) report(node rpc.NodeID, p inventoryPage, added []reportedCopy, removed, corrupt []rpc.ChunkID, queued func(rpc.ChunkID) bool) (swept []rpc.ChunkID) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n := ix.node(node, true)
	if n == 0 {
		return nil
	}
	if p.first {
		ix.beginInventory(n)
	}
	for _, a := range added {
		s := ix.intern(a.id)
		var flags copyRef
		if queued(a.id) {
			flags = copyHeld
		}
		ix.see(n, s)
		ix.change(s, func() {
			ix.putCopy(s, n, flags, replicaMeta{size: a.size, frameSize: a.frameSize, digest: a.digest})
		})
	}
	for _, id := range removed {
		if s := ix.lookup(id); s >= 0 {
			ix.change(s, func() { ix.dropCopy(s, n) })
		}
	}
	for _, id := range corrupt {
		s := ix.intern(id)
		ix.see(n, s)
		ix.change(s, func() {
			switch h, ok := ix.find(s, n); {
			case !ok:
				ix.putCopy(s, n, copyCorrupt, replicaMeta{}) // known only as corrupt
			case h.get()&copyHeld == 0:
				h.set(h.get() | copyCorrupt)
			}
			// A held copy is on its way out already.
		})
	}
	if p.last {
		swept = ix.sweepInventory(n)
	}
	ix.notifyLocked()
	return swept
}

// beginInventory begins node n's full inventory: from now on the slots
// of the copies reports list are kept, until its last page.
func (ix *chunkIndex) beginInventory(n uint16) {
	ix.seen[n] = ix.seen[n][:0]
}

// see notes that a report listed node n's copy in slot s, if n's full
// inventory is under way.
func (ix *chunkIndex) see(n uint16, s int32) {
	if seen, ok := ix.seen[n]; ok {
		ix.seen[n] = append(seen, s)
	}
}

// sweepInventory ends node n's full inventory: it forgets the node's
// copies that no report listed since the inventory's first page, and
// returns their chunks.
func (ix *chunkIndex) sweepInventory(n uint16) []rpc.ChunkID {
	seen, ok := ix.seen[n]
	delete(ix.seen, n)
	if !ok {
		return nil
	}
	slices.Sort(seen)
	var gone []int32
	ix.holders[n].slots.each(func(s int32) {
		if _, listed := slices.BinarySearch(seen, s); !listed {
			if _, held := ix.find(s, n); held {
				gone = append(gone, s)
			}
		}
	})
	slices.Sort(gone)
	gone = slices.Compact(gone) // a slot may be on the node's list twice
	ids := make([]rpc.ChunkID, 0, len(gone))
	for _, s := range gone {
		ids = append(ids, ix.idOf(s))
		ix.change(s, func() { ix.dropCopy(s, n) })
	}
	return ids
}

// lost stops counting node's copy of id, which the node says it does not
// hold; it reports whether the copy was counted. A copy held apart is
// left alone: its deletion is queued and will find it gone.
func (ix *chunkIndex) lost(node rpc.NodeID, id rpc.ChunkID) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	s, n := ix.lookup(id), ix.node(node, false)
	if s < 0 || n == 0 {
		return false
	}
	if h, ok := ix.find(s, n); !ok || h.get()&copyHeld != 0 {
		return false
	}
	ix.change(s, func() { ix.dropCopy(s, n) })
	ix.notifyLocked()
	return true
}

// dropNodes forgets every copy, counted or held apart, on the given
// nodes, and the nodes, in O(their copies).
func (ix *chunkIndex) dropNodes(nodes map[rpc.NodeID]bool) {
	if len(nodes) == 0 {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for id := range nodes {
		n := ix.node(id, false)
		if n == 0 {
			continue
		}
		ix.dropAll(n)
		delete(ix.seen, n)
		delete(ix.nodeIdx, id)
		ix.holders[n] = nodeCopies{}
		ix.nodeFree = append(ix.nodeFree, n)
	}
	ix.notifyLocked()
}

// count returns how many nodes reported a counted copy of id.
func (ix *chunkIndex) count(id rpc.ChunkID) int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if s := ix.lookup(id); s >= 0 {
		return ix.counted(s)
	}
	return 0
}

// nodes returns the nodes holding a counted copy of id, sorted.
func (ix *chunkIndex) nodes(id rpc.ChunkID) []rpc.NodeID {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if s := ix.lookup(id); s >= 0 {
		return ix.nodesOf(s)
	}
	return []rpc.NodeID{}
}

// check returns the nodes whose counted copy of ch has its size, frame
// size and digest, and the nodes whose copy differs. For a committed
// chunk the copies were matched against the committed metadata as they
// were reported, the digest by its prefix: ch is then that metadata
// (chunk IDs are never reused), and were it not, every copy would be
// returned as differing. A copy of a chunk not committed is compared with
// ch whole.
func (ix *chunkIndex) check(ch meta.Chunk) (good, bad []rpc.NodeID) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	s := ix.lookup(ch.ID)
	if s < 0 {
		return nil, nil
	}
	e := ix.at(s)
	same := e.flags&entryCommitted != 0 && int64(e.size) == ch.Size && ix.frameOf(s) == ch.FrameSize && rpc.DigestsMatch(e.digest[:], ch.Digest)
	ix.eachCopy(s, func(c copyRef) {
		if c&copyHeld != 0 {
			return
		}
		var ok bool
		if c&copyPending != 0 {
			m := ix.pending[copyKey{s, c.node()}]
			m.corrupt = c&copyCorrupt != 0
			ok = m.matches(ch)
		} else {
			ok = same && c&(copyCorrupt|copyBad) == 0
		}
		if ok {
			good = append(good, ix.holders[c.node()].id)
		} else {
			bad = append(bad, ix.holders[c.node()].id)
		}
	})
	slices.Sort(good)
	slices.Sort(bad)
	return good, bad
}

// wait blocks until ready returns true (checked after every change) or ctx
// ends.
func (ix *chunkIndex) wait(ctx context.Context, ready func() bool) error {
	for {
		ix.mu.Lock()
		ch := ix.changed
		ix.mu.Unlock()
		if ready() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// deletionsFor lists, for every allocation not kept, a deletion on each
// node it was placed on or reported by.
func (ix *chunkIndex) deletionsFor(allocs []meta.Allocation, kept map[rpc.ChunkID]bool) []meta.Deletion {
	var out []meta.Deletion
	for _, a := range allocs {
		if kept[a.ID] {
			continue
		}
		seen := map[rpc.NodeID]bool{}
		for _, n := range append(slices.Clone(a.Nodes), ix.nodes(a.ID)...) {
			if !seen[n] {
				seen[n] = true
				out = append(out, meta.Deletion{Node: n, Chunk: a.ID})
			}
		}
	}
	return out
}

// deletionsOf lists a deletion for every counted copy of the chunks of
// f, a committed file about to be removed or replaced, that no other file
// references (a copy, see namespace.copy, shares its chunks). A chunk
// another file still uses is kept. Two files sharing a chunk removed at
// the same moment may both keep it: it is then an orphan, which GC
// deletes after its grace period; a chunk is never deleted while a file
// uses it.
func (ix *chunkIndex) deletionsOf(f *meta.File) []meta.Deletion {
	return ix.copiesReferenced(f, 1)
}

// unusedCopiesOf lists a deletion for every counted copy of the chunks of
// f, a file already removed from refs, that no file references.
func (ix *chunkIndex) unusedCopiesOf(f *meta.File) []meta.Deletion {
	return ix.copiesReferenced(f, 0)
}

// copiesReferenced lists a deletion for every counted copy of the chunks
// of f that at most refs files reference.
func (ix *chunkIndex) copiesReferenced(f *meta.File, refs uint16) []meta.Deletion {
	var out []meta.Deletion
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, ch := range f.Chunks {
		s := ix.lookup(ch.ID)
		if s < 0 || ix.at(s).refs > refs {
			continue
		}
		for _, n := range ix.nodesOf(s) {
			out = append(out, meta.Deletion{Node: n, Chunk: ch.ID})
		}
	}
	return out
}

// scanFrom calls fn with up to limit (> 0) referenced chunks from slot
// cursor on, in slot order, and returns the cursor to continue from: 0
// once the end was reached, so a paced pass walks the index a slice at a
// time and starts over. The lock is held while the slice is read, not
// while fn runs: fn may call the index. With counts, fn is also told
// whether the chunk was whole when read (see wholeSlot); without, never.
func (ix *chunkIndex) scanFrom(cursor int32, limit int, counts func(rpc.NodeID) bool, fn func(r ref, whole bool)) (next int32) {
	refs := make([]ref, 0, min(limit, 1024))
	whole := make([]bool, 0, min(limit, 1024))
	ix.mu.Lock()
	digest := digests(min(limit, int(ix.total.Load())))
	for s := max(cursor, 0); s < ix.used; s++ {
		if len(refs) == limit {
			next = s
			break
		}
		if e := ix.at(s); e.refs > 0 {
			r := ix.refOf(s, digest())
			refs = append(refs, r)
			whole = append(whole, counts != nil && ix.wholeSlot(s, r.repl, counts))
		}
	}
	ix.mu.Unlock()
	for i, r := range refs {
		fn(r, whole[i])
	}
	return next
}

// refOf returns slot s's committed chunk and replication, the prefix of
// its digest the index keeps in digest (rpc.DigestPrefixSize bytes).
func (ix *chunkIndex) refOf(s int32, digest []byte) ref {
	e := ix.at(s)
	copy(digest, e.digest[:])
	return ref{
		chunk: meta.Chunk{ID: ix.idOf(s), Size: int64(e.size), FrameSize: ix.frameOf(s), Digest: digest},
		repl:  e.repl(),
	}
}

// digests returns n digest prefixes' room in one allocation (and more,
// one by one, should more be asked for).
func digests(n int) func() []byte {
	const size = rpc.DigestPrefixSize
	buf := make([]byte, n*size)
	return func() []byte {
		if len(buf) < size {
			return make([]byte, size)
		}
		d := buf[:size:size]
		buf = buf[size:]
		return d
	}
}

// --- the reference side

// refIndex is the chunk index as the reference side sees it: every chunk
// a committed file references, with the replication its file asks for,
// and how many files there are.
type refIndex chunkIndex

// ref is a referenced chunk: its committed metadata and the replication
// its file asks for.
type ref struct {
	chunk meta.Chunk
	repl  uint32
}

func (r *refIndex) ix() *chunkIndex { return (*chunkIndex)(r) }

// add records a committed file; a file replacing another is added before
// the old version is removed. A chunk is referenced once per add.
func (r *refIndex) add(f *meta.File) {
	ix := r.ix()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	r.addLocked(f)
}

func (r *refIndex) addLocked(f *meta.File) {
	ix := r.ix()
	ix.files.Add(1)
	for _, c := range f.Chunks {
		s := ix.intern(c.ID)
		ix.change(s, func() { ix.reference(s, c, f.Replication) })
	}
	ix.notifyLocked()
}

// share records f, a copy of a committed file sharing its chunks, before
// its commit (see namespace.copy); it fails with rpc.ResourceExhausted,
// recording nothing, when a chunk of f already has max references.
func (r *refIndex) share(f *meta.File, max uint16) error {
	ix := r.ix()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, c := range f.Chunks {
		if s := ix.lookup(c.ID); s >= 0 && ix.at(s).refs >= max {
			return rpc.Errorf(rpc.ResourceExhausted, "chunk %s of %s is shared by %d files, the most there may be", c.ID, f.Path, max)
		}
	}
	r.addLocked(f)
	return nil
}

// reference adds a reference to slot s's chunk c: the first commit
// records its metadata and settles the copies reported before it.
func (ix *chunkIndex) reference(s int32, c meta.Chunk, repl uint32) {
	e := ix.at(s)
	if e.refs < 1<<16-1 {
		e.refs++
	}
	e.setRepl(repl)
	if e.flags&entryCommitted != 0 {
		return
	}
	e.flags |= entryCommitted
	if len(c.Digest) == rpc.DigestSize && c.Size > 0 && c.Size <= rpc.MaxChunkSize && c.FrameSize > 0 && c.FrameSize <= rpc.MaxFrameSize {
		e.size, e.frame = int32(c.Size), ix.frames.code(s, int32(c.FrameSize))
		copy(e.digest[:], c.Digest)
	} else {
		e.size = -1 // never matched by a report (whose size is positive)
	}
	var pend []copyRef
	ix.eachCopy(s, func(c copyRef) {
		if c&copyPending != 0 {
			pend = append(pend, c)
		}
	})
	for _, c := range pend {
		m := ix.pending[copyKey{s, c.node()}]
		ix.putCopy(s, c.node(), c&(copyCorrupt|copyHeld), m)
	}
}

// remove drops a committed file removed or replaced.
func (r *refIndex) remove(f *meta.File) {
	ix := r.ix()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.files.Add(-1)
	for _, c := range f.Chunks {
		s := ix.lookup(c.ID)
		if s < 0 || ix.at(s).refs == 0 {
			continue
		}
		ix.change(s, func() {
			ix.at(s).refs--
			ix.release(s)
		})
	}
	ix.notifyLocked()
}

// has reports whether a committed file references id.
func (r *refIndex) has(id rpc.ChunkID) bool {
	ix := r.ix()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	s := ix.lookup(id)
	return s >= 0 && ix.at(s).refs > 0
}

// counts returns the number of committed files and of the chunks they
// reference.
func (r *refIndex) counts() (files, chunks int) {
	ix := r.ix()
	return int(ix.files.Load()), int(ix.total.Load())
}

// snapshot returns every referenced chunk, in slot order.
func (r *refIndex) snapshot() []ref {
	ix := r.ix()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	n := int(ix.total.Load())
	out := make([]ref, 0, n)
	digest := digests(n)
	for s := range ix.used {
		if ix.at(s).refs > 0 {
			out = append(out, ix.refOf(s, digest()))
		}
	}
	return out
}

// addAll records committed files as add does, under one lock and with one
// wake-up of the waiters: a new term adds the store's files in batches
// (see loadFiles).
func (r *refIndex) addAll(fs []meta.File) {
	ix := r.ix()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for i := range fs {
		ix.files.Add(1)
		repl := fs[i].Replication
		for _, c := range fs[i].Chunks {
			s := ix.intern(c.ID)
			ix.change(s, func() { ix.reference(s, c, repl) })
		}
	}
	ix.notifyLocked()
}
