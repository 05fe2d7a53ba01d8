package s3gw

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/versity/versitygw/backend"
	"github.com/versity/versitygw/s3err"
	"github.com/versity/versitygw/s3response"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// The metadata keys an object keeps with its file.
const (
	metaETag            = "s3.etag"
	metaContentType     = "content-type"
	metaContentEncoding = "content-encoding"
	metaCacheControl    = "cache-control"
	metaDisposition     = "content-disposition"
	metaLanguage        = "content-language"
	metaExpires         = "expires"
	metaRedirect        = "website-redirect-location"
	metaUserPrefix      = "x-amz-meta-"
	// maxMeta is dfs's bound on a file's metadata (keys and values).
	maxMeta = 4 << 10
)

// emptyMD5 is the MD5 of no bytes: the ETag of a directory marker.
const emptyMD5 = "d41d8cd98f00b204e9800998ecf8427e"

// headers are an object's standard headers as the metadata keeps them.
type headers struct {
	contentType, contentEncoding, cacheControl, disposition, language, expires, redirect *string
}

// buildMeta returns the metadata of an object with headers h and user
// metadata user (x-amz-meta-*, names without the prefix). It fails with
// MetadataTooLarge beyond what dfs keeps.
func buildMeta(h headers, user map[string]string) (map[string]string, error) {
	md := map[string]string{}
	for k, v := range map[string]*string{metaContentType: h.contentType, metaContentEncoding: h.contentEncoding,
		metaCacheControl: h.cacheControl, metaDisposition: h.disposition, metaLanguage: h.language, metaExpires: h.expires, metaRedirect: h.redirect} {
		if v != nil && *v != "" {
			md[k] = *v
		}
	}
	for k, v := range user {
		md[metaUserPrefix+strings.ToLower(k)] = v
	}
	size := len(metaETag) + 64
	for k, v := range md {
		size += len(k) + len(v)
	}
	if size > maxMeta {
		return nil, s3err.GetMetadataTooLargeErr(size, maxMeta)
	}
	return md, nil
}

// userMeta returns the x-amz-meta-* of md, without the prefix.
func userMeta(md map[string]string) map[string]string {
	var out map[string]string
	for k, v := range md {
		if name, ok := strings.CutPrefix(k, metaUserPrefix); ok {
			if out == nil {
				out = map[string]string{}
			}
			out[name] = v
		}
	}
	return out
}

// metaPtr returns md[k], or nil.
func metaPtr(md map[string]string, k string) *string {
	if v, ok := md[k]; ok {
		return &v
	}
	return nil
}

// etag returns the quoted ETag of a file: the one stored at its upload,
// else (a file written by dfs put) one made from its commit time and
// size, which a listing knows as well as a stat, marked "-1" so that
// clients do not take it for an MD5.
func etag(md map[string]string, modified time.Time, size int64) string {
	if e, ok := md[metaETag]; ok {
		return `"` + e + `"`
	}
	return fmt.Sprintf(`"%016x%016x-1"`, modified.UnixMilli(), size)
}

func fileETag(fi *client.FileInfo) string {
	if fi.IsDir {
		return `"` + emptyMD5 + `"`
	}
	return etag(fi.Metadata, fi.Modified, fi.Size)
}

