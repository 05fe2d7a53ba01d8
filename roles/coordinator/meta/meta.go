// Package meta defines the coordinator's durable metadata: the namespace
// (path -> committed file), open upload sessions, pending chunk deletions
// and the datanodes being drained (decommissioned), and the Store
// interface its backends (bolt, etcd) implement.
// A Store applies each Txn atomically and durably: after Commit returns, the
// change survives a crash of the coordinator at any moment.
package meta

import (
	"context"
	"io"
	"strings"
	"time"
	"unicode/utf8"

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
	// Version is 1 for a path's first commit and increases by one with
	// every later commit of the path; a deleted path starts again at 1.
	Version uint64
	Chunks  []Chunk
	// Session is the upload that committed this version, so a client whose
	// confirm reply was lost can tell that it did commit.
	Session rpc.SessionID
	// Attr is who owns the file and what others may do with it; a
	// version that replaces another keeps the replaced one's.
	Attr Attr
	// Metadata is what the writer stored with this version (a content
	// type, an S3 ETag, user metadata): see CheckMetadata. A new version
	// has its own; a rename or a copy keeps it.
	Metadata map[string]string
}

// MaxMetadata bounds a file's metadata: its keys and values together.
const MaxMetadata = 4 << 10

// CheckMetadata refuses metadata over MaxMetadata bytes, or with an empty
// key, or a key or value that is not UTF-8 or holds a control character
// (tabs aside in values).
func CheckMetadata(md map[string]string) error {
	total := 0
	for k, v := range md {
		total += len(k) + len(v)
		if k == "" {
			return rpc.Errorf(rpc.Invalid, "metadata with an empty key")
		}
		if !printable(k, false) || !printable(v, true) {
			return rpc.Errorf(rpc.Invalid, "metadata %q: keys and values must be UTF-8 without control characters", k)
		}
	}
	if total > MaxMetadata {
		return rpc.Errorf(rpc.Invalid, "metadata of %d bytes: at most %d", total, MaxMetadata)
	}
	return nil
}

// printable reports whether s is UTF-8 without control characters (but a
// tab, if tab).
func printable(s string, tab bool) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if (r < ' ' && !(tab && r == '\t')) || r == 0x7f {
			return false
		}
	}
	return true
}

// Attr is the owner, group and POSIX mode of a file or directory. The
// zero Attr (no owner) is what records written before permissions
// existed hold, and what a change made without a caller's identity
// (--insecure, or in-process) writes: it reads as DefaultAttr (see Or),
// so an upgraded store needs no rewrite.
type Attr struct {
	Owner string
	Group string
	// Mode holds the permission bits (0o777) and the sticky bit
	// (ModeSticky); no other bit.
	Mode uint32
}

// The defaults of a file or directory without an owner, and the modes of
// new ones. They are documented in docs/security.md.
const (
	DefaultOwner    = "admin"
	DefaultGroup    = "admin"
	DefaultFileMode = 0o644
	DefaultDirMode  = 0o755
	// ModeSticky on a directory lets only the owner of an entry (or of
	// the directory, or a superuser) remove or rename the entry.
	ModeSticky = 0o1000
	// ModeMask is every bit Attr.Mode may hold.
	ModeMask = 0o1777
)

// DefaultAttr returns the attributes of a file (dir false) or directory
// without an owner: owner and group DefaultOwner and DefaultGroup, mode
// DefaultFileMode or DefaultDirMode.
func DefaultAttr(dir bool) Attr {
	if dir {
		return Attr{Owner: DefaultOwner, Group: DefaultGroup, Mode: DefaultDirMode}
	}
	return Attr{Owner: DefaultOwner, Group: DefaultGroup, Mode: DefaultFileMode}
}

// Or returns a, or DefaultAttr(dir) when a has no owner.
func (a Attr) Or(dir bool) Attr {
	if a.Owner == "" {
		return DefaultAttr(dir)
	}
	return a
}

