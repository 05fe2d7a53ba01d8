package meta

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/roles/coordinator/meta/metapb"
	"github.com/dfs-project/dfs/rpc"
)

// A backup is a store-independent stream:
//
//	"DFSBACKUP1\n" | frame(BackupHeader) | frame(BackupRecord)... | frame(BackupTrailer)
//
// where frame(m) is a kind byte ('H', 'R', 'T'), a uvarint length and the
// message. The trailer counts the records and carries the SHA-256 of every
// byte before it, so a truncated or altered file is refused as a whole.
const (
	backupMagic = "DFSBACKUP1\n"
	// maxBackupFrame fits the record of a file of rpc.MaxFileChunks
	// chunks (about 91 MiB) with room to spare.
	maxBackupFrame = 128 << 20
)

// Backup writes a consistent snapshot of s to w under a header naming
// info's cluster, creation time and store (its Records is ignored: the
// trailer counts what was written).
func Backup(ctx context.Context, s Snapshotter, w io.Writer, info BackupInfo) (records uint64, err error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	h := sha256.New()
	mw := io.MultiWriter(bw, h)
	if _, err := io.WriteString(mw, backupMagic); err != nil {
		return 0, err
	}
	if err := writeFrame(mw, 'H', &metapb.BackupHeader{ClusterId: info.ClusterID, CreatedUnixNano: info.Created.UnixNano(), Store: info.Store}); err != nil {
		return 0, err
	}
	err = s.Snapshot(ctx, func(r Record) error {
		rec := &metapb.BackupRecord{}
		switch {
		case r.File != nil:
			rec.Record = &metapb.BackupRecord_File{File: FileToPB(r.File)}
		case r.Dir != nil:
			rec.Record = &metapb.BackupRecord_Dir{Dir: DirToPB(r.Dir)}
		case r.Upload != nil:
			rec.Record = &metapb.BackupRecord_Upload{Upload: UploadToPB(r.Upload)}
		case r.Deletion != nil:
			rec.Record = &metapb.BackupRecord_Deletion{Deletion: &metapb.Deletion{Node: string(r.Deletion.Node), Chunk: string(r.Deletion.Chunk)}}
		case r.Drain != nil:
			rec.Record = &metapb.BackupRecord_Drain{Drain: &metapb.Drain{Node: string(*r.Drain)}}
		default:
			return nil
		}
		records++
		return writeFrame(mw, 'R', rec)
	})
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	if err := writeFrame(bw, 'T', &metapb.BackupTrailer{Records: records, Sha256: h.Sum(nil)}); err != nil {
		return 0, err
	}
	return records, bw.Flush()
}

func writeFrame(w io.Writer, kind byte, m proto.Message) error {
	b, err := marshal(m)
	if err != nil {
		return err
	}
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = kind
	n := binary.PutUvarint(hdr[1:], uint64(len(b)))
	if _, err := w.Write(hdr[:1+n]); err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// BackupInfo is what a backup's header says.
type BackupInfo struct {
	ClusterID string
	Created   time.Time
	Store     string
	Records   uint64
}

// ReadBackup reads a whole backup from r, verifying its structure, every
// record and the trailer's count and checksum, and only then returns the
// records: a damaged backup yields an error and no records.
func ReadBackup(r io.Reader) (BackupInfo, []Record, error) {
	var recs []Record
	info, err := EachBackupRecord(r, func(rec Record) error {
		recs = append(recs, rec)
		return nil
	})
	if err != nil {
		return BackupInfo{}, nil, err
	}
	return info, recs, nil
}

// EachBackupRecord reads a whole backup from r as ReadBackup does, but
// keeps no record: fn (if not nil) is called with each as it is read, and
// an error from fn ends the read with it. The count and checksum are
// checked only at the end, so fn may have seen records of a backup then
// found damaged: read it once with fn nil to verify it, then again to
// load it in a transaction that the error undoes (a restore does).
func EachBackupRecord(r io.Reader, fn func(Record) error) (BackupInfo, error) {
	bad := func(format string, args ...any) (BackupInfo, error) {
		return BackupInfo{}, rpc.Errorf(rpc.Invalid, "backup: "+format, args...)
	}
	h := sha256.New()
	br := bufio.NewReaderSize(r, 1<<20)
	magic := make([]byte, len(backupMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != backupMagic {
		return bad("not a dfs backup (bad magic)")
	}
	h.Write(magic)
	kind, body, err := readFrame(br, h)
	if err != nil || kind != 'H' {
		return bad("missing header: %v", err)
	}
	var hdr metapb.BackupHeader
	if err := proto.Unmarshal(body, &hdr); err != nil || hdr.ClusterId == "" {
		return bad("bad header")
	}
	info := BackupInfo{ClusterID: hdr.ClusterId, Created: time.Unix(0, hdr.CreatedUnixNano), Store: hdr.Store}
	n := uint64(0)
	for {
		sum := h.Sum(nil)
		kind, body, err := readFrame(br, h)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return bad("truncated after %d records (no trailer)", n)
		}
		if err != nil {
			return bad("%v", err)
		}
		switch kind {
		case 'R':
			var m metapb.BackupRecord
			if err := proto.Unmarshal(body, &m); err != nil {
				return bad("record %d: %v", n, err)
			}
			rec, err := recordFromPB(&m)
			if err != nil {
				return bad("record %d: %v", n, err)
			}
			if fn != nil {
				if err := fn(rec); err != nil {
					return BackupInfo{}, err
				}
			}
			n++
		case 'T':
			var t metapb.BackupTrailer
			if err := proto.Unmarshal(body, &t); err != nil {
				return bad("bad trailer")
			}
			if t.Records != n || !bytes.Equal(t.Sha256, sum) {
				return bad("checksum or record count mismatch (%d records read, trailer says %d)", n, t.Records)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				return bad("data after the trailer")
			}
			info.Records = t.Records
			return info, nil
		default:
			return bad("unknown frame kind %q", kind)
		}
	}
}

func readFrame(br *bufio.Reader, h hash.Hash) (byte, []byte, error) {
	kind, err := br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return 0, nil, io.ErrUnexpectedEOF
	}
	if n > maxBackupFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes is too large", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, nil, io.ErrUnexpectedEOF
	}
	if kind != 'T' {
		var hdr [1 + binary.MaxVarintLen64]byte
		hdr[0] = kind
		m := binary.PutUvarint(hdr[1:], n)
		h.Write(hdr[:1+m])
		h.Write(body)
	}
	return kind, body, nil
}

func recordFromPB(m *metapb.BackupRecord) (Record, error) {
	switch r := m.Record.(type) {
	case *metapb.BackupRecord_File:
		f, err := FileFromPB(r.File)
		return Record{File: f}, err
	case *metapb.BackupRecord_Dir:
		d, err := DirFromPB(r.Dir)
		return Record{Dir: d}, err
	case *metapb.BackupRecord_Upload:
		u, err := UploadFromPB(r.Upload)
		return Record{Upload: u}, err
	case *metapb.BackupRecord_Deletion:
		d, err := DeletionFromPB(r.Deletion)
		return Record{Deletion: &d}, err
	case *metapb.BackupRecord_Drain:
		n, err := rpc.ParseNodeID(r.Drain.GetNode())
		if err != nil {
			return Record{}, fmt.Errorf("decode drain: %w", err)
		}
		return Record{Drain: &n}, nil
	}
	return Record{}, fmt.Errorf("empty record")
}
