// Package metatest holds Mem, an in-memory meta.Store, and Run, the
// conformance suite every meta.Store implementation must pass.
package metatest

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// Mem is a meta.Store in memory: the reference for the suite and a fake
// for coordinator tests. It is not durable.
type Mem struct {
	mu      sync.RWMutex
	cluster string
	files   map[rpc.Path]*meta.File
	paths   []rpc.Path // sorted
	uploads map[rpc.SessionID]*meta.Upload
	dels    map[meta.Deletion]struct{}
	drains  map[rpc.NodeID]struct{}
}

var _ meta.Store = (*Mem)(nil)

// NewMem returns an empty, uninitialized store.
func NewMem() *Mem {
	return &Mem{files: map[rpc.Path]*meta.File{}, uploads: map[rpc.SessionID]*meta.Upload{}, dels: map[meta.Deletion]struct{}{},
		drains: map[rpc.NodeID]struct{}{}}
}

// CloneFile returns a deep copy of f.
func CloneFile(f *meta.File) *meta.File {
	if f == nil {
		return nil
	}
	g := *f
	g.SHA256 = bytes.Clone(f.SHA256)
	g.Chunks = slices.Clone(f.Chunks)
	for i := range g.Chunks {
		g.Chunks[i].Digest = bytes.Clone(g.Chunks[i].Digest)
	}
	return &g
}

// CloneUpload returns a deep copy of u.
func CloneUpload(u *meta.Upload) *meta.Upload {
	g := *u
	g.Chunks = slices.Clone(u.Chunks)
	for i := range g.Chunks {
		g.Chunks[i].Nodes = slices.Clone(g.Chunks[i].Nodes)
	}
	return &g
}

func (m *Mem) ClusterID() string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.cluster
}

func (m *Mem) Init(ctx context.Context, id string, recs []meta.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cluster != "" {
		return rpc.Errorf(rpc.Exists, "store already belongs to cluster %s", m.cluster)
	}
	if id == "" {
		return rpc.Errorf(rpc.Invalid, "empty cluster id")
	}
	for _, r := range recs {
		switch {
		case r.File != nil:
			m.putFileLocked(CloneFile(r.File))
		case r.Upload != nil:
			m.uploads[r.Upload.ID] = CloneUpload(r.Upload)
		case r.Deletion != nil:
			m.dels[*r.Deletion] = struct{}{}
		case r.Drain != nil:
			m.drains[*r.Drain] = struct{}{}
		}
	}
	m.cluster = id
	return nil
}

func (m *Mem) Close() error { return nil }

func (m *Mem) Get(ctx context.Context, p rpc.Path) (*meta.File, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.readyLocked(); err != nil {
		return nil, err
	}
	f, ok := m.files[p]
	if !ok {
		return nil, rpc.Errorf(rpc.NotFound, "file %s not found", p)
	}
	return CloneFile(f), nil
}

func (m *Mem) readyLocked() error {
	if m.cluster == "" {
		return rpc.Errorf(rpc.FailedPrecondition, "metadata store not initialized")
	}
	return nil
}

// isDirLocked reports whether any file lives below p.
func (m *Mem) isDirLocked(p rpc.Path) bool {
	prefix := p + "/"
	i, _ := slices.BinarySearch(m.paths, prefix)
	return i < len(m.paths) && strings.HasPrefix(string(m.paths[i]), string(prefix))
}

func (m *Mem) putFileLocked(f *meta.File) {
	if _, ok := m.files[f.Path]; !ok {
		i, _ := slices.BinarySearch(m.paths, f.Path)
		m.paths = slices.Insert(m.paths, i, f.Path)
	}
	m.files[f.Path] = f
}

func (m *Mem) Commit(ctx context.Context, txn *meta.Txn) error {
	if err := meta.CheckTxn(txn); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.readyLocked(); err != nil {
		return err
	}
	if txn.Path != "" {
		var cur uint64
		if f, ok := m.files[txn.Path]; ok {
			cur = f.Version
		}
		if txn.Delete && cur == 0 {
			return rpc.Errorf(rpc.NotFound, "file %s not found", txn.Path)
		}
		if cur != txn.Expect {
			return meta.Conflict(txn.Path, cur, txn.Expect)
		}
		if txn.Put != nil {
			if m.isDirLocked(txn.Path) {
				return rpc.Errorf(rpc.Exists, "%s is a directory", txn.Path)
			}
			for d := txn.Path.Dir(); d != "/"; d = d.Dir() {
				if _, ok := m.files[d]; ok {
					return rpc.Errorf(rpc.Exists, "%s: parent %s is a file", txn.Path, d)
				}
			}
			m.putFileLocked(CloneFile(txn.Put))
		}
		if txn.Delete {
			delete(m.files, txn.Path)
			if i, found := slices.BinarySearch(m.paths, txn.Path); found {
				m.paths = slices.Delete(m.paths, i, i+1)
			}
		}
	}
	for _, u := range txn.PutUploads {
		m.uploads[u.ID] = CloneUpload(u)
	}
	for _, id := range txn.DeleteUploads {
		delete(m.uploads, id)
	}
	for _, d := range txn.AddDeletions {
		m.dels[d] = struct{}{}
	}
	for _, d := range txn.DoneDeletions {
		delete(m.dels, d)
	}
	for _, n := range txn.Drain {
		m.drains[n] = struct{}{}
	}
	for _, n := range txn.Undrain {
		delete(m.drains, n)
	}
	return nil
}