// PutObject streams the body into a new version of the file, computing
// its MD5 (the ETag) on the way; the file commits only once the whole body
// arrived and checked, so a client that goes away leaves the previous
// version. A key ending in "/" makes a directory.
func (b *Backend) PutObject(ctx context.Context, in s3response.PutObjectInput) (s3response.PutObjectOutput, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	bucket, key := deref(in.Bucket), deref(in.Key)
	p, dir, err := objectPath(bucket, key)
	if err != nil {
		return s3response.PutObjectOutput{}, err
	}
	if _, err := b.checkBucket(ctx, bucket); err != nil {
		return s3response.PutObjectOutput{}, err
	}
	sums := checksums{in.ChecksumCRC32, in.ChecksumCRC32C, in.ChecksumSHA1, in.ChecksumSHA256, in.ChecksumCRC64NVME, in.ChecksumSHA512,
		in.ChecksumMD5, in.ChecksumXXHASH64, in.ChecksumXXHASH3, in.ChecksumXXHASH128}
	if dir {
		if in.ContentLength != nil && *in.ContentLength > 0 {
			return s3response.PutObjectOutput{}, s3err.GetAPIError(s3err.ErrDirectoryObjectContainsData)
		}
		// A directory holds no bytes: a checksum given must be no bytes'.
		if r, _, err := checkedBody(strings.NewReader(""), sums); err != nil {
			return s3response.PutObjectOutput{}, apiError("InvalidRequest", 400, "checksum: %s", err)
		} else if _, err := io.Copy(io.Discard, r); err != nil {
			return s3response.PutObjectOutput{}, err
		}
		if err := b.c.MkdirAll(ctx, p); err != nil {
			return s3response.PutObjectOutput{}, b.s3Error(err, nil)
		}
		return s3response.PutObjectOutput{ETag: `"` + emptyMD5 + `"`}, nil
	}
	md, err := buildMeta(headers{in.ContentType, in.ContentEncoding, in.CacheControl, in.ContentDisposition, in.ContentLanguage, in.Expires, in.WebsiteRedirectLocation}, in.Metadata)
	if err != nil {
		return s3response.PutObjectOutput{}, err
	}
	opts, err := b.putConditions(ctx, p, in.IfMatch, in.IfNoneMatch)
	if err != nil {
		return s3response.PutObjectOutput{}, err
	}
	sum, fi, err := b.write(ctx, p, in.Body, in.ContentLength, in.ContentMD5, sums, md, opts)
	if err != nil {
		return s3response.PutObjectOutput{}, err
	}
	out := s3response.PutObjectOutput{ETag: `"` + sum + `"`, Size: &fi.Size}
	c, typ := storedChecksums(md)
	out.ChecksumCRC32, out.ChecksumCRC32C, out.ChecksumSHA1, out.ChecksumSHA256, out.ChecksumCRC64NVME = c.CRC32, c.CRC32C, c.SHA1, c.SHA256, c.CRC64NVME
	out.ChecksumSHA512, out.ChecksumMD5, out.ChecksumXXHASH64, out.ChecksumXXHASH3, out.ChecksumXXHASH128 = c.SHA512, c.MD5, c.XXHASH64, c.XXHASH3, c.XXHASH128
	out.ChecksumType = typ
	return out, nil
}

// putConditions checks If-Match and If-None-Match of a write at p and
// returns the create options that make the commit conditional too.
func (b *Backend) putConditions(ctx context.Context, p string, ifMatch, ifNoneMatch *string) (*client.CreateOptions, error) {
	opts := &client.CreateOptions{}
	if ifMatch != nil && ifNoneMatch != nil {
		return nil, s3err.GetNotImplementedErr("If-Match,If-None-Match", s3err.NmpAdditionalMessageMultipleCondHeaders)
	}
	if ifNoneMatch != nil {
		if *ifNoneMatch != "*" {
			return nil, s3err.GetNotImplementedErr("If-None-Match", s3err.NmpAdditionalMessageIfNoneMatch)
		}
		opts.IfNotExist = true
	}
	if ifMatch != nil {
		fi, err := b.c.Head(ctx, p)
		if err != nil {
			return nil, b.s3Error(err, nil)
		}
		if fi.IsDir {
			return nil, s3err.GetPreconditionFailedErr(s3err.ConditionIfMatch) // no object there to match
		}
		if strings.Trim(*ifMatch, `"`) != strings.Trim(fileETag(fi), `"`) {
			return nil, s3err.GetPreconditionFailedErr(s3err.ConditionIfMatch)
		}
		opts.IfVersion = fi.Version
	}
	return opts, nil
}

