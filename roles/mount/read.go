package mount

import (
	"io"
	"sync"

	"github.com/dfs-project/dfs/roles/client"
)

// blockSize is the unit the mount reads a file in: one frame of the
// SDK's default frame size, the least a verified read fetches.
const blockSize = 1 << 20

// keepBlocks is how many blocks beyond the read-ahead window a reader
// keeps for a reader that goes back and forth (a pack file read by git,
// a zip's index).
const keepBlocks = 8

// runBlocks is the most blocks one read-ahead ReadAt fetches: 8 MiB,
// the default chunk size.
const runBlocks = 8

// blockReader reads one version of a file in blocks through the SDK's
// ReaderAt, and reads ahead, several blocks at once, while the reads are
// sequential. The kernel may send the reads of one sequential reader out
// of order (async reads); a read near the last one still counts as
// sequential. It holds at most maxAhead+keepBlocks blocks.
type blockReader struct {
	r        *client.Reader
	size     int64
	maxAhead int

	mu     sync.Mutex
	blocks map[int64]*block
	next   int64 // the end of the last read
	streak int   // sequential reads in a row
	ahead  int   // the read-ahead window, in blocks
	use    uint64
}

type block struct {
	done  chan struct{}
	buf   []byte
	err   error
	used  uint64
	ahead bool // read ahead, in a run: a failure is read again alone
}

func newBlockReader(r *client.Reader, readAhead int64) *blockReader {
	return &blockReader{r: r, size: r.Size(), maxAhead: int(readAhead / blockSize), blocks: map[int64]*block{}}
}

// ReadAt reads into p at off: fewer bytes only at the end of the file.
func (b *blockReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= b.size || len(p) == 0 {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), b.size)
	first, last := off/blockSize, (end-1)/blockSize
	nblocks := (b.size + blockSize - 1) / blockSize

	b.mu.Lock()
	seq := off == b.next || (b.streak > 0 && off > b.next-4*blockSize && off < b.next+4*blockSize)
	if seq {
		b.streak++
		b.next = max(b.next, end)
		b.ahead = min(max(2*b.ahead, 2), b.maxAhead)
	} else {
		b.streak, b.ahead, b.next = 0, 0, end
	}
	if off == 0 {
		// A read from the start is a reader starting over: read ahead.
		b.streak, b.ahead = 1, min(2, b.maxAhead)
	}
	want := make([]*block, 0, last-first+1)
	for i := first; i <= last; i++ {
		want = append(want, b.fetch(i))
	}
	// Read ahead in runs of up to runBlocks blocks, one ReadAt each: fewer,
	// larger reads cost less than one per block.
	for i := last + 1; i <= last+int64(b.ahead) && i < nblocks; {
		if _, ok := b.blocks[i]; ok {
			i++
			continue
		}
		// Runs end at multiples of runBlocks: with the default 8 MiB
		// chunks, each run is one chunk's stream.
		j := i + 1
		for j%runBlocks != 0 && j <= last+int64(b.ahead) && j < nblocks {
			if _, ok := b.blocks[j]; ok {
				break
			}
			j++
		}
		b.fetchRun(i, j)
		i = j
	}
	b.evict(first, last+int64(b.ahead))
	b.mu.Unlock()

	n := 0
	for i, blk := range want {
		<-blk.done
		if blk.err != nil {
			// An errored block is never kept. One read ahead failed with its
			// whole run: it is read again, alone, for this read.
			k := first + int64(i)
			b.mu.Lock()
			if b.blocks[k] == blk {
				delete(b.blocks, k)
			}
			if blk.ahead {
				blk = b.fetch(k)
			}
			b.mu.Unlock()
			<-blk.done
		}
		if blk.err != nil {
			b.mu.Lock()
			if b.blocks[first+int64(i)] == blk {
				delete(b.blocks, first+int64(i))
			}
			b.mu.Unlock()
			return n, blk.err
		}
		start := max(off-(first+int64(i))*blockSize, 0)
		n += copy(p[n:], blk.buf[start:])
	}
	if int64(n) < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

// fetch returns block i, starting its read when it is not held.
func (b *blockReader) fetch(i int64) *block {
	b.use++
	if blk, ok := b.blocks[i]; ok {
		blk.used = b.use
		return blk
	}
	blk := &block{done: make(chan struct{}), used: b.use}
	b.blocks[i] = blk
	go func() {
		defer close(blk.done)
		buf := make([]byte, min(blockSize, b.size-i*blockSize))
		n, err := b.r.ReadAt(buf, i*blockSize)
		if err == io.EOF && n == len(buf) {
			err = nil
		}
		blk.buf, blk.err = buf[:n], err
	}()
	return blk
}

// fetchRun starts reading blocks [i, j) with one ReadAt.
func (b *blockReader) fetchRun(i, j int64) {
	blks := make([]*block, 0, j-i)
	done := make(chan struct{})
	for k := i; k < j; k++ {
		b.use++
		blk := &block{done: done, used: b.use, ahead: true}
		b.blocks[k] = blk
		blks = append(blks, blk)
	}
	go func() {
		defer close(done)
		off := i * blockSize
		buf := make([]byte, min((j-i)*blockSize, b.size-off))
		n, err := b.r.ReadAt(buf, off)
		if err == io.EOF && n == len(buf) {
			err = nil
		}
		for k, blk := range blks {
			lo := min(int64(k)*blockSize, int64(n))
			hi := min(lo+blockSize, int64(n))
			blk.buf, blk.err = buf[lo:hi:hi], err
		}
	}()
}

// evict drops the blocks least recently used outside [lo, hi] while more
// than the bound are held. Blocks still being read are dropped too: their
// reader finishes into a buffer no one keeps.
func (b *blockReader) evict(lo, hi int64) {
	for len(b.blocks) > b.maxAhead+keepBlocks {
		var victim int64 = -1
		var oldest uint64
		for i, blk := range b.blocks {
			if i >= lo && i <= hi {
				continue
			}
			if victim < 0 || blk.used < oldest {
				victim, oldest = i, blk.used
			}
		}
		if victim < 0 {
			return
		}
		delete(b.blocks, victim)
	}
}

// Close ends the reads in flight.
func (b *blockReader) Close() error {
	return b.r.Close()
}