// Attr returns the attributes of what e names, DefaultAttr for one
// without an owner (the root has none).
func (e Entry) Attr() Attr {
	switch {
	case e.File != nil:
		return e.File.Attr.Or(false)
	case e.Dir != nil:
		return e.Dir.Attr.Or(true)
	}
	return DefaultAttr(e.IsDir)
}

// Chunk is one chunk of a committed file.
type Chunk struct {
	ID        rpc.ChunkID
	Size      int64
	Digest    []byte
	FrameSize int64
}

// Dir is an explicit directory. Every directory is explicit: a Put
// creates the missing parents of its path, Mkdir creates one, and a
// directory stays when the last file below it goes (as in POSIX and
// HDFS). A store written before directories were explicit is upgraded
// when it opens: the parents of its files are created then (see each
// backend's Open).
type Dir struct {
	Path     rpc.Path
	Modified time.Time
	Attr     Attr
}

// Entry is one row of a directory listing, or what a path names: a file or
// a directory. The root is a directory with a zero Dir.Modified and a
// zero Attr (DefaultAttr: its attributes cannot be changed).
type Entry struct {
	Path  rpc.Path
	IsDir bool
	File  *File // nil for directories
	Dir   *Dir  // nil for files
}

// ListKey is the position of an entry in a listing: its path, with a
// trailing slash for a directory. Directory entries sort by it among files
// ("/a/b.txt" < "/a/b/" < "/a/b0"), so paging by it never repeats or drops
// an entry.
func ListKey(e Entry) string {
	if e.IsDir {
		return string(e.Path) + "/"
	}
	return string(e.Path)
}

// ListStart returns the first key a one-level listing resumes at after
// the key after: past a directory's whole subtree, or just past a file.
func ListStart(after string) string {
	if strings.HasSuffix(after, "/") {
		return after[:len(after)-1] + "0" // '0' follows '/'
	}
	return after + "\x00"
}

// ListResume returns the first key a listing resumes at after the key
// after: ListStart for a one-level listing; for a recursive one, just past
// the key, since what a listed directory holds follows it.
func ListResume(after string, recursive bool) string {
	if recursive {
		return after + "\x00"
	}
	return ListStart(after)
}

// DirKey is the key of the directory p in the backends' sorted key space,
// where files are keyed by their path: p with a trailing slash (the root
// is never stored). So a directory sorts right before what it holds, in
// ListKey order.
func DirKey(p rpc.Path) string { return string(p) + "/" }

// Root is the entry of the root directory, which always exists and is
// never stored.
func Root() Entry {
	return Entry{Path: "/", IsDir: true, Dir: &Dir{Path: "/"}}
}

// Lineage returns the root, each ancestor of p and p itself, from the
// root down: the paths a Walk of p reads.
func Lineage(p rpc.Path) []rpc.Path {
	out := []rpc.Path{"/"}
	for i := 1; i < len(p); i++ {
		if p[i] == '/' {
			out = append(out, p[:i])
		}
	}
	if p != "/" {
		out = append(out, p)
	}
	return out
}

// IsBelow reports whether p lies strictly below the directory dir.
func IsBelow(p, dir rpc.Path) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(string(p), string(dir)+"/")
}

// Upload is an open metadata session: an upload of a new version of Path.
type Upload struct {
	ID          rpc.SessionID
	Path        rpc.Path
	ChunkSize   int64
	Replication uint32
	Created     time.Time
	// Owner is the user who opened the upload ("" without an identity).
	Owner string
	// Chunks lists every chunk placed for the upload, retries included.
	Chunks []Allocation
}

// Allocation is one placement of one chunk of an upload.
type Allocation struct {
	Index   uint32
	Attempt uint32
	ID      rpc.ChunkID
	Nodes   []rpc.NodeID // primary first
}

// Deletion is a chunk to delete from one datanode.
type Deletion struct {
	Node  rpc.NodeID
	Chunk rpc.ChunkID
}