// write streams body into a new version of p with metadata md (the MD5
// added) and returns the MD5 in hex. length, when known, must match.
func (b *Backend) write(ctx context.Context, p string, body io.Reader, length *int64, contentMD5 *string, sums checksums, md map[string]string, opts *client.CreateOptions) (string, *client.FileInfo, error) {
	if body == nil {
		body = strings.NewReader("")
	}
	body, record, err := checkedBody(body, sums)
	if err != nil {
		return "", nil, apiError("InvalidRequest", 400, "checksum: %s", err)
	}
	if length != nil && *length > 0 {
		// The size up front: the Writer takes buffers of the chunks'
		// sizes at once, and the coordinator plans the chunks.
		var sized client.CreateOptions
		if opts != nil {
			sized = *opts
		}
		sized.Size = *length
		opts = &sized
	}
	w, err := b.c.Create(ctx, p, opts)
	if err != nil {
		return "", nil, b.putError(ctx, p, err, opts)
	}
	h := md5.New()
	n, err := io.Copy(io.MultiWriter(w, h), body)
	if err != nil {
		w.Abort()
		return "", nil, b.s3Error(err, nil)
	}
	if length != nil && *length >= 0 && n != *length {
		w.Abort()
		return "", nil, s3err.GetAPIError(s3err.ErrIncompleteBody)
	}
	sum := h.Sum(nil)
	if contentMD5 != nil && *contentMD5 != "" {
		want, derr := base64.StdEncoding.DecodeString(*contentMD5)
		if derr != nil || len(want) != md5.Size {
			w.Abort()
			return "", nil, s3err.GetInvalidDigestErr(*contentMD5)
		}
		if string(want) != string(sum) {
			w.Abort()
			return "", nil, s3err.GetBadDigestErr(base64.StdEncoding.EncodeToString(sum), *contentMD5)
		}
	}
	md[metaETag] = hex.EncodeToString(sum)
	record(md)
	w.SetMetadata(md)
	if err := w.Close(); err != nil {
		return "", nil, b.putError(ctx, p, err, opts)
	}
	return md[metaETag], w.Info(), nil
}

// putError is the S3 error of a failed write at p with opts: a directory
// at p, or a file above it, is a conflict S3 does not have.
func (b *Backend) putError(ctx context.Context, p string, err error, opts *client.CreateOptions) error {
	switch {
	case opts != nil && opts.IfNotExist && errors.Is(err, fs.ErrExist):
		if fi, herr := b.c.Head(ctx, p); herr == nil && !fi.IsDir {
			return s3err.GetPreconditionFailedErr(s3err.ConditionIfNoneMatch)
		}
	case opts != nil && opts.IfVersion != 0 && rpc.KindOf(err) == rpc.FailedPrecondition:
		return s3err.GetPreconditionFailedErr(s3err.ConditionIfMatch)
	}
	if errors.Is(err, fs.ErrExist) {
		if fi, herr := b.c.Head(ctx, p); herr == nil && fi.IsDir {
			return s3err.GetAPIError(s3err.ErrExistingObjectIsDirectory)
		} else if herr != nil {
			return s3err.GetAPIError(s3err.ErrObjectParentIsFile)
		}
		return s3err.GetPreconditionFailedErr(s3err.ConditionIfNoneMatch)
	}
	return b.s3Error(err, nil)
}

// stat returns the file or directory that bucket/key names: NoSuchBucket
// or NoSuchKey when there is none (a key ending in "/" names only a
// directory, any other key only a file).
func (b *Backend) stat(ctx context.Context, bucket, key string) (string, *client.FileInfo, error) {
	p, dir, err := objectPath(bucket, key)
	if err != nil {
		return "", nil, err
	}
	fi, err := b.c.Head(ctx, p)
	if err == nil && fi.IsDir != dir {
		err = rpc.Errorf(rpc.NotFound, "no such key")
	}
	if err != nil {
		if rpc.KindOf(err) == rpc.NotFound {
			if _, berr := b.checkBucket(ctx, bucket); berr != nil {
				return "", nil, berr
			}
		}
		return "", nil, b.s3Error(err, nil)
	}
	return p, fi, nil
}

