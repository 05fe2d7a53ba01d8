package coordinator

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dfs-project/dfs/rpc"
)

// File is one committed version of a path.
type File struct {
	Path        rpc.Path
	Size        int64
	SHA256      []byte
	ChunkSize   int64
	Replication uint32
	Modified    time.Time
	Version     uint64
	Chunks      []Chunk
}

// Chunk is one chunk of a committed file.
type Chunk struct {
	ID        rpc.ChunkID
	Size      int64
	Digest    []byte
	FrameSize int64
}

// Entry is one row of a directory listing: a file, or a directory implied
// by the paths below it.
type Entry struct {
	Path  rpc.Path
	IsDir bool
	File  *File // nil for directories
}

// Namespace maps paths to committed files. Implementations make every
// change atomic: readers see a file's old version or its new one.
type Namespace interface {
	// Get returns the file at p, or a NotFound error.
	Get(p rpc.Path) (*File, error)
	// Put stores f, replacing and returning any previous version (nil if
	// none). f.Version is set to one more than the previous version's.
	Put(f *File) (old *File, err error)
	// Delete removes the file at p and returns it, or a NotFound error.
	Delete(p rpc.Path) (*File, error)
	// List returns up to limit entries below dir in path order, starting
	// after the path after ("" for the first page). Without recursive it
	// lists one level, folding deeper paths into directory entries.
	List(dir rpc.Path, recursive bool, after string, limit int) ([]Entry, error)
}

// memNamespace keeps the namespace in memory: a map for lookups and a
// sorted slice of paths for listings.
type memNamespace struct {
	mu    sync.RWMutex
	files map[rpc.Path]*File
	paths []rpc.Path // sorted
}

var _ Namespace = (*memNamespace)(nil)

// NewMemNamespace returns an empty in-memory namespace.
func NewMemNamespace() Namespace {
	return &memNamespace{files: make(map[rpc.Path]*File)}
}

func (m *memNamespace) Get(p rpc.Path) (*File, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	f, ok := m.files[p]
	if !ok {
		return nil, rpc.Errorf(rpc.NotFound, "file %s not found", p)
	}
	return f, nil
}

func (m *memNamespace) Put(f *File) (*File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.isDirLocked(f.Path) {
		return nil, rpc.Errorf(rpc.Exists, "%s is a directory", f.Path)
	}
	if err := m.parentIsFileLocked(f.Path); err != nil {
		return nil, err
	}
	old := m.files[f.Path]
	f.Version = 1
	if old != nil {
		f.Version = old.Version + 1
	} else {
		i, _ := slices.BinarySearch(m.paths, f.Path)
		m.paths = slices.Insert(m.paths, i, f.Path)
	}
	m.files[f.Path] = f
	return old, nil
}

// isDirLocked reports whether any file lives below p.
func (m *memNamespace) isDirLocked(p rpc.Path) bool {
	prefix := p + "/"
	i, _ := slices.BinarySearch(m.paths, prefix)
	return i < len(m.paths) && strings.HasPrefix(string(m.paths[i]), string(prefix))
}

// parentIsFileLocked refuses a path below an existing file.
func (m *memNamespace) parentIsFileLocked(p rpc.Path) error {
	for d := p.Dir(); d != "/"; d = d.Dir() {
		if _, ok := m.files[d]; ok {
			return rpc.Errorf(rpc.Exists, "%s: parent %s is a file", p, d)
		}
	}
	return nil
}

func (m *memNamespace) Delete(p rpc.Path) (*File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.files[p]
	if !ok {
		return nil, rpc.Errorf(rpc.NotFound, "file %s not found", p)
	}
	delete(m.files, p)
	if i, found := slices.BinarySearch(m.paths, p); found {
		m.paths = slices.Delete(m.paths, i, i+1)
	}
	return f, nil
}

func (m *memNamespace) List(dir rpc.Path, recursive bool, after string, limit int) ([]Entry, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	prefix := string(dir) + "/"
	if dir == "/" {
		prefix = "/"
	}
	start := prefix
	if after > start {
		start = after + "\x00"
	}
	i, _ := slices.BinarySearch(m.paths, rpc.Path(start))
	var out []Entry
	for ; i < len(m.paths) && len(out) < limit; i++ {
		p := string(m.paths[i])
		if !strings.HasPrefix(p, prefix) {
			break
		}
		rest := p[len(prefix):]
		if j := strings.IndexByte(rest, '/'); j >= 0 && !recursive {
			sub := rpc.Path(prefix + rest[:j])
			if string(sub) > after {
				out = append(out, Entry{Path: sub, IsDir: true})
			}
			// Skip everything below this directory.
			i, _ = slices.BinarySearch(m.paths, sub+"/\xff")
			i--
			continue
		}
		out = append(out, Entry{Path: m.paths[i], File: m.files[m.paths[i]]})
	}
	if len(out) == 0 && dir != "/" {
		if _, ok := m.files[dir]; ok {
			return []Entry{{Path: dir, File: m.files[dir]}}, nil
		}
		if !m.isDirLocked(dir) && after == "" {
			return nil, rpc.Errorf(rpc.NotFound, "%s: no such file or directory", dir)
		}
	}
	return out, nil
}