// Txn is one atomic change. When Path is set, the txn first checks that
// the file at Path has version Expect (0: no file at Path) and fails with
// ErrConflict otherwise; then it stores Put (a new version of Path, whose
// Version must be Expect+1, creating the missing parent directories of
// Path with Put.Modified) or, with Delete, removes the file. Instead of
// Put or Delete, a txn may carry one directory change of Path: Mkdir,
// Rmdir or Move (see their fields; Expect is then the version of the file
// Move moves, 0 for a directory; Mkdir and Rmdir need Expect 0 and check
// what Path names instead of its version), or SetAttr. The directories a
// txn creates (a Put's missing parents, a Mkdir's with MkdirParents, a
// Move's) get the attributes Parents. The other
// fields are applied unconditionally, with the file change: a txn that
// fails applies none of them. Within each pair the removal follows the
// addition: a session in both PutUploads and DeleteUploads, a deletion in
// both AddDeletions and DoneDeletions, or a node in both Drain and
// Undrain ends up absent.
type Txn struct {
	Path   rpc.Path
	Expect uint64
	Put    *File
	Delete bool
	// Mkdir creates the directory Path with Mkdir.Modified. It fails with
	// rpc.Exists when Path is a file or a directory (unless MkdirParents:
	// an existing directory, the root included, then changes nothing and
	// the txn's other fields still apply) or an ancestor is a file, and
	// with rpc.NotFound when the parent is missing (unless MkdirParents,
	// which creates the missing ancestors with Mkdir.Modified).
	Mkdir        *Dir
	MkdirParents bool
	// Rmdir removes the directory Path: rpc.NotFound when there is none
	// (or Path is a file: rpc.Invalid), ErrNotEmpty when anything is below
	// it, rpc.Invalid for the root.
	Rmdir bool
	// Move renames what Path names (see Move) in the same commit.
	Move *Move
	// SetAttr replaces the attributes of the file or directory Path (its
	// version and time stay): rpc.NotFound when there is neither,
	// rpc.Invalid for the root, whose attributes are fixed. Expect must
	// be 0.
	SetAttr *Attr
	// Parents are the attributes of the directories the txn creates.
	Parents Attr

	PutUploads    []*Upload
	DeleteUploads []rpc.SessionID
	AddDeletions  []Deletion
	DoneDeletions []Deletion
	// Drain marks datanodes as draining (being decommissioned), Undrain
	// clears the mark. Both are set operations: draining a draining node
	// or undraining one that is not draining changes nothing.
	Drain   []rpc.NodeID
	Undrain []rpc.NodeID
}

// Move renames the file or directory at a txn's Path to To, with
// everything below a directory, in one atomic commit; a moved file keeps
// its version, chunks and session. The missing parents of To are created
// (with Modified). The txn's Expect is the version of the file at Path (0
// when Path is a directory; a mismatch is ErrConflict, a missing Path
// rpc.NotFound). Replace is the version of the file at To that the move
// replaces: 0 when To must not exist (rpc.Exists otherwise; ErrConflict
// when To is a file at another version). A directory is never replaced,
// nor moves over a file; moving a directory into itself or below itself
// is rpc.Invalid, and so is moving the root or onto the root. Moving a
// path onto itself changes nothing and succeeds (after the checks of
// Path: it must exist, at version Expect; Replace is not checked). The
// caller adds the replaced file's chunks to AddDeletions. Moved
// directories keep their Modified; only the created parents of To get
// Move.Modified. A backend may bound how many entries one move of a
// directory rewrites (rpc.ResourceExhausted beyond it; see its docs).
type Move struct {
	To       rpc.Path
	Replace  uint64
	Modified time.Time
}

// CheckMoveSource runs the checks every backend makes of a Move's source:
// cur is the version of the file at txn.Path (0: none) and dir whether
// txn.Path is a directory. same reports a move onto itself, which changes
// nothing.
func CheckMoveSource(txn *Txn, cur uint64, dir bool) (same bool, err error) {
	p := txn.Path
	switch {
	case cur == 0 && !dir:
		return false, rpc.Errorf(rpc.NotFound, "move %s: no such file or directory", p)
	case cur != txn.Expect:
		return false, Conflict(p, cur, txn.Expect)
	}
	return p == txn.Move.To, nil
}

// CheckMoveTarget runs the checks every backend makes of a Move's
// destination: dir is whether the source is a directory, dst the version
// of the file at txn.Move.To (0: none) and toDir whether To is a
// directory.
func CheckMoveTarget(txn *Txn, dir bool, dst uint64, toDir bool) error {
	p, to := txn.Path, txn.Move.To
	switch {
	case toDir:
		return rpc.Errorf(rpc.Exists, "move %s: %s is a directory", p, to)
	case dst != 0 && dir:
		return rpc.Errorf(rpc.Exists, "move %s: %s is a file, and a directory does not replace one", p, to)
	case dst != 0 && txn.Move.Replace == 0:
		return rpc.Errorf(rpc.Exists, "move %s: %s exists", p, to)
	case dst != txn.Move.Replace:
		return Conflict(to, dst, txn.Move.Replace)
	}
	return nil
}

// ErrNotEmpty is the cause of the error a Rmdir of a directory with
// anything below it returns: errors.Is(err, ErrNotEmpty).
var ErrNotEmpty error = &rpc.Error{Kind: rpc.NotEmpty, Msg: "directory not empty"}

// ErrConflict is the cause of the error Commit returns when Txn.Expect
// does not match: another commit changed the path first, and the caller
// re-reads and tries again. errors.Is(err, ErrConflict) holds for a real
// conflict only; its kind is rpc.FailedPrecondition, as for other refusals
// (a closed or uninitialized store) that a retry will not cure.
var ErrConflict error = &rpc.Error{Kind: rpc.FailedPrecondition, Msg: "version conflict"}

// Conflict returns the error for a commit to path that expected version
// expect and found cur.
func Conflict(path rpc.Path, cur, expect uint64) error {
	return rpc.Errorf(rpc.Other, "file %s is at version %d, expected %d (%w)", path, cur, expect, ErrConflict)
}

// Namespace reads committed files.
type Namespace interface {
	// Get returns the file at p, or an error of kind rpc.NotFound.
	Get(ctx context.Context, p rpc.Path) (*File, error)
	// Lookup returns what p names, a file or a directory (the root is
	// one), or an error of kind rpc.NotFound.
	Lookup(ctx context.Context, p rpc.Path) (Entry, error)
	// Walk returns what the root, each ancestor of p and p itself name,
	// from the root down, in one read (etcd: one transaction per
	// MaxTxnOps/2 levels, 64 by default). It stops after the first that is a file and before the
	// first that is missing: the last entry is p when p exists; an answer
	// ending in a directory above p means the path after it is missing,
	// one ending in a file other than p that p lies below a file.
	Walk(ctx context.Context, p rpc.Path) ([]Entry, error)
	// List returns up to limit entries below dir in key order, starting
	// after the key after ("" for the first page; then ListKey of the last
	// entry returned). Without recursive it lists one level: the files and
	// directories directly below dir. With recursive it lists every file
	// and directory below dir, each directory before what it holds. A dir
	// that names a file lists that file; a dir that is neither a file nor
	// a directory is rpc.NotFound (the root is always a directory).
	List(ctx context.Context, dir rpc.Path, recursive bool, after string, limit int) ([]Entry, error)
}

// Committer applies transactions.
type Committer interface {
	// Commit applies txn atomically and durably. A Put of a path that is a
	// directory, or below an existing file, fails with rpc.Exists;
	// a Delete of a missing file with rpc.NotFound; a version mismatch with
	// ErrConflict. Nothing of a failed txn is applied. Concurrent commits
	// may share one fsync.
	Commit(ctx context.Context, txn *Txn) error
}

// Loader reads the state a coordinator needs at start-up.
type Loader interface {
	// Uploads returns every open upload session.
	Uploads(ctx context.Context) ([]*Upload, error)
	// Deletions returns every pending deletion.
	Deletions(ctx context.Context) ([]Deletion, error)
	// Files calls fn for every committed file in path order (directories
	// are not files); an error from fn stops the walk and is returned.
	Files(ctx context.Context, fn func(*File) error) error
	// Drains returns every draining datanode, sorted by ID.
	Drains(ctx context.Context) ([]rpc.NodeID, error)
}

// FileChunks is what the coordinator's chunk index needs of a committed
// file: its replication and its chunks.
type FileChunks struct {
	Replication uint32
	Chunks      []Chunk

	digests []byte // the chunks' digests, reused by DecodeFileChunks
}

// ChunkLoader is a Loader that can walk the committed files' chunks alone,
// which a new term does before it can leave safe mode: faster than Files,
// since it decodes only what the chunk index needs and allocates little.
// It is optional: a backend without it is walked with Files.
type ChunkLoader interface {
	// FileChunks calls fn for every committed file in path order, as
	// Files does, with its replication and chunks. fn's argument and the
	// slices it holds are reused once fn returns: fn copies what it keeps
	// (chunk IDs are strings, kept as they are). The fields are checked
	// as Files checks them (a damaged record is an error of kind
	// rpc.Internal); the file's other fields are not read. An error from
	// fn stops the walk and is returned; so is ctx's error when it ends.
	FileChunks(ctx context.Context, fn func(*FileChunks) error) error
}

// FileCounter is a Loader that can count the committed files quickly (in
// a small fraction of the time a walk takes), so that a term loading them
// can say how far it is. It is optional.
type FileCounter interface {
	// CountFiles returns how many files are committed. It may count the
	// directories too (an upper bound, close when directories are few
	// beside files): it only says how far a load is.
	CountFiles(ctx context.Context) (int, error)
}

// Snapshotter reads a consistent copy of the whole store, for backups.
type Snapshotter interface {
	// Snapshot calls fn with every record of one consistent view of the
	// store: files and directories (in ListKey order, so a directory comes
	// before what it holds), uploads, deletions and drains. fn must not
	// call the store.
	Snapshot(ctx context.Context, fn func(Record) error) error
}

// Record is one item of a snapshot: exactly one field is set.
type Record struct {
	File     *File
	Dir      *Dir
	Upload   *Upload
	Deletion *Deletion
	Drain    *rpc.NodeID // a draining datanode
}

// Initializer gives a new store its identity and, for a restore, its
// contents.
type Initializer interface {
	// ClusterID returns the ID of the cluster this store belongs to, or ""
	// for a store that was never initialized.
	ClusterID() string
	// Init makes an empty, uninitialized store the store of cluster id and
	// loads recs into it (a restore; nil for a new cluster). The missing
	// parent directories of a file or directory record are created with
	// its Modified time (a backup from before directories were explicit
	// holds none), unless a later record names them. It fails with
	// rpc.Exists when the store is already initialized, leaving it as it
	// was; ClusterID then returns the existing ID (another coordinator
	// sharing the store may have initialized it first). When Init fails part-way, the store stays uninitialized and
	// refuses to be used until it is emptied (a backend that cannot load
	// recs atomically marks the store as being restored first).
	Init(ctx context.Context, id string, recs []Record) error
}

// StreamIniter is an Initializer that can also load a restore's records
// as they are read, without holding them all (a restore of a backup too
// large to hold in memory twice).
type StreamIniter interface {
	// InitEach is Init with the records given by each, which calls its
	// argument with every record in turn and returns the first error
	// (its argument's or its own); an error leaves the store as Init's
	// does.
	InitEach(ctx context.Context, id string, each func(put func(Record) error) error) error
}

// PageReleaser is a store whose reads map its file into the process (bolt):
// ReleasePages drops those pages from the process's resident set after a
// pass over the whole store, the kernel's page cache keeping them.
type PageReleaser interface {
	ReleasePages() error
}