// openObject opens the object bucket/key for a read, as GET and HEAD
// ask (the read's permission check included): a file's Reader pins a
// version, and its Info is that version's metadata; a directory (a key
// ending in "/") has no Reader, and is told apart, like an error, by a
// stat. The caller closes the Reader.
func (b *Backend) openObject(ctx context.Context, bucket, key string) (*client.Reader, *client.FileInfo, error) {
	p, dir, err := objectPath(bucket, key)
	if err != nil {
		return nil, nil, err
	}
	if !dir {
		r, err := b.c.Open(ctx, p)
		if err == nil {
			return r, r.Info(), nil
		}
		if k := rpc.KindOf(err); k != rpc.NotFound && k != rpc.Invalid {
			// Refused, unavailable, damaged: that is the answer. Not
			// found, or a directory there: the stat below tells which.
			return nil, nil, b.s3Error(err, nil)
		}
	}
	_, fi, err := b.stat(ctx, bucket, key)
	if err != nil {
		return nil, nil, err
	}
	if !fi.IsDir {
		return nil, nil, apiError("ServiceUnavailable", 503, "the object changed while it was being opened, retry")
	}
	return nil, fi, nil
}

func (b *Backend) HeadObject(ctx context.Context, in *s3.HeadObjectInput) (*s3.HeadObjectOutput, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	r, fi, err := b.openObject(ctx, deref(in.Bucket), deref(in.Key))
	if r != nil {
		r.Close() // HEAD reads no byte: the open was the permission check
	}
	if err != nil {
		return nil, err
	}
	tag := fileETag(fi)
	if err := backend.EvaluatePreconditions(tag, fi.Modified.Truncate(time.Second), backend.PreConditions{IfMatch: in.IfMatch, IfNoneMatch: in.IfNoneMatch,
		IfModSince: in.IfModifiedSince, IfUnmodeSince: in.IfUnmodifiedSince}); err != nil {
		return nil, err
	}
	size := fi.Size
	var contentRange *string
	if in.PartNumber != nil && *in.PartNumber > 1 {
		return nil, s3err.GetInvalidPartNumberRangeErr(1, *in.PartNumber)
	}
	if in.PartNumber != nil && fi.Size > 0 {
		contentRange = ptr(fmt.Sprintf("bytes 0-%d/%d", fi.Size-1, fi.Size)) // part 1 is the whole object
	}
	if r := deref(in.Range); r != "" {
		start, length, ok, err := backend.ParseObjectRange(fi.Size, r)
		if err != nil {
			return nil, err
		}
		if ok {
			size = length
			contentRange = ptr(fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, fi.Size))
		}
	}
	md := fi.Metadata
	out := &s3.HeadObjectOutput{
		AcceptRanges: ptr("bytes"), ContentLength: &size, ContentRange: contentRange, ETag: &tag, LastModified: &fi.Modified,
		ContentType: contentType(md, fi.IsDir), ContentEncoding: metaPtr(md, metaContentEncoding), CacheControl: metaPtr(md, metaCacheControl),
		ContentDisposition: metaPtr(md, metaDisposition), ContentLanguage: metaPtr(md, metaLanguage), ExpiresString: metaPtr(md, metaExpires),
		WebsiteRedirectLocation: metaPtr(md, metaRedirect), Metadata: userMeta(md), StorageClass: types.StorageClassStandard,
	}
	if in.ChecksumMode == types.ChecksumModeEnabled && contentRange == nil {
		c, typ := storedChecksums(md)
		out.ChecksumCRC32, out.ChecksumCRC32C, out.ChecksumSHA1, out.ChecksumSHA256, out.ChecksumCRC64NVME = c.CRC32, c.CRC32C, c.SHA1, c.SHA256, c.CRC64NVME
		out.ChecksumSHA512, out.ChecksumMD5, out.ChecksumXXHASH64, out.ChecksumXXHASH3, out.ChecksumXXHASH128 = c.SHA512, c.MD5, c.XXHASH64, c.XXHASH3, c.XXHASH128
		out.ChecksumType = typ
	}
	return out, nil
}

// contentType is the stored Content-Type, else S3's default.
func contentType(md map[string]string, dir bool) *string {
	if v, ok := md[metaContentType]; ok {
		return &v
	}
	if dir {
		return ptr("application/x-directory")
	}
	return ptr("binary/octet-stream")
}

