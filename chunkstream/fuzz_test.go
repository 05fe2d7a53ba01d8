package chunkstream_test

import (
	"bytes"
	"testing"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Script opcodes for FuzzVerifier: each frame is two script bytes, an op
// and a length.
const (
	opFinal         = 1 << iota // mark the frame final, with a chunk digest
	opBadDigest                 // damage the frame digest
	opShiftOffset               // move the offset by int8(length)
	opOtherChunk                // name another chunk
	opBadChunkSum               // damage the chunk digest
	opFullFrame                 // ignore length: take FrameSize bytes
	opNoFrameDigest             // leave the frame digest out
)

// FuzzVerifier feeds arbitrary frame sequences to a Verifier. It must
// never panic, must refuse with Invalid, and any chunk it accepts must be
// exactly what an honest sender of those bytes would have produced, so it
// re-verifies. The committed corpus lives in testdata/fuzz/FuzzVerifier.
func FuzzVerifier(f *testing.F) {
	d40 := testData(40)
	f.Add(byte(16), uint16(40), false, d40, []byte{opFullFrame, 0, opFullFrame, 0, opFinal, 8})
	f.Add(byte(16), uint16(40), true, d40, []byte{opFullFrame, 0, opFullFrame, 0, opFinal | opBadChunkSum, 8})
	f.Add(byte(16), uint16(32), false, d40, []byte{opFullFrame, 0, opFullFrame, 0, opFinal, 0})
	f.Add(byte(16), uint16(40), false, d40, []byte{opFullFrame, 0, opBadDigest | opFullFrame, 0})
	f.Add(byte(16), uint16(40), false, d40, []byte{opFullFrame, 0, opShiftOffset | opFullFrame, 0xff})
	f.Add(byte(16), uint16(40), false, d40, []byte{opFinal | opFullFrame, 0, opFinal, 8})
	f.Add(byte(8), uint16(5), false, d40, []byte{opFinal, 5, opFinal, 0})
	f.Add(byte(0), uint16(0), false, []byte{}, []byte{opFinal, 0})
	f.Add(byte(16), uint16(100), false, d40, []byte{opFullFrame, 0, opOtherChunk | opFullFrame, 0})
	f.Add(byte(4), uint16(12), true, d40, []byte{opFullFrame, 0, opNoFrameDigest | opFullFrame, 0, opFinal, 4})

	f.Fuzz(func(t *testing.T, frameSize byte, size uint16, expectDigest bool, data, script []byte) {
		exp := chunkstream.Expect{ChunkID: testID, Size: int64(size % 2048), FrameSize: int64(frameSize % 64)}
		if expectDigest && exp.FrameSize > 0 {
			exp.Digest, _ = chunkstream.DigestOf(data[:min(len(data), int(exp.Size))], int(exp.FrameSize))
		}
		v := chunkstream.NewVerifier(exp)
		var accepted [][]byte
		var final *dfspb.ChunkDataStream
		running := chunkstream.NewChunkDigest()
		pos := 0
		for i := 0; i+1 < len(script) && i < 2*256; i += 2 {
			op, n := script[i], int(script[i+1])
			if op&opFullFrame != 0 {
				n = int(exp.FrameSize)
			}
			take := data[min(pos, len(data)):min(pos+n, len(data))]
			fr := &dfspb.ChunkDataStream{Data: take, Offset: v.Received(), PartialChecksum: chunkstream.FrameDigest(take)}
			if op&opShiftOffset != 0 {
				fr.Offset += int64(int8(script[i+1]))
			}
			if op&opBadDigest != 0 {
				fr.PartialChecksum[len(fr.PartialChecksum)-1] ^= 1
			}
			if op&opNoFrameDigest != 0 {
				fr.PartialChecksum = nil
			}
			if op&opOtherChunk != 0 {
				fr.ChunkId = "ffffffffffffffffffffffffffffffff_1"
			}
			if op&opFinal != 0 {
				fr.IsFinal = true
				cd := chunkstream.NewChunkDigest()
				for _, a := range accepted {
					cd.Add(chunkstream.FrameDigest(a))
				}
				if len(take) > 0 {
					cd.Add(chunkstream.FrameDigest(take))
				}
				fr.ChunkChecksum = cd.Sum()
				if op&opBadChunkSum != 0 {
					fr.ChunkChecksum[0] ^= 0x80
				}
			}
			wasDone := v.Done()
			before := v.Received()
			if err := v.Check(fr); err != nil {
				if rpc.KindOf(err) != rpc.Invalid {
					t.Fatalf("Check refused with %v, not Invalid", err)
				}
				if v.Done() && !wasDone {
					t.Fatalf("Check refused a frame (%v) but marked the chunk done", err)
				}
				return // a verifier is not used after an error; its counters mean nothing
			}
			if wasDone {
				t.Fatal("Check accepted a frame after the final frame")
			}
			if v.Received() != before+int64(len(take)) {
				t.Fatalf("Received went from %d to %d for a frame of %d bytes", before, v.Received(), len(take))
			}
			accepted = append(accepted, bytes.Clone(take))
			if len(take) > 0 {
				running.Add(chunkstream.FrameDigest(take))
			}
			pos += len(take)
			if v.Done() {
				final = fr
				break
			}
		}

		var all []byte
		for _, a := range accepted {
			all = append(all, a...)
		}
		if int64(len(all)) != v.Received() || v.Received() > exp.Size {
			t.Fatalf("Received %d, accepted %d bytes, size %d", v.Received(), len(all), exp.Size)
		}
		if !v.Done() {
			return
		}

		// An accepted chunk is exactly an honest sender's chunk.
		if int64(len(all)) != exp.Size || exp.Size == 0 || exp.FrameSize <= 0 {
			t.Fatalf("accepted %d bytes for size %d, frame size %d", len(all), exp.Size, exp.FrameSize)
		}
		for i, a := range accepted {
			last := i == len(accepted)-1
			if !last && int64(len(a)) != exp.FrameSize || last && int64(len(a)) > exp.FrameSize {
				t.Fatalf("accepted frame %d of %d bytes, frame size %d", i, len(a), exp.FrameSize)
			}
		}
		want, fds := chunkstream.DigestOf(all, int(exp.FrameSize))
		if !bytes.Equal(v.Sum(), want) || !bytes.Equal(running.Sum(), want) {
			t.Fatalf("accepted chunk digest %x, recomputed %x", v.Sum(), want)
		}
		if exp.Digest != nil && !bytes.Equal(exp.Digest, want) {
			t.Fatalf("accepted a chunk whose digest %x is not the expected %x", want, exp.Digest)
		}
		if exp.Digest == nil && !bytes.Equal(final.ChunkChecksum, want) {
			t.Fatalf("accepted final chunk checksum %x, recomputed %x", final.ChunkChecksum, want)
		}
		if len(fds) != len(v.FrameDigests()) {
			t.Fatalf("%d frame digests, recomputed %d", len(v.FrameDigests()), len(fds))
		}
		for i := range fds {
			if !bytes.Equal(fds[i], v.FrameDigests()[i]) {
				t.Fatalf("frame digest %d differs from the recomputed one", i)
			}
		}
		re := chunkstream.NewVerifier(chunkstream.Expect{ChunkID: testID, Size: exp.Size, FrameSize: exp.FrameSize, Digest: want})
		for _, fr := range frames(all, int(exp.FrameSize)) {
			if err := re.Check(fr); err != nil {
				t.Fatalf("accepted chunk does not re-verify: %v", err)
			}
		}
		if !re.Done() {
			t.Fatal("accepted chunk does not re-verify to done")
		}
		if err := v.Check(&dfspb.ChunkDataStream{Offset: v.Received(), IsFinal: true}); err == nil {
			t.Fatal("a frame after the final frame was accepted")
		}
	})
}
