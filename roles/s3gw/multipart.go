package s3gw

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/google/uuid"
	"github.com/versity/versitygw/backend"
	"github.com/versity/versitygw/s3err"
	"github.com/versity/versitygw/s3response"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// A multipart upload lives in dfs, so that it survives a gateway's
// restart and any gateway of the cluster continues it:
//
//	/.s3/multipart/<bucket>+<uploadID>/upload       what the upload is (JSON)
//	/.s3/multipart/<bucket>+<uploadID>/part.00001   each part, its MD5 in its metadata
//
// Complete concatenates the parts' chunks into the object (no part byte is
// copied) and removes the upload's directory.

const (
	uploadFile = "upload"
	partPrefix = "part."
	// minPartSize is S3's least size of a part but the last.
	minPartSize = 5 << 20
	maxPartNum  = 10000
)

// uploadInfo is what the upload file holds.
type uploadInfo struct {
	Key       string            `json:"key"`
	Meta      map[string]string `json:"meta,omitempty"`
	Initiator string            `json:"initiator,omitempty"`
	Initiated time.Time         `json:"initiated"`
}

// uploadDir is where an upload keeps its parts: a directory of its own
// right under multipartRoot, named by bucket and ID. The uploads of a
// bucket sort together ('+' is in no bucket name), and no directory is
// shared by the users of a bucket: the root is the superuser's, sticky,
// so no user can block or remove another's uploads.
func uploadDir(bucket, id string) string { return multipartRoot + "/" + bucket + uploadSep + id }

// uploadSep separates the bucket from the upload ID in an upload's
// directory name.
const uploadSep = "+"

// bucketUploads calls fn with the directory and ID of each upload of
// bucket, in ID order, a page of the listing at a time.
func (b *Backend) bucketUploads(ctx context.Context, bucket string, fn func(dir, id string) error) error {
	prefix := multipartRoot + "/" + bucket + uploadSep
	for e, err := range b.c.List(ctx, multipartRoot, &client.ListOptions{After: prefix}) {
		if err != nil {
			if rpc.KindOf(err) == rpc.NotFound {
				return nil // no upload yet
			}
			return err
		}
		id, ok := strings.CutPrefix(e.Path, prefix)
		if !ok {
			return nil // past the bucket's uploads
		}
		if !e.IsDir || !validUploadID(id) {
			continue
		}
		if err := fn(e.Path, id); err != nil {
			return err
		}
	}
	return nil
}

func partPath(dir string, n int32) string { return fmt.Sprintf("%s/%s%05d", dir, partPrefix, n) }

// validUploadID refuses an upload ID that is not one of ours before it
// makes a path.
func validUploadID(id string) bool {
	_, err := uuid.Parse(id)
	return err == nil && len(id) == 36
}

// openUpload reads the upload's file: NoSuchUpload when there is none or
// it is for another key.
func (b *Backend) openUpload(ctx context.Context, bucket, key, id string) (string, *uploadInfo, error) {
	if _, err := b.checkBucket(ctx, bucket); err != nil {
		return "", nil, err
	}
	if !validUploadID(id) {
		return "", nil, s3err.GetNoSuchUploadErr(id)
	}
	dir := uploadDir(bucket, id)
	var buf bytes.Buffer
	if _, err := b.c.Get(ctx, dir+"/"+uploadFile, &limitWriter{w: &buf, n: maxMeta * 2}, nil); err != nil {
		return "", nil, b.s3Error(err, s3err.GetNoSuchUploadErr(id))
	}
	var info uploadInfo
	if err := json.Unmarshal(buf.Bytes(), &info); err != nil {
		return "", nil, fmt.Errorf("upload %s: %w", id, err)
	}
	if key != "" && info.Key != key {
		return "", nil, s3err.GetNoSuchUploadErr(id)
	}
	return dir, &info, nil
}

// limitWriter fails a write past n bytes.
type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if len(p) > l.n {
		return 0, errors.New("upload file too large")
	}
	l.n -= len(p)
	return l.w.Write(p)
}

