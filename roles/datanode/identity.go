package datanode

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/google/uuid"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
)

// A data directory holds, beside the chunk store (package chunkstore),
// the node's identity: node-id, written once on first start, and
// cluster-id, written when the node first joins a cluster. While a
// datanode runs it holds lockFile locked, so that a second datanode
// started on the same directory fails instead of sharing the identity
// (the coordinator would then list the node at the address of whichever
// heartbeat came last).

// lockFile is the file a running datanode holds locked in its data dir.
const lockFile = "lock"

// dirLock is a data dir held by this process; Close releases it.
type dirLock struct{ f *os.File }

// lockDataDir takes the data dir's lock, without waiting: an flock
// (LOCK_EX|LOCK_NB, as bbolt takes on its file) on dir/lock, which the
// kernel releases when the process ends, however it ends. A dir locked by
// another process (or another Node in this one) fails with a one-line
// error naming it.
func lockDataDir(dir string) (*dirLock, error) {
	p := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("datanode: lock data dir: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return nil, fmt.Errorf("datanode: data dir %s is in use by another datanode (%s is locked)", dir, p)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("datanode: lock data dir: flock %s: %w", p, err)
	}
	return &dirLock{f: f}, nil
}

// Close releases the lock; it may be called more than once.
func (l *dirLock) Close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
	return err
}

// LoadOrCreateNodeID returns the node ID persisted in dir, creating and
// durably writing a new one on first start.
func LoadOrCreateNodeID(dir string) (rpc.NodeID, error) {
	p := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(p)
	if err == nil {
		id, perr := rpc.ParseNodeID(string(bytes.TrimSpace(b)))
		if perr != nil {
			return "", fmt.Errorf("datanode: %s holds %q, not a node id", p, bytes.TrimSpace(b))
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("datanode: read node id: %w", err)
	}
	id := rpc.NodeID(uuid.NewString())
	tmp := p + ".tmp"
	if err := vfs.WriteFile(vfs.Default, tmp, []byte(string(id)+"\n")); err != nil {
		return "", fmt.Errorf("datanode: write node id: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("datanode: write node id: %w", err)
	}
	if err := vfs.Default.SyncDir(dir); err != nil {
		return "", fmt.Errorf("datanode: write node id: %w", err)
	}
	return id, nil
}

// loadClusterID returns the cluster ID persisted in dir, or "" before the
// node first joined a cluster.
func loadClusterID(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cluster-id"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("datanode: read cluster id: %w", err)
	}
	id := string(bytes.TrimSpace(b))
	if _, err := uuid.Parse(id); err != nil {
		return "", fmt.Errorf("datanode: %s holds %q, not a cluster id", filepath.Join(dir, "cluster-id"), id)
	}
	return id, nil
}

// saveClusterID durably records the cluster the node joined. A failure
// to write it is an error of this node's disk, of type *localError.
func saveClusterID(dir, id string) error {
	if _, err := uuid.Parse(id); err != nil {
		// Saved, it would keep the node from starting again.
		return fmt.Errorf("datanode: the coordinator sent %q, not a cluster id", id)
	}
	p := filepath.Join(dir, "cluster-id")
	err := vfs.WriteFile(vfs.Default, p+".tmp", []byte(id+"\n"))
	if err == nil {
		err = os.Rename(p+".tmp", p)
	}
	if err == nil {
		err = vfs.Default.SyncDir(dir)
	}
	if err != nil {
		os.Remove(p + ".tmp")
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is said below
		}
		return &localError{fmt.Errorf("datanode: record the cluster joined: writing %s: %w", p, err)}
	}
	return nil
}

// localError is a failure of the node itself (its disk), not of the
// coordinator it talks to.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }
