package s3gw

import (
	"context"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/versity/versitygw/s3err"
	"github.com/versity/versitygw/s3response"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// defaultMaxKeys is S3's page of a listing.
const defaultMaxKeys = 1000

// errListDone ends a listing early: the page is full, or the keys passed
// the prefix.
var errListDone = errors.New("listing done")

// lister lists a bucket in S3's order (keys by their bytes) with bounded
// memory. A dfs listing is ordered the same way once a directory sorts as
// its path with a trailing slash, so a depth-first walk of one-level
// listings, each read a page at a time, yields the keys in S3 order: it
// holds one page per directory level, and the result (at most max-keys).
// It descends only into directories that can hold keys after the marker
// under the prefix, and not at all into one that rolls up into a common
// prefix (delimiter "/"). A directory lists as a key ("dir/") only when
// empty: an explicit directory marker; one that holds keys is only a
// prefix.
type lister struct {
	b                     *Backend
	ctx                   context.Context
	bp                    string // the bucket's directory
	prefix, delim, marker string
	max                   int

	contents  []s3response.Object
	prefixes  []types.CommonPrefix
	lastCP    string
	last      string // the last key or common prefix returned
	truncated bool
}

func (l *lister) count() int { return len(l.contents) + len(l.prefixes) }

// run lists from the deepest directory the prefix names.
func (l *lister) run() error {
	if l.max <= 0 {
		return nil
	}
	start := l.bp
	if i := strings.LastIndexByte(l.prefix, '/'); i >= 0 {
		p, _, err := objectPath(strings.TrimPrefix(l.bp, "/"), l.prefix[:i+1])
		if err != nil {
			return nil // no key maps below such a prefix
		}
		start = p
	}
	_, err := l.walk(start)
	if errors.Is(err, errListDone) || rpc.KindOf(err) == rpc.NotFound {
		return nil
	}
	return err
}

// walk lists dir and, depth first, what is below it; it returns how many
// entries dir holds (as far as it read). The listing of a directory the
// marker lies in starts at the marker's entry (ListOptions.After), so a
// page of a long listing does not read the keys before it again.
func (l *lister) walk(dir string) (int, error) {
	entries := 0
	opts := &client.ListOptions{Metadata: true, After: l.after(dir)}
	for e, err := range l.b.c.List(l.ctx, dir, opts) {
		if err != nil {
			if rpc.KindOf(err) == rpc.NotFound && dir != l.bp {
				return entries, nil // removed meanwhile
			}
			return entries, err
		}
		if e.Path == dir {
			continue // a file lists itself
		}
		entries++
		k := keyOf(l.bp, e.Path, e.IsDir)
		if !strings.HasPrefix(k, l.prefix) {
			switch {
			case e.IsDir && strings.HasPrefix(l.prefix, k):
				if _, err := l.walk(e.Path); err != nil {
					return entries, err
				}
			case k > l.prefix:
				return entries, errListDone // past every key with the prefix
			}
			continue
		}
		if l.delim != "" {
			if i := strings.Index(k[len(l.prefix):], l.delim); i >= 0 {
				cp := k[:len(l.prefix)+i+len(l.delim)]
				if cp == l.lastCP {
					continue
				}
				l.lastCP = cp
				if cp <= l.marker || strings.HasPrefix(l.marker, cp) {
					continue
				}
				if err := l.add(cp, nil); err != nil {
					return entries, err
				}
				continue
			}
		}
		if e.IsDir {
			if k < l.marker && !strings.HasPrefix(l.marker, k) {
				continue // all of it comes before the marker
			}
			n, err := l.walk(e.Path)
			if err != nil {
				return entries, err
			}
			if n == 0 && k > l.marker {
				if err := l.add(k, &e); err != nil {
					return entries, err
				}
			}
			continue
		}
		if k <= l.marker {
			continue
		}
		if err := l.add(k, &e); err != nil {
			return entries, err
		}
	}
	return entries, nil
}

// after returns where the listing of dir may start: just before the
// entry of dir on the way to the marker (the file of that name, which
// sorts before the directory), or "" to list dir from its start.
func (l *lister) after(dir string) string {
	dk := ""
	if dir != l.bp {
		dk = keyOf(l.bp, dir, true)
	}
	rest, ok := strings.CutPrefix(l.marker, dk)
	if !ok || rest == "" {
		return ""
	}
	seg, _, _ := strings.Cut(rest, "/")
	if !validSegment(seg) {
		return ""
	}
	return dir + "/" + seg
}

// validSegment tells a name dfs can hold.
func validSegment(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > rpc.MaxSegmentLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// add adds a key (e set) or a common prefix to the result, or ends the
// listing when it is full.
func (l *lister) add(k string, e *client.DirEntry) error {
	if l.count() == l.max {
		l.truncated = true
		return errListDone
	}
	l.last = k
	if e == nil {
		l.prefixes = append(l.prefixes, types.CommonPrefix{Prefix: ptr(k)})
		return nil
	}
	size, mod := e.Size, e.Modified
	tag := `"` + emptyMD5 + `"`
	if !e.IsDir {
		tag = etag(e.Metadata, e.Modified, e.Size)
	}
	obj := s3response.Object{Key: ptr(k), ETag: &tag, Size: &size, LastModified: &mod, StorageClass: types.ObjectStorageClassStandard}
	for key := range e.Metadata {
		if algo, ok := strings.CutPrefix(key, metaChecksum); ok {
			obj.ChecksumAlgorithm = append(obj.ChecksumAlgorithm, types.ChecksumAlgorithm(strings.ToUpper(algo)))
			obj.ChecksumType = types.ChecksumTypeFullObject
		}
	}
	if e.Owner != "" {
		obj.Owner = &types.Owner{ID: ptr(e.Owner), DisplayName: ptr(e.Owner)}
	}
	l.contents = append(l.contents, obj)
	return nil
}

func (b *Backend) list(ctx context.Context, bucket, prefix, delim, marker string, maxKeys *int32) (*lister, error) {
	bp, err := b.checkBucket(ctx, bucket)
	if err != nil {
		return nil, err
	}
	max := defaultMaxKeys
	if maxKeys != nil {
		if *maxKeys < 0 {
			return nil, s3err.GetInvalidArgumentErr(s3err.InvalidArgNegativeMaxKeys, "")
		}
		max = min(int(*maxKeys), defaultMaxKeys)
	}
	l := &lister{b: b, ctx: ctx, bp: bp, prefix: prefix, delim: delim, marker: marker, max: max}
	if err := l.run(); err != nil {
		return nil, b.s3Error(err, s3err.GetBucketErr(s3err.ErrNoSuchBucket, bucket))
	}
	return l, nil
}

// ListObjects is ListObjects v1: Marker is a key.
func (b *Backend) ListObjects(ctx context.Context, in *s3.ListObjectsInput) (s3response.ListObjectsResult, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	l, err := b.list(ctx, deref(in.Bucket), deref(in.Prefix), deref(in.Delimiter), deref(in.Marker), in.MaxKeys)
	if err != nil {
		return s3response.ListObjectsResult{}, err
	}
	max := int32(l.max)
	out := s3response.ListObjectsResult{Name: in.Bucket, Prefix: nonEmpty(l.prefix), Marker: nonEmpty(l.marker), MaxKeys: &max, Delimiter: nonEmpty(l.delim),
		IsTruncated: &l.truncated, Contents: l.contents, CommonPrefixes: l.prefixes, EncodingType: in.EncodingType}
	if l.truncated {
		out.NextMarker = ptr(l.last)
	}
	return out, nil
}

// ListObjectsV2 is ListObjects v2: the continuation token is the last key
// or prefix returned (S3's tokens are opaque; this one needs no state).
func (b *Backend) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input) (s3response.ListObjectsV2Result, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	// The continuation token is the last key (or common prefix) of the
	// page before; given both, the listing starts after the later of the
	// two (as versitygw's backends do), so neither is ever gone back on.
	marker := max(deref(in.StartAfter), deref(in.ContinuationToken))
	l, err := b.list(ctx, deref(in.Bucket), deref(in.Prefix), deref(in.Delimiter), marker, in.MaxKeys)
	if err != nil {
		return s3response.ListObjectsV2Result{}, err
	}
	max, n := int32(l.max), int32(l.count())
	out := s3response.ListObjectsV2Result{Name: in.Bucket, Prefix: nonEmpty(l.prefix), StartAfter: nonEmpty(deref(in.StartAfter)), ContinuationToken: nonEmpty(deref(in.ContinuationToken)),
		KeyCount: &n, MaxKeys: &max, Delimiter: nonEmpty(l.delim), IsTruncated: &l.truncated, Contents: l.contents, CommonPrefixes: l.prefixes,
		EncodingType: in.EncodingType}
	if l.truncated {
		out.NextContinuationToken = ptr(l.last)
	}
	return out, nil
}

// nonEmpty returns &s, or nil for "" (an element S3 leaves out).
func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
