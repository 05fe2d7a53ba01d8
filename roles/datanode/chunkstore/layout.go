package chunkstore

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/rpc"
)

// The store keeps chunk files under dir in the nested layout
// dir/chunks/<hash[0:2]>/<hash[2]>/<chunk id> (4096 directories), and
// pack files in dir/packs. A chunk directory is created (and its parent
// fsynced) when the first chunk file goes there. Chunks of at most the pack
// threshold are records in pack files, so a small write never creates a
// directory, and chunk files create at most 4,352 (256 + 4,096) in a
// store's life.
const layoutMarker = ".layout-v1"

// tempSuffix ends the name of a chunk being written, beside its final name.
const tempSuffix = ".tmp"

// corruptSuffix ends the name of a chunk file found corrupt, beside its
// final name: the mark survives a restart, and the file stays (counted as
// used) until Delete removes it.
const corruptSuffix = ".corrupt"

// ProbeFile is the file the writability probe writes, fsyncs and removes
// in the data dir.
const ProbeFile = ".write-probe"

func (s *Store) chunkRoot() string { return filepath.Join(s.dir, "chunks") }

// path returns where a validated chunk ID lives.
func (s *Store) path(id rpc.ChunkID) string {
	h := id.Hash()
	return filepath.Join(s.chunkRoot(), h[0:2], h[2:3], string(id))
}

// ChunkPath returns the file that holds chunk id (whether or not it is
// stored): for operators inspecting a node, and for tests that damage it.
// A chunk found corrupt is moved to ChunkPath(id) + ".corrupt".
func (s *Store) ChunkPath(id rpc.ChunkID) string { return s.path(id) }

func (s *Store) createLayout() error {
	if err := s.createChunkRoot(); err != nil {
		return err
	}
	if _, err := s.fs.Stat(s.packDir()); err == nil {
		return nil
	}
	if err := s.fs.Mkdir(s.packDir(), 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			return nil // a full disk still opens; packing waits for room
		}
		return fmt.Errorf("datanode: create pack directory: %w", err)
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("datanode: create pack directory: %w", err)
	}
	return nil
}

// createChunkRoot creates the chunk root, durably, once (layoutMarker).
func (s *Store) createChunkRoot() error {
	marker := filepath.Join(s.chunkRoot(), layoutMarker)
	if _, err := s.fs.Stat(marker); err == nil {
		return nil
	}
	if err := s.fs.MkdirAll(s.chunkRoot(), 0o750); err != nil {
		return fmt.Errorf("datanode: create chunk directories: %w", err)
	}
	if err := vfs.WriteFile(s.fs, marker, []byte("chunks/<hash[0:2]>/<hash[2]>/<chunk id>\n")); err != nil {
		return fmt.Errorf("datanode: create chunk directories: %w", err)
	}
	if err := s.fs.SyncDir(s.chunkRoot()); err != nil {
		return fmt.Errorf("datanode: create chunk directories: %w", err)
	}
	return s.fs.SyncDir(s.dir)
}

// chunkDir returns the directory of chunk id, creating it and its parent
// (durably) on first use.
func (s *Store) chunkDir(id rpc.ChunkID) (string, error) {
	dir := filepath.Dir(s.path(id))
	if _, ok := s.dirs.Load(dir); ok {
		return dir, nil
	}
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := s.durableDir(d); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// durableDir makes sure directory d exists and its entry is on disk: it
// creates d if missing and fsyncs d's parent, once per process (a
// directory found made by an earlier process that died before the fsync
// gets it too), and remembers d.
func (s *Store) durableDir(d string) error {
	if _, ok := s.dirs.Load(d); ok {
		return nil
	}
	if err := s.fs.Mkdir(d, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := s.fs.SyncDir(filepath.Dir(d)); err != nil {
		return err
	}
	s.dirs.Store(d, true)
	return nil
}

// removeTemps deletes the temporary files of writes a crash interrupted.
func (s *Store) removeTemps() error {
	return walkFiles(s.fs, s.chunkRoot(), func(p string, d fs.DirEntry) error {
		if strings.HasSuffix(d.Name(), tempSuffix) {
			s.fs.Remove(p)
		}
		return nil
	})
}

// Walk calls fn for every chunk on disk with its size there: chunk files
// (stored chunks, and chunks quarantined as corrupt that await deletion;
// files whose name is not a valid chunk ID are ignored), then packed
// chunks, stored or corrupt, with the size of their record.
func (s *Store) Walk(fn func(id rpc.ChunkID, fileSize int64) error) error {
	if err := s.walk(func(id rpc.ChunkID, size int64, _ bool) error { return fn(id, size) }); err != nil {
		return err
	}
	s.mu.Lock()
	sizes := make(map[rpc.ChunkID]int64, len(s.packed))
	for id, loc := range s.packed {
		sizes[id] = loc.n
	}
	s.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(sizes)) {
		if err := fn(id, sizes[id]); err != nil {
			return err
		}
	}
	return nil
}

// walk is Walk, telling quarantined chunks apart.
func (s *Store) walk(fn func(id rpc.ChunkID, fileSize int64, quarantined bool) error) error {
	return walkFiles(s.fs, s.chunkRoot(), func(p string, d fs.DirEntry) error {
		name, quarantined := strings.CutSuffix(d.Name(), corruptSuffix)
		id, perr := rpc.ParseChunkID(name)
		if perr != nil {
			return nil
		}
		info, ierr := d.Info()
		if ierr != nil {
			return nil
		}
		return fn(id, info.Size(), quarantined)
	})
}

// walkFiles calls fn for every file below dir, in lexical order, as
// filepath.WalkDir does; a directory gone meanwhile holds none, and an
// error from fn ends the walk and is returned.
func walkFiles(fsys vfs.FS, dir string, fn func(p string, d fs.DirEntry) error) error {
	es, err := fsys.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range es {
		p := filepath.Join(dir, e.Name())
		if e.IsDir() {
			err = walkFiles(fsys, p, fn)
		} else {
			err = fn(p, e)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// readNames returns the names in dir; none when dir does not exist.
func readNames(fsys vfs.FS, dir string) (map[string]struct{}, error) {
	list, err := fsys.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make(map[string]struct{}, len(list))
	for _, e := range list {
		names[e.Name()] = struct{}{}
	}
	return names, nil
}

// ProbeWrite checks that the store's disk takes writes as a chunk needs
// them: it creates a small file in the data dir, writes it, fsyncs it and
// removes it. An error (a read-only or failing filesystem) says why no new
// chunk can be stored; reads may still work.
func (s *Store) ProbeWrite() error { return checkWritable(s.fs, s.dir) }

func checkWritable(fsys vfs.FS, dir string) error {
	name := filepath.Join(dir, ProbeFile)
	f, err := fsys.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	_, werr := f.Write(make([]byte, 512))
	if werr == nil {
		werr = f.Sync()
	}
	cerr := f.Close()
	rerr := fsys.Remove(name)
	for _, err := range []error{werr, cerr, rerr} {
		if err != nil {
			return fmt.Errorf("data dir %s is not writable: %w", dir, err)
		}
	}
	return nil
}
