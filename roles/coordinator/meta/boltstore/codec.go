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

// Directories live in the files bucket under meta.DirKey (the path and a
// slash), a key no file has, so they sort in meta.ListKey order among the
// files.

// isDirKey reports whether k, a key of the files bucket, is a directory's.
func isDirKey(k []byte) bool { return len(k) > 0 && k[len(k)-1] == '/' }

func dirKey(p rpc.Path) []byte { return []byte(meta.DirKey(p)) }

func encodeDir(d *meta.Dir) ([]byte, error) {
	if _, err := meta.DirFromPB(meta.DirToPB(d)); err != nil {
		return nil, rpc.Errorf(rpc.Invalid, "directory %s would not read back: %w", d.Path, err)
	}
	return meta.MarshalDir(d)
}

func decodeDir(k, v []byte) (*meta.Dir, error) {
	d, err := meta.UnmarshalDir(v)
	if err != nil {
		return nil, rpc.Errorf(rpc.Internal, "stored directory %q is damaged: %w", k, err)
	}
	if meta.DirKey(d.Path) != string(k) {
		return nil, rpc.Errorf(rpc.Internal, "stored directory %q is damaged: it holds %s", k, d.Path)
	}
	return d, nil
}

// decodeEntry decodes the file or directory at key k of the files bucket.
func decodeEntry(k, v []byte) (meta.Entry, error) {
	if isDirKey(k) {
		d, err := decodeDir(k, v)
		if err != nil {
			return meta.Entry{}, err
		}
		return meta.Entry{Path: d.Path, IsDir: true, Dir: d}, nil
	}
	f, err := decodeFile(k, v)
	if err != nil {
		return meta.Entry{}, err
	}
	return meta.Entry{Path: f.Path, File: f}, nil
}