// Store is everything a coordinator needs from its metadata backend.
type Store interface {
	Namespace
	Committer
	Loader
	Snapshotter
	Initializer
	io.Closer
}

// CheckTxn validates the shape of a txn before any backend applies it.
func CheckTxn(txn *Txn) error {
	changes := 0
	for _, set := range []bool{txn.Put != nil, txn.Delete, txn.Mkdir != nil, txn.Rmdir, txn.Move != nil, txn.SetAttr != nil} {
		if set {
			changes++
		}
	}
	switch {
	case txn.Path == "" && changes > 0:
		return rpc.Errorf(rpc.Invalid, "txn changes a file but names no path")
	case txn.Put != nil && txn.Delete:
		return rpc.Errorf(rpc.Invalid, "txn both puts and deletes %s", txn.Path)
	case changes > 1:
		return rpc.Errorf(rpc.Invalid, "txn makes more than one change of %s (put, delete, mkdir, rmdir, move, setattr)", txn.Path)
	case txn.MkdirParents && txn.Mkdir == nil:
		return rpc.Errorf(rpc.Invalid, "txn asks for the parents of a mkdir of %s but makes none", txn.Path)
	}
	if txn.Path != "" && txn.Path != "/" {
		if _, err := rpc.ParsePath(string(txn.Path)); err != nil {
			return rpc.Errorf(rpc.Invalid, "txn names a malformed path: %w", err)
		}
	}
	switch {
	case txn.Path == "/" && (txn.Put != nil || txn.Delete):
		return rpc.Errorf(rpc.Invalid, "the root / is a directory, not a file")
	case txn.Path == "/" && txn.Rmdir:
		return rpc.Errorf(rpc.Invalid, "the root / cannot be removed")
	case txn.Path == "/" && txn.Move != nil:
		return rpc.Errorf(rpc.Invalid, "the root / cannot be moved")
	case txn.Path == "/" && txn.SetAttr != nil:
		return rpc.Errorf(rpc.Invalid, "the attributes of the root / cannot be changed (owner %s, group %s, mode %o)", DefaultOwner, DefaultGroup, DefaultDirMode)
	case (txn.Mkdir != nil || txn.Rmdir) && txn.Expect != 0:
		return rpc.Errorf(rpc.Invalid, "txn expects version %d of %s but makes or removes a directory", txn.Expect, txn.Path)
	case txn.SetAttr != nil && txn.Expect != 0:
		return rpc.Errorf(rpc.Invalid, "txn expects version %d of %s but sets attributes", txn.Expect, txn.Path)
	case txn.Mkdir != nil && txn.Mkdir.Path != txn.Path:
		return rpc.Errorf(rpc.Invalid, "txn for %s makes the directory %s", txn.Path, txn.Mkdir.Path)
	case txn.Mkdir != nil && txn.Mkdir.Modified.IsZero():
		return rpc.Errorf(rpc.Invalid, "txn makes the directory %s without a modification time", txn.Path)
	case txn.Move != nil && txn.Move.Modified.IsZero():
		return rpc.Errorf(rpc.Invalid, "txn moves %s without a modification time", txn.Path)
	case txn.Move != nil && txn.Move.To == "/":
		return rpc.Errorf(rpc.Invalid, "cannot move %s onto the root /", txn.Path)
	}
	if m := txn.Move; m != nil {
		if _, err := rpc.ParsePath(string(m.To)); err != nil {
			return rpc.Errorf(rpc.Invalid, "txn moves %s to a malformed path: %w", txn.Path, err)
		}
		if IsBelow(m.To, txn.Path) {
			return rpc.Errorf(rpc.Invalid, "cannot move %s into itself (%s)", txn.Path, m.To)
		}
	}
	switch {
	case txn.Put != nil && txn.Put.Path != txn.Path:
		return rpc.Errorf(rpc.Invalid, "txn for %s puts %s", txn.Path, txn.Put.Path)
	case txn.Put != nil && txn.Put.Version != txn.Expect+1:
		return rpc.Errorf(rpc.Invalid, "txn puts version %d of %s over version %d", txn.Put.Version, txn.Path, txn.Expect)
	case txn.Put != nil && txn.Put.Modified.IsZero():
		return rpc.Errorf(rpc.Invalid, "txn puts %s without a modification time", txn.Path)
	}
	for _, a := range []*Attr{txn.SetAttr, &txn.Parents, attrOf(txn.Put), attrOfDir(txn.Mkdir)} {
		if err := CheckAttr(a); err != nil {
			return rpc.Errorf(rpc.Invalid, "txn for %s: %w", txn.Path, err)
		}
	}
	// Nothing is stored that would not decode again.
	if txn.Put != nil {
		if _, err := FileFromPB(FileToPB(txn.Put)); err != nil {
			return rpc.Errorf(rpc.Invalid, "txn puts a malformed file: %w", err)
		}
	}
	for _, u := range txn.PutUploads {
		if _, err := UploadFromPB(UploadToPB(u)); err != nil {
			return rpc.Errorf(rpc.Invalid, "txn puts a malformed upload: %w", err)
		}
	}
	for _, list := range [][]Deletion{txn.AddDeletions, txn.DoneDeletions} {
		for _, d := range list {
			if _, err := ParseDeletionKey(DeletionKey(d)); err != nil {
				return rpc.Errorf(rpc.Invalid, "txn names a malformed deletion: %w", err)
			}
		}
	}
	for _, list := range [][]rpc.NodeID{txn.Drain, txn.Undrain} {
		for _, n := range list {
			if _, err := rpc.ParseNodeID(string(n)); err != nil {
				return rpc.Errorf(rpc.Invalid, "txn names a malformed node: %w", err)
			}
		}
	}
	return nil
}