func (b *Backend) CreateMultipartUpload(ctx context.Context, in s3response.CreateMultipartUploadInput) (s3response.InitiateMultipartUploadResult, error) {
	actx, cancel := b.act(ctx)
	defer cancel()
	bucket, key := deref(in.Bucket), deref(in.Key)
	if _, dir, err := objectPath(bucket, key); err != nil {
		return s3response.InitiateMultipartUploadResult{}, err
	} else if dir {
		return s3response.InitiateMultipartUploadResult{}, s3err.GetAPIError(s3err.ErrDirectoryObjectContainsData)
	}
	if _, err := b.checkBucket(actx, bucket); err != nil {
		return s3response.InitiateMultipartUploadResult{}, err
	}
	md, err := buildMeta(headers{in.ContentType, in.ContentEncoding, in.CacheControl, in.ContentDisposition, in.ContentLanguage, in.Expires, in.WebsiteRedirectLocation}, in.Metadata)
	if err != nil {
		return s3response.InitiateMultipartUploadResult{}, err
	}
	id := uuid.NewString()
	dir := uploadDir(bucket, id)
	if err := b.c.MkdirAll(actx, dir); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return s3response.InitiateMultipartUploadResult{}, apiError("AccessDenied", 403,
				"the gateway cannot make %s for this user: a superuser must make %s writable by all (dfs mkdir -p %s && dfs chmod 1777 %s)", dir, multipartRoot, multipartRoot, multipartRoot)
		}
		return s3response.InitiateMultipartUploadResult{}, b.s3Error(err, nil)
	}
	// An upload is its initiator's alone: its parts are not for others
	// to read before the object is.
	if err := b.c.Chmod(actx, dir, 0o700); err != nil {
		_ = b.c.RemoveAll(actx, dir)
		return s3response.InitiateMultipartUploadResult{}, b.s3Error(err, nil)
	}
	info, _ := json.Marshal(uploadInfo{Key: key, Meta: md, Initiator: b.userOf(ctx), Initiated: b.clock.Now().UTC()})
	if _, err := b.c.Put(actx, dir+"/"+uploadFile, bytes.NewReader(info), int64(len(info)), nil); err != nil {
		_ = b.c.RemoveAll(actx, dir)
		return s3response.InitiateMultipartUploadResult{}, b.s3Error(err, nil)
	}
	return s3response.InitiateMultipartUploadResult{Bucket: bucket, Key: key, UploadId: id}, nil
}

func checkPartNumber(n *int32) (int32, error) {
	if n == nil || *n < 1 || *n > maxPartNum {
		v := ""
		if n != nil {
			v = strconv.Itoa(int(*n))
		}
		return 0, s3err.GetInvalidArgumentErr(s3err.InvalidArgPartNumber, v)
	}
	return *n, nil
}

// UploadPart streams a part into its file, computing its MD5; a part
// uploaded again replaces the one before.
func (b *Backend) UploadPart(ctx context.Context, in *s3.UploadPartInput) (*s3.UploadPartOutput, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	n, err := checkPartNumber(in.PartNumber)
	if err != nil {
		return nil, err
	}
	dir, _, err := b.openUpload(ctx, deref(in.Bucket), deref(in.Key), deref(in.UploadId))
	if err != nil {
		return nil, err
	}
	opts := &client.CreateOptions{}
	if in.ContentLength != nil {
		opts.ChunkSize = partChunkSize(*in.ContentLength)
	}
	sums := checksums{in.ChecksumCRC32, in.ChecksumCRC32C, in.ChecksumSHA1, in.ChecksumSHA256, in.ChecksumCRC64NVME, in.ChecksumSHA512,
		in.ChecksumMD5, in.ChecksumXXHASH64, in.ChecksumXXHASH3, in.ChecksumXXHASH128}
	md := map[string]string{}
	sum, _, err := b.write(ctx, partPath(dir, n), in.Body, in.ContentLength, in.ContentMD5, sums, md, opts)
	if err != nil {
		if rpc.KindOf(err) == rpc.NotFound {
			return nil, s3err.GetNoSuchUploadErr(deref(in.UploadId)) // aborted meanwhile
		}
		return nil, err
	}
	c, _ := storedChecksums(md)
	return &s3.UploadPartOutput{ETag: ptr(`"` + sum + `"`), ChecksumCRC32: c.CRC32, ChecksumCRC32C: c.CRC32C, ChecksumSHA1: c.SHA1,
		ChecksumSHA256: c.SHA256, ChecksumCRC64NVME: c.CRC64NVME, ChecksumSHA512: c.SHA512, ChecksumMD5: c.MD5, ChecksumXXHASH64: c.XXHASH64,
		ChecksumXXHASH3: c.XXHASH3, ChecksumXXHASH128: c.XXHASH128}, nil
}

