// Package mount serves a dfs cluster as a local directory through FUSE,
// written on the SDK (roles/client) alone.
//
// The consistency model is close-to-open, as NFS's: a file's new content
// is committed to dfs, atomically, when the last write to it is flushed
// (close, fsync); an open for reading sees the version committed at the
// time of its first read. Attributes and names are cached by the kernel
// for Config.AttrTimeout and Config.EntryTimeout. docs/fuse.md says what
// each system call does.
package mount

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// Config is a mount's configuration.
type Config struct {
	// Mountpoint is the directory the cluster appears at.
	Mountpoint string
	// ReadOnly refuses every change with EROFS.
	ReadOnly bool
	// AttrTimeout and EntryTimeout are how long the kernel may trust
	// attributes and names it was given; NegativeTimeout how long it
	// may trust that a name does not exist.
	AttrTimeout, EntryTimeout, NegativeTimeout time.Duration
	// SpoolDir holds the local copies of files written other than
	// sequentially from their start; "" is os.TempDir().
	SpoolDir string
	// ReadAhead is the most bytes one open file reads ahead of a
	// sequential reader.
	ReadAhead int64
	// AllowOther lets users other than the mounting one use the mount
	// (needs user_allow_other in /etc/fuse.conf for a non-root user).
	AllowOther bool
	// Debug logs every FUSE request.
	Debug bool
}