// CreatedAttr returns the attributes of the directory d that txn creates:
// the Mkdir's own for its path, Parents for the others; a nil txn (an
// upgrade or a restore creating missing parents) gives the zero Attr.
func CreatedAttr(txn *Txn, d rpc.Path) Attr {
	if txn == nil {
		return Attr{}
	}
	if txn.Mkdir != nil && d == txn.Path {
		return txn.Mkdir.Attr
	}
	return txn.Parents
}

func attrOf(f *File) *Attr {
	if f == nil {
		return nil
	}
	return &f.Attr
}

func attrOfDir(d *Dir) *Attr {
	if d == nil {
		return nil
	}
	return &d.Attr
}

// maxNameLen bounds an owner's or group's name.
const maxNameLen = 256

// CheckAttr refuses attributes that are not stored: a mode with bits
// beyond ModeMask, an owner or group name that is too long or holds a
// control character, ':' or '/', or a group without an owner. A nil a
// passes.
func CheckAttr(a *Attr) error {
	if a == nil {
		return nil
	}
	if a.Mode&^ModeMask != 0 {
		return rpc.Errorf(rpc.Invalid, "mode %o has bits beyond %o", a.Mode, ModeMask)
	}
	if a.Owner == "" && (a.Group != "" || a.Mode != 0) {
		return rpc.Errorf(rpc.Invalid, "attributes without an owner have a group %q or a mode %o", a.Group, a.Mode)
	}
	for _, n := range []string{a.Owner, a.Group} {
		if err := CheckName(n); err != nil {
			return err
		}
	}
	return nil
}

// CheckName refuses a user or group name that is too long or holds a
// control character, a space, ':' or '/'; "" passes.
func CheckName(n string) error {
	if len(n) > maxNameLen {
		return rpc.Errorf(rpc.Invalid, "name of %d bytes, at most %d", len(n), maxNameLen)
	}
	for _, r := range n {
		if r < ' ' || r == 0x7f || r == ' ' || r == ':' || r == '/' {
			return rpc.Errorf(rpc.Invalid, "name %q holds %q", n, r)
		}
	}
	return nil
}
