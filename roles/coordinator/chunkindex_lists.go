package coordinator

import (
	"encoding/binary"
	"slices"
)

// slotList is a node's list of slots in the chunk index, packed: the
// slots sorted and distinct, each kept as the varint of its distance from
// the one before, plus a tail of the slots added since the last pack, in
// any order. A node's slots are spread over the whole index, so the
// distances are about (slots in the index) / (the node's copies): one byte
// each with 100 nodes, two with 1,000, against four for an int32 (see
// docs/architecture.md, "The chunk index").
//
// The list may name a slot twice, or one the node no longer has a copy in:
// its owner counts those (nodeCopies.stale) and has pack drop them.
type slotList struct {
	packed []byte  // sorted, distinct slots: the varint of each one's distance from the one before (from 0 for the first)
	n      int     // slots in packed
	tail   []int32 // slots added since the last pack
}

// packTail is the tail that makes a list worth packing, at least: a
// tail of a sixteenth of the packed slots costs at most a quarter of a
// byte per slot, and packing it touches every slot once, so each add costs
// about 16 slots' decoding.
const packTail = 1024

// len returns how many slots the list names, counting repeats.
func (l *slotList) len() int { return l.n + len(l.tail) }

// add lists s.
func (l *slotList) add(s int32) { l.tail = append(l.tail, s) }

// full reports whether the tail is worth packing.
func (l *slotList) full() bool { return len(l.tail) >= max(packTail, l.n/16) }

// each calls fn with every slot listed, the packed ones in order, then
// the tail's.
func (l *slotList) each(fn func(s int32)) {
	var s int32
	for b := l.packed; len(b) > 0; {
		d, k := binary.Uvarint(b)
		b = b[k:]
		s += int32(d)
		fn(s)
	}
	for _, s := range l.tail {
		fn(s)
	}
}

// pack merges the tail into the packed slots, keeping each slot once and,
// unless keep is nil, only the slots keep is true for. scratch is room to
// pack into, returned (grown) for the next pack; the list keeps a copy of
// exactly the size it needs.
func (l *slotList) pack(keep func(s int32) bool, scratch []byte) []byte {
	slices.Sort(l.tail)
	out, n := scratch[:0], 0
	var prev, s int32 // the last slot packed, and the next one read from packed
	b, tail := l.packed, l.tail
	next := func() (int32, bool) { // the next slot, packed or tail, in order
		switch {
		case len(b) > 0 && (len(tail) == 0 || peek(b, s) <= tail[0]):
			d, k := binary.Uvarint(b)
			b = b[k:]
			s += int32(d)
			return s, true
		case len(tail) > 0:
			t := tail[0]
			tail = tail[1:]
			return t, true
		}
		return 0, false
	}
	for v, ok := next(); ok; v, ok = next() {
		if (n > 0 && v == prev) || (keep != nil && !keep(v)) {
			continue
		}
		out = binary.AppendUvarint(out, uint64(v-prev))
		prev = v
		n++
	}
	l.packed, l.n = slices.Clone(out), n
	if len(out) == 0 {
		l.packed = nil
	}
	if cap(l.tail) > packTail {
		l.tail = nil // a long tail's room is not kept
	} else {
		l.tail = l.tail[:0]
	}
	return out
}

// peek returns the slot the next varint of b makes, after slot s.
func peek(b []byte, s int32) int32 {
	d, _ := binary.Uvarint(b)
	return s + int32(d)
}

// slots returns every slot listed (packed ones first), for a caller that
// has just packed the list.
func (l *slotList) slots() []int32 {
	out := make([]int32, 0, l.len())
	l.each(func(s int32) { out = append(out, s) })
	return out
}