// DefaultConfig returns the defaults (the mount point aside).
func DefaultConfig() Config {
	return Config{
		AttrTimeout:     time.Second,
		EntryTimeout:    time.Second,
		NegativeTimeout: time.Second,
		ReadAhead:       32 << 20,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Mountpoint == "" {
		return rpc.Errorf(rpc.Invalid, "mount: no mount point")
	}
	if c.AttrTimeout < 0 || c.EntryTimeout < 0 || c.NegativeTimeout < 0 {
		return rpc.Errorf(rpc.Invalid, "mount: negative cache timeout")
	}
	if c.ReadAhead < 0 || c.ReadAhead > 1<<30 {
		return rpc.Errorf(rpc.Invalid, "mount: read-ahead %d outside 0..1GiB", c.ReadAhead)
	}
	return nil
}

// Mount is a dfs cluster served at a directory.
type Mount struct {
	cfg Config
	c   *client.Client
	log zerolog.Logger

	// ctx bounds the uploads the mount opens: they outlive the FUSE
	// request that started them, never the mount.
	ctx context.Context

	uid, gid uint32

	idMu   sync.Mutex
	uids   map[string]uint32
	gids   map[string]uint32
	unames map[uint32]string
	gnames map[uint32]string
}

// New returns a mount of the cluster c talks to; it mounts nothing until
// Run. The caller keeps c and closes it after Run returns.
func New(cfg Config, c *client.Client, log zerolog.Logger) (*Mount, error) {
	def := DefaultConfig()
	if cfg.ReadAhead == 0 {
		cfg.ReadAhead = def.ReadAhead
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if c == nil {
		return nil, rpc.Errorf(rpc.Invalid, "mount: no client")
	}
	return &Mount{
		cfg: cfg, c: c, log: log.With().Str("role", "mount").Str("mountpoint", cfg.Mountpoint).Logger(),
		uid: uint32(os.Getuid()), gid: uint32(os.Getgid()),
		uids: map[string]uint32{}, gids: map[string]uint32{},
		unames: map[uint32]string{}, gnames: map[uint32]string{},
	}, nil
}

// Available says why FUSE cannot be used on this machine, or nil.
func Available() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("no /dev/fuse: %w", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		if _, err2 := exec.LookPath("fusermount"); err2 != nil {
			return fmt.Errorf("neither fusermount3 nor fusermount found (install fuse3)")
		}
	}
	return nil
}

// Run mounts the cluster, calls ready (when not nil) once the mount
// answers, and serves it until ctx ends, then unmounts it, or until it
// is unmounted from outside (fusermount3 -u). It returns nil on a clean
// stop.
func (m *Mount) Run(ctx context.Context, ready func()) error {
	if fi, err := os.Stat(m.cfg.Mountpoint); err != nil {
		return fmt.Errorf("mount %s: %w", m.cfg.Mountpoint, err)
	} else if !fi.IsDir() {
		return rpc.Errorf(rpc.Invalid, "mount %s: not a directory", m.cfg.Mountpoint)
	}
	// Ask the cluster once before mounting, so a wrong address fails
	// here with its reason rather than as EIO on every call.
	for _, err := range m.c.List(ctx, "/", nil) {
		if err != nil {
			return fmt.Errorf("mount %s: %w", m.cfg.Mountpoint, err)
		}
		break
	}
	// The uploads' context outlives ctx: a stop unmounts first, and the
	// commits in flight (and those of files closed while the mount is
	// detached lazily) finish; it ends when Run returns.
	uctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	m.ctx = uctx

	root := &dirNode{m: m}
	// The root is always admin's, mode 0755 (docs/security.md), and
	// dfs gives it no attributes of its own.
	root.a = attrs{mode: 0o755, mtime: time.Now().Truncate(time.Second), owner: "admin", group: "admin"}
	root.fetched = time.Now().Add(100 * 365 * 24 * time.Hour)
	et, nt := m.cfg.EntryTimeout, m.cfg.NegativeTimeout
	// No AttrTimeout here: every reply sets its own (see attrTimeout),
	// and go-fuse would take a zero one for "unset".
	opts := &gofs.Options{
		EntryTimeout:    &et,
		NegativeTimeout: &nt,
		UID:             m.uid,
		GID:             m.gid,
		MountOptions:    mountOptions(m.cfg),
	}
	srv, err := gofs.Mount(m.cfg.Mountpoint, root, opts)
	if err != nil {
		return fmt.Errorf("mount %s: %w", m.cfg.Mountpoint, err)
	}
	m.log.Info().Bool("read_only", m.cfg.ReadOnly).Msg("mounted")
	if ready != nil {
		ready()
	}
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()
	select {
	case <-done:
		m.log.Info().Msg("unmounted from outside")
		return nil
	case <-ctx.Done():
	}
	// Unmount; a busy mount (a process has its cwd there) is detached
	// lazily, so the process never hangs on its way out.
	if err := srv.Unmount(); err != nil {
		m.log.Warn().Err(err).Msg("unmount failed; detaching lazily")
		if out, lerr := exec.Command(fusermount(), "-u", "-z", m.cfg.Mountpoint).CombinedOutput(); lerr != nil {
			m.log.Error().Err(lerr).Str("output", string(out)).Msg("lazy unmount failed")
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("mount %s: the kernel did not end the mount", m.cfg.Mountpoint)
	}
	m.log.Info().Msg("unmounted")
	return nil
}

// mountOptions are the FUSE mount options of cfg. A mount other users
// may use (allow_other) has the kernel check their permissions against
// the attributes it shows (default_permissions): else every local user
// would act as the mount's dfs user.
func mountOptions(cfg Config) fuse.MountOptions {
	o := fuse.MountOptions{
		FsName:        "dfs",
		Name:          "dfs",
		MaxWrite:      1 << 20,
		MaxReadAhead:  1 << 20,
		EnableLocks:   true, // so that locks reach Getlk/Setlk and are refused, not faked locally
		AllowOther:    cfg.AllowOther,
		Debug:         cfg.Debug,
		MaxBackground: 64,
		DisableXAttrs: true, // the kernel answers ENOTSUP without asking
	}
	if cfg.ReadOnly {
		o.Options = append(o.Options, "ro")
	}
	if cfg.AllowOther {
		o.Options = append(o.Options, "default_permissions")
	}
	return o
}

func fusermount() string {
	if p, err := exec.LookPath("fusermount3"); err == nil {
		return p
	}
	return "fusermount"
}

// attrTimeout is how long the kernel may keep attributes: the configured
// timeout, or none for a file being written (its commit changes them).
func (m *Mount) attrTimeout(local bool) time.Duration {
	if local {
		return 0
	}
	return m.cfg.AttrTimeout
}

// errno maps an SDK error to the errno an application sees; an error of
// no known kind is EIO and is logged with its request ID (the SDK's
// errors name it).
func (m *Mount) errno(op, path string, err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, fs.ErrExist):
		return syscall.EEXIST
	case errors.Is(err, fs.ErrPermission):
		return syscall.EACCES
	case rpc.KindOf(err) == rpc.NotEmpty:
		return syscall.ENOTEMPTY
	case rpc.KindOf(err) == rpc.ResourceExhausted:
		// The cluster is busy (uploads, connections): try again later.
		m.log.Warn().Err(err).Str("op", op).Str("path", path).Msg("refused for now")
		return syscall.EAGAIN
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, fs.ErrInvalid):
		m.log.Warn().Err(err).Str("op", op).Str("path", path).Msg("refused as invalid")
		return syscall.EINVAL
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	m.log.Error().Err(err).Str("op", op).Str("path", path).Msg("dfs call failed")
	return syscall.EIO
}

