package boltstore

import (
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// Values are meta's protobuf encodings. What goes in is checked to read
// back (a record that fails meta's decoding checks is refused with
// rpc.Invalid rather than stored as a value no read could return), and
// what comes out is decoded, validated and checked against its key: a
// damaged value is an error of kind rpc.Internal, never a panic.

func encodeFile(f *meta.File) ([]byte, error) {
	if _, err := meta.FileFromPB(meta.FileToPB(f)); err != nil {
		return nil, rpc.Errorf(rpc.Invalid, "file %s would not read back: %w", f.Path, err)
	}
	return meta.MarshalFile(f)
}

func encodeUpload(u *meta.Upload) ([]byte, error) {
	if _, err := meta.UploadFromPB(meta.UploadToPB(u)); err != nil {
		return nil, rpc.Errorf(rpc.Invalid, "upload %s would not read back: %w", u.ID, err)
	}
	return meta.MarshalUpload(u)
}

func deletionKey(d meta.Deletion) ([]byte, error) {
	k := meta.DeletionKey(d)
	if _, err := meta.ParseDeletionKey(k); err != nil {
		return nil, rpc.Errorf(rpc.Invalid, "deletion %s would not read back: %w", k, err)
	}
	return []byte(k), nil
}

func drainKey(n rpc.NodeID) ([]byte, error) {
	if _, err := rpc.ParseNodeID(string(n)); err != nil {
		return nil, rpc.Errorf(rpc.Invalid, "drain of %q would not read back: %w", n, err)
	}
	return []byte(n), nil
}

func decodeFile(k, v []byte) (*meta.File, error) {
	f, err := meta.UnmarshalFile(v)
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "stored file %q is damaged: %w", k, err)
	}
	if string(f.Path) != string(k) {
		return nil, rpc.Errorf(rpc.Internal, "stored file %q is damaged: it holds %s", k, f.Path)
	}
	return f, nil
}

func decodeUpload(k, v []byte) (*meta.Upload, error) {
	u, err := meta.UnmarshalUpload(v)
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "stored upload %q is damaged: %w", k, err)
	}
	if string(u.ID) != string(k) {
		return nil, rpc.Errorf(rpc.Internal, "stored upload %q is damaged: it holds %s", k, u.ID)
	}
	return u, nil
}

func decodeDeletion(k []byte) (meta.Deletion, error) {
	d, err := meta.ParseDeletionKey(string(k))
	if err != nil {
		return meta.Deletion{}, rpc.Errorf(rpc.Internal, "stored deletion %q is damaged: %w", k, err)
	}
	return d, nil
}

func decodeDrain(k []byte) (rpc.NodeID, error) {
	n, err := rpc.ParseNodeID(string(k))
	if err != nil {
		return "", rpc.Errorf(rpc.Internal, "stored drain %q is damaged: %w", k, err)
	}
	return n, nil
}
