package client

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/matryer/is"
	"google.golang.org/grpc/mem"
)

// piecesOf cuts data into frames of frame bytes, each in pieces of piece
// bytes, as a fetch hands a chunk's frames over.
func piecesOf(data []byte, frame, piece int) *frames {
	fr := &frames{}
	for off := 0; off < len(data); off += frame {
		var f mem.BufferSlice
		for p := off; p < min(off+frame, len(data)); p += piece {
			f = append(f, mem.SliceBuffer(data[p:min(p+piece, off+frame, len(data))]))
		}
		fr.data = append(fr.data, f)
	}
	return fr
}

// TestOutputPieces: a chunk's frames, in pieces, reach the output byte
// for byte and in order: a file (written with writev, more pieces than
// one writev takes), a pipe that takes them a part at a time (writes cut
// short, and waits until the reader makes room), and any other writer;
// progress counts every byte, and a file digest covers them.
func TestOutputPieces(t *testing.T) {
	data := make([]byte, 3<<20+12345)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	const frame, piece = 1 << 20, 1000 // 3,000-odd pieces: several writevs
	t.Run("file", func(t *testing.T) {
		is := is.New(t)
		f, err := os.Create(filepath.Join(t.TempDir(), "out"))
		is.NoErr(err)
		defer f.Close()
		var seen int64
		o := &output{w: f, progress: func(n int64) { seen += n }}
		is.NoErr(o.write(piecesOf(data[:frame+5], frame, piece))) // a chunk
		is.NoErr(o.write(piecesOf(data[frame+5:], frame, piece))) // and the next, after it
		got, err := os.ReadFile(f.Name())
		is.NoErr(err)
		is.True(bytes.Equal(got, data))  // byte for byte, in order
		is.Equal(seen, int64(len(data))) // progress counted every byte
	})
	t.Run("pipe", func(t *testing.T) {
		is := is.New(t)
		r, w, err := os.Pipe()
		is.NoErr(err)
		defer r.Close()
		read := make(chan []byte)
		go func() {
			b, _ := io.ReadAll(r)
			read <- b
		}()
		o := &output{w: w}
		is.NoErr(o.write(piecesOf(data, frame, piece)))
		is.NoErr(w.Close())
		is.True(bytes.Equal(<-read, data)) // byte for byte through a pipe that takes 64 KiB at a time
	})
	t.Run("writer", func(t *testing.T) {
		is := is.New(t)
		var buf bytes.Buffer
		o := &output{w: &buf}
		is.NoErr(o.write(piecesOf(data, frame, piece)))
		is.True(bytes.Equal(buf.Bytes(), data)) // byte for byte
	})
	t.Run("closed file", func(t *testing.T) {
		is := is.New(t)
		f, err := os.Create(filepath.Join(t.TempDir(), "out"))
		is.NoErr(err)
		f.Close()
		o := &output{w: f}
		is.True(o.write(piecesOf(data[:10], frame, piece)) != nil) // a write that fails is an error
	})
}