// GetObject streams the object, or the range asked, reading only the
// chunks that hold it; the body is the version found when the request
// came, even if it is replaced meanwhile.
func (b *Backend) GetObject(ctx context.Context, in *s3.GetObjectInput) (*s3.GetObjectOutput, error) {
	actx, cancel := b.act(ctx)
	ok := false
	defer func() {
		if !ok {
			cancel()
		}
	}()
	r, fi, err := b.openObject(actx, deref(in.Bucket), deref(in.Key))
	if err != nil {
		return nil, err
	}
	closeReader := func() {
		if r != nil {
			r.Close()
		}
	}
	tag := fileETag(fi)
	if err := backend.EvaluatePreconditions(tag, fi.Modified.Truncate(time.Second), backend.PreConditions{IfMatch: in.IfMatch, IfNoneMatch: in.IfNoneMatch,
		IfModSince: in.IfModifiedSince, IfUnmodeSince: in.IfUnmodifiedSince}); err != nil {
		closeReader()
		return nil, err
	}
	start, length := int64(0), fi.Size
	var contentRange *string
	if in.PartNumber != nil && *in.PartNumber > 1 {
		closeReader()
		return nil, s3err.GetInvalidPartNumberRangeErr(1, *in.PartNumber)
	}
	if in.PartNumber != nil && fi.Size > 0 {
		contentRange = ptr(fmt.Sprintf("bytes 0-%d/%d", fi.Size-1, fi.Size)) // part 1 is the whole object
	}
	if rg := deref(in.Range); rg != "" {
		s, l, valid, err := backend.ParseObjectRange(fi.Size, rg)
		if err != nil {
			closeReader()
			return nil, err
		}
		if valid {
			start, length = s, l
			contentRange = ptr(fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, fi.Size))
		}
	}
	var body io.ReadCloser = io.NopCloser(strings.NewReader(""))
	if r != nil {
		body = &objectBody{seq: r, start: start, length: length, ranged: contentRange != nil, close: func() { r.Close(); cancel() }}
	} else {
		cancel()
	}
	ok = true
	md := fi.Metadata
	out := &s3.GetObjectOutput{
		AcceptRanges: ptr("bytes"), ContentLength: &length, ContentRange: contentRange, ETag: &tag, LastModified: &fi.Modified,
		ContentType: contentType(md, fi.IsDir), ContentEncoding: metaPtr(md, metaContentEncoding), CacheControl: metaPtr(md, metaCacheControl),
		ContentDisposition: metaPtr(md, metaDisposition), ContentLanguage: metaPtr(md, metaLanguage), ExpiresString: metaPtr(md, metaExpires),
		WebsiteRedirectLocation: metaPtr(md, metaRedirect), Metadata: userMeta(md), StorageClass: types.StorageClassStandard, Body: body,
	}
	if in.ChecksumMode == types.ChecksumModeEnabled && (contentRange == nil || length == fi.Size) {
		c, typ := storedChecksums(md)
		out.ChecksumCRC32, out.ChecksumCRC32C, out.ChecksumSHA1, out.ChecksumSHA256, out.ChecksumCRC64NVME = c.CRC32, c.CRC32C, c.SHA1, c.SHA256, c.CRC64NVME
		out.ChecksumSHA512, out.ChecksumMD5, out.ChecksumXXHASH64, out.ChecksumXXHASH3, out.ChecksumXXHASH128 = c.SHA512, c.MD5, c.XXHASH64, c.XXHASH3, c.XXHASH128
		out.ChecksumType = typ
	}
	return out, nil
}

// objectBody is a GetObject body. A whole object is read in order, with
// the Reader's read-ahead (the next chunks fetched while these are sent).
// A range is read with ReadAt, a frame-sized piece at a time, so only the
// chunks and frames that hold it are fetched: read-ahead would fetch
// chunks past its end.
type objectBody struct {
	r             io.Reader
	seq           *client.Reader
	start, length int64
	ranged        bool
	read          int64
	close         func()
	closed        bool
}

// rangeBuffer is how much of a range one ReadAt asks for: a frame (1 MiB
// by default), so that a piece costs no more fetches than it needs.
const rangeBuffer = 1 << 20