// UploadPartCopy makes a part of an object, or of a range of it. A whole
// object is copied on the cluster (shared chunks); a range streams
// through the gateway.
func (b *Backend) UploadPartCopy(ctx context.Context, in *s3.UploadPartCopyInput) (s3response.CopyPartResult, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	n, err := checkPartNumber(in.PartNumber)
	if err != nil {
		return s3response.CopyPartResult{}, err
	}
	dir, _, err := b.openUpload(ctx, deref(in.Bucket), deref(in.Key), deref(in.UploadId))
	if err != nil {
		return s3response.CopyPartResult{}, err
	}
	srcBucket, srcKey, version, err := backend.ParseCopySource(deref(in.CopySource))
	if err != nil {
		return s3response.CopyPartResult{}, err
	}
	if version != "" && version != "null" {
		return s3response.CopyPartResult{}, s3err.GetNoSuchVersionErr(srcKey, version)
	}
	srcPath, src, err := b.stat(ctx, srcBucket, srcKey)
	if err != nil {
		return s3response.CopyPartResult{}, err
	}
	if src.IsDir {
		return s3response.CopyPartResult{}, s3err.GetAPIError(s3err.ErrNoSuchKey)
	}
	if err := copySourceConditions(fileETag(src), src.Modified, in.CopySourceIfMatch, in.CopySourceIfNoneMatch, in.CopySourceIfModifiedSince, in.CopySourceIfUnmodifiedSince); err != nil {
		return s3response.CopyPartResult{}, err
	}
	dst := partPath(dir, n)
	start, length, err := backend.ParseCopySourceRange(src.Size, deref(in.CopySourceRange))
	if err != nil {
		return s3response.CopyPartResult{}, err
	}
	srcTag := strings.Trim(fileETag(src), `"`)
	if start == 0 && length == src.Size && isMD5(srcTag) {
		fi, err := b.c.Copy(ctx, srcPath, dst, &client.CopyOptions{Metadata: map[string]string{metaETag: srcTag}, SrcVersion: src.Version})
		if rpc.KindOf(err) == rpc.FailedPrecondition {
			return s3response.CopyPartResult{}, errSourceChanged
		}
		if err != nil {
			return s3response.CopyPartResult{}, b.s3Error(err, nil)
		}
		return s3response.CopyPartResult{ETag: ptr(`"` + srcTag + `"`), LastModified: fi.Modified}, nil
	}
	r, err := b.c.Open(ctx, srcPath)
	if err != nil {
		return s3response.CopyPartResult{}, b.s3Error(err, nil)
	}
	defer r.Close()
	if r.Version() != src.Version {
		return s3response.CopyPartResult{}, errSourceChanged // the range and conditions were of another version
	}
	if _, err := r.Seek(start, io.SeekStart); err != nil {
		return s3response.CopyPartResult{}, b.s3Error(err, nil)
	}
	sum, fi, err := b.write(ctx, dst, io.LimitReader(r, length), &length, nil, checksums{}, map[string]string{}, &client.CreateOptions{ChunkSize: partChunkSize(length)})
	if err != nil {
		return s3response.CopyPartResult{}, err
	}
	return s3response.CopyPartResult{ETag: ptr(`"` + sum + `"`), LastModified: fi.Modified}, nil
}

// isMD5 tells an MD5 in hex (a single-part ETag) from the others.
func isMD5(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && len(s) == 32
}

