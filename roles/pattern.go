package roles

import (
	"io"
	"math/rand/v2"
)

// PatternReader yields n pseudo-random bytes cheaply: a random block
// repeated at shifting offsets, so generating input costs next to no CPU.
// `dfs bench` and the benchmarks put it.
type PatternReader struct {
	block []byte
	left  int64
	off   int
}

// NewPatternReader returns a reader of n bytes; every one yields the same
// bytes.
func NewPatternReader(n int64) *PatternReader {
	block := make([]byte, 4<<20+7)
	r := rand.New(rand.NewChaCha8([32]byte{1, 2, 3}))
	for i := range block {
		block[i] = byte(r.Uint32())
	}
	return &PatternReader{block: block, left: n}
}

func (p *PatternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := copy(b[:min(int64(len(b)), p.left)], p.block[p.off:])
	p.off = (p.off + n) % len(p.block)
	p.left -= int64(n)
	return n, nil
}
