// Package metatest holds Mem, an in-memory meta.Store, and Run, the
// conformance suite every meta.Store implementation must pass.
package metatest

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

// Mem is a meta.Store in memory: the reference for the suite and a fake
// for coordinator tests. It is not durable.
//
// Files and directories share one sorted key space, keys, as the backends
// keep them: a file's key is its path, a directory's meta.DirKey (its path
// and a slash), so keys sort in meta.ListKey order and a directory comes
// right before what it holds.
type Mem struct {
	mu      sync.RWMutex
	cluster string
	files   map[rpc.Path]*meta.File
	dirs    map[rpc.Path]*meta.Dir
	keys    []string // sorted
	uploads map[rpc.SessionID]*meta.Upload
	dels    map[meta.Deletion]struct{}
	drains  map[rpc.NodeID]struct{}
}

var _ meta.Store = (*Mem)(nil)

// NewMem returns an empty, uninitialized store.
func NewMem() *Mem {
	return &Mem{files: map[rpc.Path]*meta.File{}, dirs: map[rpc.Path]*meta.Dir{}, uploads: map[rpc.SessionID]*meta.Upload{},
		dels: map[meta.Deletion]struct{}{}, drains: map[rpc.NodeID]struct{}{}}
}

// CloneFile returns a deep copy of f.
func CloneFile(f *meta.File) *meta.File {
	if f == nil {
		return nil
	}
	g := *f
	g.SHA256 = bytes.Clone(f.SHA256)
	g.Metadata = maps.Clone(f.Metadata)
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

func cloneDir(d *meta.Dir) *meta.Dir {
	g := *d
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
			m.mkparentsLocked(r.File.Path, r.File.Modified)
			m.putFileLocked(CloneFile(r.File))
		case r.Dir != nil:
			m.mkparentsLocked(r.Dir.Path, r.Dir.Modified)
			m.putDirLocked(cloneDir(r.Dir))
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

func (m *Mem) Lookup(ctx context.Context, p rpc.Path) (meta.Entry, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.readyLocked(); err != nil {
		return meta.Entry{}, err
	}
	return m.lookupLocked(p)
}

func (m *Mem) Walk(ctx context.Context, p rpc.Path) ([]meta.Entry, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.readyLocked(); err != nil {
		return nil, err
	}
	var out []meta.Entry
	for _, q := range meta.Lineage(p) {
		e, err := m.lookupLocked(q)
		if err != nil {
			return out, nil
		}
		out = append(out, e)
		if !e.IsDir {
			break
		}
	}
	return out, nil
}

func (m *Mem) lookupLocked(p rpc.Path) (meta.Entry, error) {
	if p == "/" {
		return meta.Root(), nil
	}
	if f, ok := m.files[p]; ok {
		return meta.Entry{Path: p, File: CloneFile(f)}, nil
	}
	if d, ok := m.dirs[p]; ok {
		return meta.Entry{Path: p, IsDir: true, Dir: cloneDir(d)}, nil
	}
	return meta.Entry{}, rpc.Errorf(rpc.NotFound, "%s: no such file or directory", p)
}

func (m *Mem) readyLocked() error {
	if m.cluster == "" {
		return rpc.Errorf(rpc.FailedPrecondition, "metadata store not initialized")
	}
	return nil
}

// isDirLocked reports whether p is a directory.
func (m *Mem) isDirLocked(p rpc.Path) bool {
	_, ok := m.dirs[p]
	return ok || p == "/"
}

func (m *Mem) insertKeyLocked(k string) {
	if i, found := slices.BinarySearch(m.keys, k); !found {
		m.keys = slices.Insert(m.keys, i, k)
	}
}

func (m *Mem) deleteKeyLocked(k string) {
	if i, found := slices.BinarySearch(m.keys, k); found {
		m.keys = slices.Delete(m.keys, i, i+1)
	}
}

func (m *Mem) putFileLocked(f *meta.File) {
	m.insertKeyLocked(string(f.Path))
	m.files[f.Path] = f
}

func (m *Mem) putDirLocked(d *meta.Dir) {
	m.insertKeyLocked(meta.DirKey(d.Path))
	m.dirs[d.Path] = d
}

// missingParentsLocked returns the ancestors of p that are not
// directories, nearest first, or rpc.Exists when one is a file.
func (m *Mem) missingParentsLocked(p rpc.Path) ([]rpc.Path, error) {
	var missing []rpc.Path
	for d := p.Dir(); !m.isDirLocked(d); d = d.Dir() {
		if _, ok := m.files[d]; ok {
			return nil, rpc.Errorf(rpc.Exists, "%s: parent %s is a file", p, d)
		}
		missing = append(missing, d)
	}
	return missing, nil
}

// mkparentsLocked creates the missing ancestors of p; an ancestor that is
// a file stays (Init loads records as they are).
func (m *Mem) mkparentsLocked(p rpc.Path, mod time.Time) {
	for d := p.Dir(); d != "/"; d = d.Dir() {
		if _, ok := m.dirs[d]; !ok {
			m.putDirLocked(&meta.Dir{Path: d, Modified: mod})
		}
	}
}

// subtreeLocked returns the index range in keys of dir's key and
// everything below it.
func (m *Mem) subtreeLocked(dir rpc.Path) (int, int) {
	i, _ := slices.BinarySearch(m.keys, meta.DirKey(dir))
	j, _ := slices.BinarySearch(m.keys, string(dir)+"0") // '0' follows '/'
	return i, j
}

// checkLocked runs the checks of txn's change of Path and returns the
// directories it creates, without changing anything.
func (m *Mem) checkLocked(txn *meta.Txn) (mk []rpc.Path, err error) {
	p := txn.Path
	var cur uint64
	if f, ok := m.files[p]; ok {
		cur = f.Version
	}
	switch {
	case txn.Mkdir != nil:
		switch {
		case cur != 0:
			return nil, rpc.Errorf(rpc.Exists, "mkdir %s: a file exists there", p)
		case m.isDirLocked(p) && !txn.MkdirParents:
			return nil, rpc.Errorf(rpc.Exists, "mkdir %s: the directory exists", p)
		case m.isDirLocked(p):
			return nil, nil
		}
		missing, err := m.missingParentsLocked(p)
		if err != nil {
			return nil, err
		}
		if len(missing) > 0 && !txn.MkdirParents {
			return nil, rpc.Errorf(rpc.NotFound, "mkdir %s: the parent directory %s does not exist", p, p.Dir())
		}
		return append(missing, p), nil
	case txn.Rmdir:
		switch {
		case cur != 0:
			return nil, rpc.Errorf(rpc.Invalid, "rmdir %s: a file, not a directory", p)
		case !m.isDirLocked(p):
			return nil, rpc.Errorf(rpc.NotFound, "rmdir %s: no such directory", p)
		}
		if i, j := m.subtreeLocked(p); j-i > 1 {
			return nil, rpc.Errorf(rpc.Other, "rmdir %s: %w", p, meta.ErrNotEmpty)
		}
		return nil, nil
	case txn.Move != nil:
		return m.checkMoveLocked(txn, cur)
	case txn.SetAttr != nil:
		if cur == 0 && !m.isDirLocked(p) {
			return nil, rpc.Errorf(rpc.NotFound, "setattr %s: no such file or directory", p)
		}
		return nil, nil
	}
	if txn.Delete && cur == 0 {
		return nil, rpc.Errorf(rpc.NotFound, "file %s not found", p)
	}
	if cur != txn.Expect {
		return nil, meta.Conflict(p, cur, txn.Expect)
	}
	if txn.Put != nil {
		if m.isDirLocked(p) {
			return nil, rpc.Errorf(rpc.Exists, "%s is a directory", p)
		}
		return m.missingParentsLocked(p)
	}
	return nil, nil
}

// checkMoveLocked runs the checks of a Move; cur is the version of the
// file at the txn's Path (0: none).
func (m *Mem) checkMoveLocked(txn *meta.Txn, cur uint64) ([]rpc.Path, error) {
	to := txn.Move.To
	isDir := m.isDirLocked(txn.Path)
	if same, err := meta.CheckMoveSource(txn, cur, isDir); same || err != nil {
		return nil, err
	}
	var dst uint64
	if f, ok := m.files[to]; ok {
		dst = f.Version
	}
	if err := meta.CheckMoveTarget(txn, isDir, dst, m.isDirLocked(to)); err != nil {
		return nil, err
	}
	return m.missingParentsLocked(to)
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
		mk, err := m.checkLocked(txn)
		if err != nil {
			return err
		}
		mod := time.Time{}
		switch {
		case txn.Put != nil:
			mod = txn.Put.Modified
		case txn.Mkdir != nil:
			mod = txn.Mkdir.Modified
		case txn.Move != nil:
			mod = txn.Move.Modified
		}
		for _, d := range mk {
			m.putDirLocked(&meta.Dir{Path: d, Modified: mod, Attr: meta.CreatedAttr(txn, d)})
		}
		switch {
		case txn.Put != nil:
			m.putFileLocked(CloneFile(txn.Put))
		case txn.Delete:
			delete(m.files, txn.Path)
			m.deleteKeyLocked(string(txn.Path))
		case txn.Rmdir:
			delete(m.dirs, txn.Path)
			m.deleteKeyLocked(meta.DirKey(txn.Path))
		case txn.Move != nil && txn.Move.To != txn.Path:
			m.moveLocked(txn.Path, txn.Move.To)
		case txn.SetAttr != nil:
			if f, ok := m.files[txn.Path]; ok {
				g := CloneFile(f)
				g.Attr = *txn.SetAttr
				m.files[txn.Path] = g
			} else {
				d := cloneDir(m.dirs[txn.Path])
				d.Attr = *txn.SetAttr
				m.dirs[txn.Path] = d
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

// moveLocked renames the file or directory p, with everything below it,
// to to; the checks have passed.
func (m *Mem) moveLocked(p, to rpc.Path) {
	if f, ok := m.files[p]; ok {
		delete(m.files, p)
		m.deleteKeyLocked(string(p))
		f.Path = to
		m.putFileLocked(f)
		return
	}
	i, j := m.subtreeLocked(p)
	moved := slices.Clone(m.keys[i:j])
	m.keys = slices.Delete(m.keys, i, j)
	for _, k := range moved {
		isDir := strings.HasSuffix(k, "/")
		old := rpc.Path(strings.TrimSuffix(k, "/"))
		np := to + old[len(p):]
		if isDir {
			d := m.dirs[old]
			delete(m.dirs, old)
			d.Path = np
			m.putDirLocked(d)
		} else {
			f := m.files[old]
			delete(m.files, old)
			f.Path = np
			m.putFileLocked(f)
		}
	}
}

// entryLocked returns the entry of key k.
func (m *Mem) entryLocked(k string) meta.Entry {
	if strings.HasSuffix(k, "/") {
		p := rpc.Path(k[:len(k)-1])
		return meta.Entry{Path: p, IsDir: true, Dir: cloneDir(m.dirs[p])}
	}
	return meta.Entry{Path: rpc.Path(k), File: CloneFile(m.files[rpc.Path(k)])}
}

func (m *Mem) List(ctx context.Context, dir rpc.Path, recursive bool, after string, limit int) ([]meta.Entry, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.readyLocked(); err != nil {
		return nil, err
	}
	if f, ok := m.files[dir]; ok && dir != "/" {
		if after >= string(dir) {
			return nil, nil
		}
		return []meta.Entry{{Path: dir, File: CloneFile(f)}}, nil
	}
	if !m.isDirLocked(dir) {
		return nil, rpc.Errorf(rpc.NotFound, "%s: no such file or directory", dir)
	}
	prefix := meta.DirKey(dir)
	if dir == "/" {
		prefix = "/"
	}
	start := prefix + "\x00" // past the directory's own key
	if after >= start {
		start = meta.ListResume(after, recursive)
	}
	i, _ := slices.BinarySearch(m.keys, start)
	var out []meta.Entry
	for i < len(m.keys) && len(out) < limit {
		k := m.keys[i]
		if !strings.HasPrefix(k, prefix) {
			break
		}
		out = append(out, m.entryLocked(k))
		if !recursive && strings.HasSuffix(k, "/") {
			// Skip everything below this directory.
			i, _ = slices.BinarySearch(m.keys, meta.ListStart(k))
			continue
		}
		i++
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
	files := make([]*meta.File, 0, len(m.files))
	for _, k := range m.keys {
		if f, ok := m.files[rpc.Path(k)]; ok {
			files = append(files, CloneFile(f))
		}
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
	for _, k := range m.keys {
		if e := m.entryLocked(k); e.IsDir {
			recs = append(recs, meta.Record{Dir: e.Dir})
		} else {
			recs = append(recs, meta.Record{File: e.File})
		}
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