// attrs are what the mount knows of a file or directory.
type attrs struct {
	size         int64
	mode         fs.FileMode // permission bits and fs.ModeSticky
	mtime        time.Time
	owner, group string
	version      uint64
}

func fromInfo(fi *client.FileInfo) attrs {
	return attrs{size: fi.Size, mode: fi.Mode & (fs.ModePerm | fs.ModeSticky), mtime: fi.Modified,
		owner: fi.Owner, group: fi.Group, version: fi.Version}
}

func fromEntry(e client.DirEntry) attrs {
	return attrs{size: e.Size, mode: e.Mode & (fs.ModePerm | fs.ModeSticky), mtime: e.Modified,
		owner: e.Owner, group: e.Group}
}

// fill writes a into out.
func (m *Mount) fill(out *fuse.Attr, a attrs, dir bool, nlink uint32) {
	mode := uint32(a.mode.Perm())
	if a.mode&fs.ModeSticky != 0 {
		mode |= syscall.S_ISVTX
	}
	if dir {
		mode |= syscall.S_IFDIR
		if a.mode.Perm() == 0 && a.owner == "" {
			mode |= 0o755
		}
	} else {
		mode |= syscall.S_IFREG
		out.Size = uint64(a.size)
	}
	out.Mode = mode
	out.Nlink = nlink
	sec, nsec := uint64(a.mtime.Unix()), uint32(a.mtime.Nanosecond())
	if a.mtime.IsZero() {
		sec, nsec = 0, 0
	}
	out.Mtime, out.Mtimensec = sec, nsec
	out.Atime, out.Atimensec = sec, nsec
	out.Ctime, out.Ctimensec = sec, nsec
	out.Uid = m.uidOf(a.owner)
	out.Gid = m.gidOf(a.group)
	out.Blksize = 1 << 20
}

// uidOf maps a dfs user to a local uid: the local user of that name, the
// number a numeric name holds, else the mounting user.
func (m *Mount) uidOf(name string) uint32 {
	if name == "" {
		return m.uid
	}
	m.idMu.Lock()
	defer m.idMu.Unlock()
	if id, ok := m.uids[name]; ok {
		return id
	}
	id := m.uid
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		id = uint32(n)
	} else if u, err := user.Lookup(name); err == nil {
		if n, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			id = uint32(n)
		}
	}
	if len(m.uids) < 4096 {
		m.uids[name] = id
	}
	return id
}

// gidOf is uidOf for groups.
func (m *Mount) gidOf(name string) uint32 {
	if name == "" {
		return m.gid
	}
	m.idMu.Lock()
	defer m.idMu.Unlock()
	if id, ok := m.gids[name]; ok {
		return id
	}
	id := m.gid
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		id = uint32(n)
	} else if g, err := user.LookupGroup(name); err == nil {
		if n, err := strconv.ParseUint(g.Gid, 10, 32); err == nil {
			id = uint32(n)
		}
	}
	if len(m.gids) < 4096 {
		m.gids[name] = id
	}
	return id
}

// userName maps a local uid to a dfs user: the local user's name, else
// the number.
func (m *Mount) userName(uid uint32) string {
	m.idMu.Lock()
	defer m.idMu.Unlock()
	if n, ok := m.unames[uid]; ok {
		return n
	}
	name := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	if len(m.unames) < 4096 {
		m.unames[uid] = name
	}
	return name
}

// groupName is userName for groups.
func (m *Mount) groupName(gid uint32) string {
	m.idMu.Lock()
	defer m.idMu.Unlock()
	if n, ok := m.gnames[gid]; ok {
		return n
	}
	name := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(name); err == nil {
		name = g.Name
	}
	if len(m.gnames) < 4096 {
		m.gnames[gid] = name
	}
	return name
}

// pathOf returns the dfs path of a node, false when it is no longer in
// the tree (unlinked, or replaced by a rename).
func pathOf(in *gofs.Inode) (string, bool) {
	if in.IsRoot() {
		return "/", true
	}
	var segs []string
	for p := in; !p.IsRoot(); {
		name, parent := p.Parent()
		if parent == nil {
			return "", false
		}
		segs = append(segs, name)
		p = parent
	}
	n := 0
	for _, s := range segs {
		n += len(s) + 1
	}
	b := make([]byte, 0, n)
	for i := len(segs) - 1; i >= 0; i-- {
		b = append(b, '/')
		b = append(b, segs[i]...)
	}
	return string(b), true
}

func join(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// toFileMode converts a mode from a system call to the bits dfs keeps.
func toFileMode(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	if mode&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}
