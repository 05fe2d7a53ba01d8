package chunkstore

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/dfs-project/dfs/rpc"
)

// A pack file (packs/<seq>.pack) is a sequence of records, each whole in
// itself, appended and never rewritten:
//
//	header (88 bytes):
//	  magic[4] "DFSR"  kind u8 (1 put, 2 delete)  0 u8  idLen u16
//	  size u64  frameSize u64  nframes u32  recLen u32  digest[32]
//	  targetSeq u64  targetOff u64  headerCRC u32  0 u32
//	id[idLen]
//	put only: data[size]  frame digests[nframes*32]
//	recordCRC u32
//
// Integers are big-endian. headerCRC is the CRC-32C (Castagnoli) of the
// header's first 80 bytes and the ID; recordCRC is the CRC-32C of every
// byte before it. A delete record names the put it cancels by the
// sequence number of its pack and its offset there (targetSeq,
// targetOff), so replaying it can never remove another copy of the chunk
// (one written later, or moved by compaction).
const (
	recMagic      = "DFSR"
	recPut        = 1
	recDelete     = 2
	recHeaderSize = 88
	recCRCSize    = 4
	maxRecIDLen   = 128
	// maxRecLen bounds a record: the largest chunk with its digests.
	maxRecLen = recHeaderSize + maxRecIDLen + rpc.MaxChunkSize + (rpc.MaxChunkSize/rpc.MinFrameSize+1)*sha256.Size + recCRCSize
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recHeader is a record's decoded header.
type recHeader struct {
	kind      byte
	id        rpc.ChunkID
	size      int64
	frameSize int64
	nframes   int64
	recLen    int64
	digest    []byte
	targetSeq uint64
	targetOff int64
}

// putRecordSize returns the bytes of a put record for a chunk of size
// bytes in frames of frameSize.
func putRecordSize(id rpc.ChunkID, size, frameSize int64) int64 {
	return recHeaderSize + int64(len(id)) + size + (size+frameSize-1)/frameSize*sha256.Size + recCRCSize
}

// encodeHeader fills the header and ID of a record in b, which holds the
// whole record.
func encodeHeader(b []byte, h recHeader) {
	copy(b, recMagic)
	b[4] = h.kind
	binary.BigEndian.PutUint16(b[6:], uint16(len(h.id)))
	binary.BigEndian.PutUint64(b[8:], uint64(h.size))
	binary.BigEndian.PutUint64(b[16:], uint64(h.frameSize))
	binary.BigEndian.PutUint32(b[24:], uint32(h.nframes))
	binary.BigEndian.PutUint32(b[28:], uint32(h.recLen))
	copy(b[32:64], h.digest)
	binary.BigEndian.PutUint64(b[64:], h.targetSeq)
	binary.BigEndian.PutUint64(b[72:], uint64(h.targetOff))
	copy(b[recHeaderSize:], h.id)
	crc := crc32.Update(crc32.Checksum(b[:80], castagnoli), castagnoli, []byte(h.id))
	binary.BigEndian.PutUint32(b[80:], crc)
}

// sealRecord writes the record CRC at the end of b.
func sealRecord(b []byte) {
	n := len(b) - recCRCSize
	binary.BigEndian.PutUint32(b[n:], crc32.Checksum(b[:n], castagnoli))
}

// encodePut returns the put record of a chunk.
func encodePut(id rpc.ChunkID, frameSize int64, data []byte, frames [][]byte, digest []byte) []byte {
	size := int64(len(data))
	n := putRecordSize(id, size, frameSize)
	b := make([]byte, n)
	encodeHeader(b, recHeader{kind: recPut, id: id, size: size, frameSize: frameSize, nframes: int64(len(frames)), recLen: n, digest: digest})
	off := recHeaderSize + len(id)
	off += copy(b[off:], data)
	for _, fd := range frames {
		off += copy(b[off:], fd)
	}
	sealRecord(b)
	return b
}

// encodeDelete returns the delete record that cancels the put of chunk
// id at offset off of pack seq.
func encodeDelete(id rpc.ChunkID, seq uint64, off int64) []byte {
	n := deleteRecordSize(id)
	b := make([]byte, n)
	encodeHeader(b, recHeader{kind: recDelete, id: id, recLen: n, digest: make([]byte, sha256.Size), targetSeq: seq, targetOff: off})
	sealRecord(b)
	return b
}

// deleteRecordSize returns the bytes of a delete record of chunk id.
func deleteRecordSize(id rpc.ChunkID) int64 { return int64(recHeaderSize + len(id) + recCRCSize) }

// decodeHeader checks and decodes a record's header; b holds at least
// recHeaderSize bytes, then idb the ID's bytes (idLen of the header, which
// idLen returns first).
func decodeHeader(b, idb []byte) (recHeader, error) {
	if string(b[:4]) != recMagic {
		return recHeader{}, fmt.Errorf("bad magic %q", b[:4])
	}
	if int(binary.BigEndian.Uint16(b[6:])) != len(idb) {
		return recHeader{}, fmt.Errorf("id length mismatch")
	}
	crc := crc32.Update(crc32.Checksum(b[:80], castagnoli), castagnoli, idb)
	if crc != binary.BigEndian.Uint32(b[80:]) {
		return recHeader{}, fmt.Errorf("header checksum mismatch")
	}
	id, err := rpc.ParseChunkID(string(idb))
	if err != nil {
		return recHeader{}, err
	}
	h := recHeader{
		kind:      b[4],
		id:        id,
		size:      int64(binary.BigEndian.Uint64(b[8:])),
		frameSize: int64(binary.BigEndian.Uint64(b[16:])),
		nframes:   int64(binary.BigEndian.Uint32(b[24:])),
		recLen:    int64(binary.BigEndian.Uint32(b[28:])),
		digest:    b[32:64:64],
		targetSeq: binary.BigEndian.Uint64(b[64:]),
		targetOff: int64(binary.BigEndian.Uint64(b[72:])),
	}
	switch h.kind {
	case recPut:
		if h.size <= 0 || h.size > rpc.MaxChunkSize || rpc.CheckFrameSize(h.frameSize) != nil {
			return recHeader{}, fmt.Errorf("size %d, frame size %d", h.size, h.frameSize)
		}
		if h.nframes != (h.size+h.frameSize-1)/h.frameSize || h.recLen != putRecordSize(id, h.size, h.frameSize) {
			return recHeader{}, fmt.Errorf("%d frames, record of %d bytes for a chunk of %d", h.nframes, h.recLen, h.size)
		}
	case recDelete:
		if h.size != 0 || h.nframes != 0 || h.recLen != int64(recHeaderSize+len(idb)+recCRCSize) || h.targetOff < 0 {
			return recHeader{}, fmt.Errorf("malformed delete record")
		}
	default:
		return recHeader{}, fmt.Errorf("unknown record kind %d", h.kind)
	}
	return h, nil
}

// idLen returns the ID length a header claims, bounded.
func idLen(b []byte) (int, error) {
	n := int(binary.BigEndian.Uint16(b[6:]))
	if string(b[:4]) != recMagic || n == 0 || n > maxRecIDLen {
		return 0, fmt.Errorf("bad record header")
	}
	return n, nil
}

// recordCRCOK reports whether the whole record b carries a good CRC.
func recordCRCOK(b []byte) bool {
	n := len(b) - recCRCSize
	return n > 0 && crc32.Checksum(b[:n], castagnoli) == binary.BigEndian.Uint32(b[n:])
}