func (o *objectBody) Read(p []byte) (int, error) {
	if o.r == nil {
		if o.ranged {
			o.r = bufio.NewReaderSize(io.NewSectionReader(o.seq, o.start, o.length), int(min(rangeBuffer, max(o.length, 16))))
		} else {
			o.r = o.seq
		}
	}
	n, err := o.r.Read(p)
	o.read += int64(n)
	if err == io.EOF && o.read < o.length {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (o *objectBody) Close() error {
	if !o.closed {
		o.closed = true
		o.close()
	}
	return nil
}

// DeleteObject removes a file (or an empty directory for a key ending in
// "/"); a missing key is no error, as in S3. Directories left empty above
// it go too, up to the bucket, so that they do not list as prefixes.
func (b *Backend) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput) (*s3.DeleteObjectOutput, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	pre := backend.ObjectDeletePreconditions{IfMatch: in.IfMatch, IfMatchLastModTime: in.IfMatchLastModifiedTime, IfMatchSize: in.IfMatchSize}
	if err := b.deleteObject(ctx, deref(in.Bucket), deref(in.Key), pre); err != nil {
		return nil, err
	}
	return &s3.DeleteObjectOutput{}, nil
}

func (b *Backend) deleteObject(ctx context.Context, bucket, key string, pre backend.ObjectDeletePreconditions) error {
	conditional := pre.IfMatch != nil || pre.IfMatchLastModTime != nil || pre.IfMatchSize != nil
	bp, err := b.checkBucket(ctx, bucket)
	if err != nil {
		return err
	}
	p, dir, err := objectPath(bucket, key)
	if err != nil {
		return err
	}
	fi, err := b.c.Head(ctx, p)
	switch {
	case rpc.KindOf(err) == rpc.NotFound, err == nil && fi.IsDir != dir:
		if conditional {
			return s3err.GetAPIError(s3err.ErrNoSuchKey)
		}
		return nil
	case err != nil:
		return b.s3Error(err, nil)
	}
	if pre.IfMatch != nil {
		pre.IfMatch = ptr(strings.Trim(*pre.IfMatch, `"`))
	}
	if err := backend.EvaluateObjectDeletePreconditions(fileETag(fi), fi.Modified, fi.Size, pre); err != nil {
		return err
	}
	err = b.c.Remove(ctx, p)
	switch {
	case rpc.KindOf(err) == rpc.NotEmpty:
		return nil // a directory marker with keys below: they keep the prefix
	case rpc.KindOf(err) == rpc.NotFound:
	case err != nil:
		return b.s3Error(err, nil)
	}
	b.removeEmptyParents(ctx, bp, p)
	return nil
}

// removeEmptyParents removes the directories above p that are empty, up
// to the bucket's directory bp; the first one that is not stops it.
func (b *Backend) removeEmptyParents(ctx context.Context, bp, p string) {
	for d := parent(p); d != bp && strings.HasPrefix(d, bp+"/"); d = parent(d) {
		if err := b.c.Remove(ctx, d); err != nil {
			return
		}
	}
}

func parent(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "/"
}

// DeleteObjects deletes each key on its own, reporting each.
func (b *Backend) DeleteObjects(ctx context.Context, in *s3.DeleteObjectsInput) (s3response.DeleteResult, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	var out s3response.DeleteResult
	if _, err := b.checkBucket(ctx, deref(in.Bucket)); err != nil {
		return out, err
	}
	if in.Delete == nil {
		return out, s3err.GetAPIError(s3err.ErrMalformedXML)
	}
	for _, o := range in.Delete.Objects {
		key := deref(o.Key)
		err := b.deleteObject(ctx, deref(in.Bucket), key, backend.ObjectDeletePreconditions{IfMatch: o.ETag, IfMatchLastModTime: o.LastModifiedTime, IfMatchSize: o.Size})
		if err == nil {
			out.Deleted = append(out.Deleted, types.DeletedObject{Key: ptr(key)})
			continue
		}
		code, msg := "InternalError", err.Error()
		var api interface{ BaseError() s3err.APIError }
		if errors.As(err, &api) {
			code, msg = api.BaseError().Code, api.BaseError().Description
		}
		out.Error = append(out.Error, types.Error{Key: ptr(key), Code: &code, Message: &msg})
	}
	return out, nil
}

// CopyObject copies on the cluster: the new file shares the source's
// chunks, no byte goes through the gateway. MetadataDirective REPLACE
// takes the request's metadata, COPY (the default) the source's.
func (b *Backend) CopyObject(ctx context.Context, in s3response.CopyObjectInput) (s3response.CopyObjectOutput, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	srcBucket, srcKey, version, err := backend.ParseCopySource(deref(in.CopySource))
	if err != nil {
		return s3response.CopyObjectOutput{}, err
	}
	if version != "" && version != "null" {
		return s3response.CopyObjectOutput{}, s3err.GetNoSuchVersionErr(srcKey, version)
	}
	srcPath, src, err := b.stat(ctx, srcBucket, srcKey)
	if err != nil {
		return s3response.CopyObjectOutput{}, err
	}
	if src.IsDir {
		return s3response.CopyObjectOutput{}, s3err.GetAPIError(s3err.ErrNoSuchKey)
	}
	if err := copySourceConditions(fileETag(src), src.Modified, in.CopySourceIfMatch, in.CopySourceIfNoneMatch, in.CopySourceIfModifiedSince, in.CopySourceIfUnmodifiedSince); err != nil {
		return s3response.CopyObjectOutput{}, err
	}
	dstPath, dir, err := objectPath(deref(in.Bucket), deref(in.Key))
	if err != nil {
		return s3response.CopyObjectOutput{}, err
	}
	if dir {
		return s3response.CopyObjectOutput{}, s3err.GetAPIError(s3err.ErrDirectoryObjectContainsData)
	}
	if _, err := b.checkBucket(ctx, deref(in.Bucket)); err != nil {
		return s3response.CopyObjectOutput{}, err
	}
	var md map[string]string
	replace := in.MetadataDirective == types.MetadataDirectiveReplace
	if replace {
		if md, err = buildMeta(headers{in.ContentType, in.ContentEncoding, in.CacheControl, in.ContentDisposition, in.ContentLanguage, in.Expires, in.WebsiteRedirectLocation}, in.Metadata); err != nil {
			return s3response.CopyObjectOutput{}, err
		}
		md[metaETag] = strings.Trim(fileETag(src), `"`)
	} else if srcPath == dstPath {
		return s3response.CopyObjectOutput{}, s3err.GetAPIError(s3err.ErrInvalidCopyDest)
	}
	// The version stat'ed (its conditions checked, its ETag taken) is the
	// one copied; onto itself with new metadata, a new version of the
	// object with the same chunks and the replaced file's owner and mode.
	fi, err := b.c.Copy(ctx, srcPath, dstPath, &client.CopyOptions{Metadata: md, SrcVersion: src.Version})
	if rpc.KindOf(err) == rpc.FailedPrecondition {
		return s3response.CopyObjectOutput{}, errSourceChanged
	}
	if err != nil {
		return s3response.CopyObjectOutput{}, b.putError(ctx, dstPath, err, nil)
	}
	tag := fileETag(src)
	return s3response.CopyObjectOutput{CopyObjectResult: &s3response.CopyObjectResult{ETag: &tag, LastModified: &fi.Modified}}, nil
}

// errSourceChanged answers a copy whose source was replaced between its
// stat and the copy: the client's retry copies the new version whole.
var errSourceChanged = apiError("ServiceUnavailable", 503, "the source object changed while it was being copied, retry")

// copySourceConditions checks the x-amz-copy-source-if-* headers as the
// conditions of a read of the source (412, or 304 where a read says so).
func copySourceConditions(tag string, mod time.Time, ifMatch, ifNoneMatch *string, ifMod, ifUnmod *time.Time) error {
	trim := func(s *string) *string {
		if s == nil {
			return nil
		}
		return ptr(strings.Trim(*s, `"`))
	}
	return backend.EvaluatePreconditions(tag, mod.Truncate(time.Second), backend.PreConditions{IfMatch: trim(ifMatch), IfNoneMatch: trim(ifNoneMatch),
		IfModSince: ifMod, IfUnmodeSince: ifUnmod})
}

// GetObjectTagging answers no tags for an existing object.
func (b *Backend) GetObjectTagging(ctx context.Context, bucket, key, _ string) (map[string]string, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	if _, _, err := b.stat(ctx, bucket, key); err != nil {
		return nil, err
	}
	return map[string]string{}, nil
}

func ptr[T any](v T) *T { return &v }
