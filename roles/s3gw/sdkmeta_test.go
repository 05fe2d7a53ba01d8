package s3gw

import (
	"testing"

	"github.com/matryer/is"
)

// TestPartChunkSize: a part is whole chunks of at most 8 MiB when its
// size allows.
func TestPartChunkSize(t *testing.T) {
	is := is.New(t)
	for _, tc := range []struct{ size, want int64 }{
		{1000, 0}, {5 << 20, 5 << 20}, {8 << 20, 8 << 20}, {16 << 20, 8 << 20}, {100 << 20, 6553600},
		{64 << 20, 8 << 20}, {(5 << 20) + 1, (5 << 20) + 1},
	} {
		got := partChunkSize(tc.size)
		if tc.want != 0 {
			is.Equal(got, tc.want) // the expected chunk size
		}
		if got != 0 {
			is.Equal(tc.size%got, int64(0)) // whole chunks
			is.True(got <= maxPartChunk)    // bounded
		}
	}
}