// parts lists the parts of the upload in dir, by number.
func (b *Backend) parts(ctx context.Context, dir string, fn func(n int32, e client.DirEntry) error) error {
	for e, err := range b.c.List(ctx, dir, &client.ListOptions{Metadata: true}) {
		if err != nil {
			return err
		}
		name := e.Path[strings.LastIndexByte(e.Path, '/')+1:]
		num, ok := strings.CutPrefix(name, partPrefix)
		if !ok || e.IsDir {
			continue
		}
		n, err := strconv.Atoi(num)
		if err != nil {
			continue
		}
		if err := fn(int32(n), e); err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) ListParts(ctx context.Context, in *s3.ListPartsInput) (s3response.ListPartsResult, error) {
	actx, cancel := b.act(ctx)
	defer cancel()
	bucket, key, id := deref(in.Bucket), deref(in.Key), deref(in.UploadId)
	dir, info, err := b.openUpload(actx, bucket, key, id)
	if err != nil {
		return s3response.ListPartsResult{}, err
	}
	marker := 0
	if m := deref(in.PartNumberMarker); m != "" {
		if marker, err = strconv.Atoi(m); err != nil || marker < 0 {
			return s3response.ListPartsResult{}, s3err.GetInvalidArgumentErr(s3err.InvalidArgPartNumber, m)
		}
	}
	max := 1000
	if in.MaxParts != nil && *in.MaxParts >= 0 && *in.MaxParts < 1000 {
		max = int(*in.MaxParts)
	}
	owner := s3response.Owner{ID: info.Initiator, DisplayName: info.Initiator}
	out := s3response.ListPartsResult{Bucket: bucket, Key: key, UploadID: id, Initiator: s3response.Initiator(owner), Owner: owner,
		StorageClass: types.StorageClassStandard, PartNumberMarker: marker, MaxParts: max}
	err = b.parts(actx, dir, func(n int32, e client.DirEntry) error {
		if int(n) <= marker {
			return nil
		}
		if len(out.Parts) == max {
			out.IsTruncated = true
			return errListDone
		}
		out.Parts = append(out.Parts, s3response.Part{PartNumber: int(n), LastModified: e.Modified, ETag: etag(e.Metadata, e.Modified, e.Size), Size: e.Size})
		out.NextPartNumberMarker = int(n)
		return nil
	})
	if err != nil && !errors.Is(err, errListDone) {
		return out, b.s3Error(err, s3err.GetNoSuchUploadErr(id))
	}
	return out, nil
}

func (b *Backend) ListMultipartUploads(ctx context.Context, in *s3.ListMultipartUploadsInput) (s3response.ListMultipartUploadsResult, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	bucket := deref(in.Bucket)
	if _, err := b.checkBucket(ctx, bucket); err != nil {
		return s3response.ListMultipartUploadsResult{}, err
	}
	prefix, keyMarker := deref(in.Prefix), deref(in.KeyMarker)
	var uploads []s3response.Upload
	err := b.bucketUploads(ctx, bucket, func(_, id string) error {
		_, info, err := b.openUpload(ctx, bucket, "", id)
		if err != nil {
			return nil // aborted or completed meanwhile, or not this user's
		}
		// Past the key marker; with an upload-ID marker the marker's key
		// too, whose uploads after that ID versitygw's lister keeps.
		if !strings.HasPrefix(info.Key, prefix) || (keyMarker != "" && (info.Key < keyMarker || info.Key == keyMarker && deref(in.UploadIdMarker) == "")) {
			return nil
		}
		owner := s3response.Owner{ID: info.Initiator, DisplayName: info.Initiator}
		uploads = append(uploads, s3response.Upload{Key: info.Key, UploadID: id, Initiator: s3response.Initiator(owner), Owner: owner,
			StorageClass: types.StorageClassStandard, Initiated: info.Initiated})
		return nil
	})
	if err != nil && rpc.KindOf(err) != rpc.NotFound {
		return s3response.ListMultipartUploadsResult{}, b.s3Error(err, nil)
	}
	// S3's order: by key, then by when each began.
	sort.Slice(uploads, func(i, j int) bool {
		if uploads[i].Key != uploads[j].Key {
			return uploads[i].Key < uploads[j].Key
		}
		return uploads[i].Initiated.Before(uploads[j].Initiated)
	})
	max := 1000
	if in.MaxUploads != nil && *in.MaxUploads >= 0 && *in.MaxUploads < 1000 {
		max = int(*in.MaxUploads)
	}
	page, err := backend.ListMultipartUploads(uploads, prefix, deref(in.Delimiter), deref(in.KeyMarker), deref(in.UploadIdMarker), max)
	if err != nil {
		return s3response.ListMultipartUploadsResult{}, err
	}
	return s3response.ListMultipartUploadsResult{Bucket: bucket, KeyMarker: deref(in.KeyMarker), UploadIDMarker: deref(in.UploadIdMarker),
		NextKeyMarker: page.NextKeyMarker, NextUploadIDMarker: page.NextUploadIDMarker, Delimiter: deref(in.Delimiter), Prefix: prefix,
		MaxUploads: max, IsTruncated: page.IsTruncated, Uploads: page.Uploads, CommonPrefixes: page.CommonPrefixes}, nil
}

func (b *Backend) AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput) error {
	ctx, cancel := b.act(ctx)
	defer cancel()
	dir, _, err := b.openUpload(ctx, deref(in.Bucket), deref(in.Key), deref(in.UploadId))
	if err != nil {
		return err
	}
	return b.s3Error(b.c.RemoveAll(ctx, dir), nil)
}