func (m *Mem) List(ctx context.Context, dir rpc.Path, recursive bool, after string, limit int) ([]meta.Entry, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.readyLocked(); err != nil {
		return nil, err
	}
	prefix := string(dir) + "/"
	if dir == "/" {
		prefix = "/"
	}
	if f, ok := m.files[dir]; ok && dir != "/" {
		if after >= string(dir) {
			return nil, nil
		}
		return []meta.Entry{{Path: dir, File: CloneFile(f)}}, nil
	}
	start := prefix
	if after >= start {
		start = meta.ListStart(after)
	}
	i, _ := slices.BinarySearch(m.paths, rpc.Path(start))
	var out []meta.Entry
	for ; i < len(m.paths) && len(out) < limit; i++ {
		p := string(m.paths[i])
		if !strings.HasPrefix(p, prefix) {
			break
		}
		rest := p[len(prefix):]
		if j := strings.IndexByte(rest, '/'); j >= 0 && !recursive {
			sub := rpc.Path(prefix + rest[:j])
			if string(sub)+"/" > after {
				out = append(out, meta.Entry{Path: sub, IsDir: true})
			}
			// Skip everything below this directory.
			i, _ = slices.BinarySearch(m.paths, sub+"/\xff")
			i--
			continue
		}
		out = append(out, meta.Entry{Path: m.paths[i], File: CloneFile(m.files[m.paths[i]])})
	}
	if len(out) == 0 && dir != "/" && after == "" && !m.isDirLocked(dir) {
		return nil, rpc.Errorf(rpc.NotFound, "%s: no such file or directory", dir)
	}
	return out, nil
}

func (m *Mem) Uploads(ctx context.Context) ([]*meta.Upload, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []*meta.Upload
	for _, u := range m.uploads {
		out = append(out, CloneUpload(u))
	}
	slices.SortFunc(out, func(a, b *meta.Upload) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out, nil
}

func (m *Mem) Deletions(ctx context.Context) ([]meta.Deletion, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]meta.Deletion, 0, len(m.dels))
	for d := range m.dels {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b meta.Deletion) int { return strings.Compare(meta.DeletionKey(a), meta.DeletionKey(b)) })
	return out, nil
}

func (m *Mem) Drains(ctx context.Context) ([]rpc.NodeID, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.drainsLocked(), nil
}

func (m *Mem) drainsLocked() []rpc.NodeID {
	out := make([]rpc.NodeID, 0, len(m.drains))
	for n := range m.drains {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (m *Mem) Files(ctx context.Context, fn func(*meta.File) error) error {
	m.mu.RLock()
	files := make([]*meta.File, 0, len(m.paths))
	for _, p := range m.paths {
		files = append(files, CloneFile(m.files[p]))
	}
	m.mu.RUnlock()
	for _, f := range files {
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

func (m *Mem) Snapshot(ctx context.Context, fn func(meta.Record) error) error {
	m.mu.RLock()
	var recs []meta.Record
	for _, p := range m.paths {
		recs = append(recs, meta.Record{File: CloneFile(m.files[p])})
	}
	ups := make([]*meta.Upload, 0, len(m.uploads))
	for _, u := range m.uploads {
		ups = append(ups, CloneUpload(u))
	}
	dels := make([]meta.Deletion, 0, len(m.dels))
	for d := range m.dels {
		dels = append(dels, d)
	}
	drains := m.drainsLocked()
	m.mu.RUnlock()
	slices.SortFunc(ups, func(a, b *meta.Upload) int { return strings.Compare(string(a.ID), string(b.ID)) })
	slices.SortFunc(dels, func(a, b meta.Deletion) int { return strings.Compare(meta.DeletionKey(a), meta.DeletionKey(b)) })
	for _, u := range ups {
		recs = append(recs, meta.Record{Upload: u})
	}
	for i := range dels {
		recs = append(recs, meta.Record{Deletion: &dels[i]})
	}
	for i := range drains {
		recs = append(recs, meta.Record{Drain: &drains[i]})
	}
	for _, r := range recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}