// CompleteMultipartUpload makes the object of the parts named, in one
// commit whose chunks are the parts' chunks: no part byte is copied, and
// the object appears whole or not at all. Its ETag is S3's: the MD5 of
// the parts' MD5s, "-" and their count.
func (b *Backend) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput) (s3response.CompleteMultipartUploadResult, string, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	out, err := b.complete(ctx, in)
	var api interface{ BaseError() s3err.APIError }
	if err != nil && errors.As(err, &api) && slices.Contains([]string{"NoSuchUpload", "NoSuchKey", "InvalidPart"}, api.BaseError().Code) {
		// The upload went meanwhile: a retry of a Complete that succeeded,
		// or one that raced another with the same parts, succeeds as well.
		if done, ok := b.completed(ctx, deref(in.Bucket), deref(in.Key), in); ok {
			return done, "", nil
		}
	}
	return out, "", err
}

// complete is CompleteMultipartUpload.
func (b *Backend) complete(ctx context.Context, in *s3.CompleteMultipartUploadInput) (s3response.CompleteMultipartUploadResult, error) {
	bucket, key, id := deref(in.Bucket), deref(in.Key), deref(in.UploadId)
	dir, info, err := b.openUpload(ctx, bucket, key, id)
	if err != nil {
		return s3response.CompleteMultipartUploadResult{}, err
	}
	if in.MultipartUpload == nil || len(in.MultipartUpload.Parts) == 0 {
		return s3response.CompleteMultipartUploadResult{}, s3err.GetAPIError(s3err.ErrMalformedXML)
	}
	want := in.MultipartUpload.Parts
	have := map[int32]client.DirEntry{}
	if err := b.parts(ctx, dir, func(n int32, e client.DirEntry) error { have[n] = e; return nil }); err != nil {
		return s3response.CompleteMultipartUploadResult{}, b.s3Error(err, s3err.GetNoSuchUploadErr(id))
	}
	srcs := make([]string, 0, len(want))
	var size int64
	last := int32(0)
	for i, p := range want {
		if p.PartNumber == nil || p.ETag == nil {
			return s3response.CompleteMultipartUploadResult{}, s3err.GetAPIError(s3err.ErrMalformedXML)
		}
		n := *p.PartNumber
		if n < 1 || n > maxPartNum {
			return s3response.CompleteMultipartUploadResult{}, s3err.GetInvalidArgumentErr(s3err.InvalidArgCompleteMpPartNumber, strconv.Itoa(int(n)))
		}
		if n <= last {
			return s3response.CompleteMultipartUploadResult{}, s3err.GetAPIError(s3err.ErrInvalidPartOrder)
		}
		last = n
		e, ok := have[n]
		if !ok || strings.Trim(*p.ETag, `"`) != strings.Trim(etag(e.Metadata, e.Modified, e.Size), `"`) {
			return s3response.CompleteMultipartUploadResult{}, s3err.GetAPIError(s3err.ErrInvalidPart)
		}
		if i < len(want)-1 && e.Size < minPartSize {
			return s3response.CompleteMultipartUploadResult{}, s3err.GetEntityTooSmallErr(e.Size, minPartSize)
		}
		size += e.Size
		srcs = append(srcs, partPath(dir, n))
	}
	if in.MpuObjectSize != nil && *in.MpuObjectSize != size {
		return s3response.CompleteMultipartUploadResult{}, s3err.GetIncorrectMpObjectSizeErr(size, *in.MpuObjectSize)
	}
	tag, err := backend.ComputeMultipartETagFromPartETags(want)
	if err != nil {
		return s3response.CompleteMultipartUploadResult{}, err
	}
	p, _, err := objectPath(bucket, key)
	if err != nil {
		return s3response.CompleteMultipartUploadResult{}, err
	}
	opts, err := b.putConditions(ctx, p, in.IfMatch, in.IfNoneMatch)
	if err != nil {
		return s3response.CompleteMultipartUploadResult{}, err
	}
	md := map[string]string{}
	for k, v := range info.Meta {
		md[k] = v
	}
	md[metaETag] = strings.Trim(tag, `"`)
	if _, err := concat(ctx, b.c, p, srcs, md, opts.IfNotExist, opts.IfVersion); err != nil {
		return s3response.CompleteMultipartUploadResult{}, b.putError(ctx, p, err, opts)
	}
	if err := b.c.RemoveAll(ctx, dir); err != nil {
		b.log.Warn().Err(err).Str("upload", id).Msg("remove a completed upload's parts")
	}
	return s3response.CompleteMultipartUploadResult{Bucket: &bucket, Key: &key, ETag: &tag}, nil
}

// completed tells whether the object at bucket/key is what a Complete
// of these parts made (its ETag is theirs): a client that retries a
// Complete whose answer it lost then hears success, as from S3.
func (b *Backend) completed(ctx context.Context, bucket, key string, in *s3.CompleteMultipartUploadInput) (s3response.CompleteMultipartUploadResult, bool) {
	if in.MultipartUpload == nil || len(in.MultipartUpload.Parts) == 0 {
		return s3response.CompleteMultipartUploadResult{}, false
	}
	tag, err := backend.ComputeMultipartETagFromPartETags(in.MultipartUpload.Parts)
	if err != nil {
		return s3response.CompleteMultipartUploadResult{}, false
	}
	_, fi, err := b.stat(ctx, bucket, key)
	if err != nil || fi.IsDir || fileETag(fi) != tag {
		return s3response.CompleteMultipartUploadResult{}, false
	}
	return s3response.CompleteMultipartUploadResult{Bucket: &bucket, Key: &key, ETag: &tag}, true
}

// AbortStale removes, acting as user, the multipart uploads of every
// bucket started more than maxAge ago, and returns how many it removed.
func (b *Backend) AbortStale(ctx context.Context, user string, maxAge time.Duration) (int, error) {
	if user != "" {
		ctx = client.ActingAs(ctx, user)
	}
	cutoff := b.clock.Now().Add(-maxAge)
	var stale []string
	err := b.c.ListPages(ctx, multipartRoot, false, func(ups []client.DirEntry) error {
		for _, u := range ups {
			_, id, ok := strings.Cut(u.Path[len(multipartRoot)+1:], uploadSep)
			if ok && u.IsDir && validUploadID(id) && !u.Modified.IsZero() && u.Modified.Before(cutoff) {
				stale = append(stale, u.Path)
			}
		}
		return nil
	})
	if rpc.KindOf(err) == rpc.NotFound {
		err = nil
	}
	removed := 0
	for _, dir := range stale {
		// The upload file tells when it began; the directory's time may not.
		// One without an upload file (its gateway died making it) goes by
		// the directory's time alone.
		var buf bytes.Buffer
		_, gerr := b.c.Get(ctx, dir+"/"+uploadFile, &limitWriter{w: &buf, n: maxMeta * 2}, nil)
		var info uploadInfo
		switch {
		case gerr == nil && json.Unmarshal(buf.Bytes(), &info) == nil && info.Initiated.Before(cutoff):
		case rpc.KindOf(gerr) == rpc.NotFound:
		default:
			continue // young, or not readable now: not removed on a guess
		}
		if rerr := b.c.RemoveAll(ctx, dir); rerr != nil {
			err = errors.Join(err, rerr)
			continue
		}
		removed++
	}
	return removed, err
}
