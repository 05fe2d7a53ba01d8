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
//	/.s3/multipart/<bucket>/<uploadID>/upload       what the upload is (JSON)
//	/.s3/multipart/<bucket>/<uploadID>/part.00001   each part, its MD5 in its metadata
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

func uploadDir(bucket, id string) string { return multipartRoot + "/" + bucket + "/" + id }

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
	md, err := buildMeta(headers{in.ContentType, in.ContentEncoding, in.CacheControl, in.ContentDisposition, in.ContentLanguage, in.Expires}, in.Metadata)
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
	// The bucket's directory of uploads is shared by every user of the
	// bucket; only its maker may open it up (the others' chmod fails).
	_ = b.c.Chmod(actx, multipartRoot+"/"+bucket, 0o777|fs.ModeSticky)
	// An upload is its initiator's alone.
	_ = b.c.Chmod(actx, dir, 0o700)
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
	sum, _, err := b.write(ctx, partPath(dir, n), in.Body, in.ContentLength, in.ContentMD5, map[string]string{}, opts)
	if err != nil {
		if rpc.KindOf(err) == rpc.NotFound {
			return nil, s3err.GetNoSuchUploadErr(deref(in.UploadId)) // aborted meanwhile
		}
		return nil, err
	}
	return &s3.UploadPartOutput{ETag: ptr(`"` + sum + `"`)}, nil
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
		fi, err := copyFile(ctx, b.c, srcPath, dst, map[string]string{metaETag: srcTag})
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
	if _, err := r.Seek(start, io.SeekStart); err != nil {
		return s3response.CopyPartResult{}, b.s3Error(err, nil)
	}
	sum, fi, err := b.write(ctx, dst, io.LimitReader(r, length), &length, nil, map[string]string{}, &client.CreateOptions{ChunkSize: partChunkSize(length)})
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
		out.Parts = append(out.Parts, s3response.Part{PartNumber: int(n), LastModified: e.Modified, ETag: etag(entryMeta(e), e.Modified, e.Size), Size: e.Size})
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
	prefix := deref(in.Prefix)
	var uploads []s3response.Upload
	err := b.c.ListPages(ctx, multipartRoot+"/"+bucket, false, func(page []client.DirEntry) error {
		for _, e := range page {
			id := e.Path[strings.LastIndexByte(e.Path, '/')+1:]
			if !e.IsDir || !validUploadID(id) {
				continue
			}
			_, info, err := b.openUpload(ctx, bucket, "", id)
			if err != nil || !strings.HasPrefix(info.Key, prefix) {
				continue // aborted or completed meanwhile
			}
			owner := s3response.Owner{ID: info.Initiator, DisplayName: info.Initiator}
			uploads = append(uploads, s3response.Upload{Key: info.Key, UploadID: id, Initiator: s3response.Initiator(owner), Owner: owner,
				StorageClass: types.StorageClassStandard, Initiated: info.Initiated})
		}
		return nil
	})
	if err != nil && rpc.KindOf(err) != rpc.NotFound {
		return s3response.ListMultipartUploadsResult{}, b.s3Error(err, nil)
	}
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
	bucket, key, id := deref(in.Bucket), deref(in.Key), deref(in.UploadId)
	dir, info, err := b.openUpload(ctx, bucket, key, id)
	if err != nil {
		return s3response.CompleteMultipartUploadResult{}, "", err
	}
	if in.MultipartUpload == nil || len(in.MultipartUpload.Parts) == 0 {
		return s3response.CompleteMultipartUploadResult{}, "", s3err.GetAPIError(s3err.ErrMalformedXML)
	}
	want := in.MultipartUpload.Parts
	have := map[int32]client.DirEntry{}
	if err := b.parts(ctx, dir, func(n int32, e client.DirEntry) error { have[n] = e; return nil }); err != nil {
		return s3response.CompleteMultipartUploadResult{}, "", b.s3Error(err, s3err.GetNoSuchUploadErr(id))
	}
	srcs := make([]string, 0, len(want))
	var size int64
	last := int32(0)
	for i, p := range want {
		if p.PartNumber == nil || p.ETag == nil {
			return s3response.CompleteMultipartUploadResult{}, "", s3err.GetAPIError(s3err.ErrMalformedXML)
		}
		n := *p.PartNumber
		if n <= last {
			return s3response.CompleteMultipartUploadResult{}, "", s3err.GetAPIError(s3err.ErrInvalidPartOrder)
		}
		last = n
		e, ok := have[n]
		if !ok || strings.Trim(*p.ETag, `"`) != strings.Trim(etag(entryMeta(e), e.Modified, e.Size), `"`) {
			return s3response.CompleteMultipartUploadResult{}, "", s3err.GetAPIError(s3err.ErrInvalidPart)
		}
		if i < len(want)-1 && e.Size < minPartSize {
			return s3response.CompleteMultipartUploadResult{}, "", s3err.GetEntityTooSmallErr(e.Size, minPartSize)
		}
		size += e.Size
		srcs = append(srcs, partPath(dir, n))
	}
	if in.MpuObjectSize != nil && *in.MpuObjectSize != size {
		return s3response.CompleteMultipartUploadResult{}, "", s3err.GetIncorrectMpObjectSizeErr(size, *in.MpuObjectSize)
	}
	tag, err := backend.ComputeMultipartETagFromPartETags(want)
	if err != nil {
		return s3response.CompleteMultipartUploadResult{}, "", err
	}
	p, _, err := objectPath(bucket, key)
	if err != nil {
		return s3response.CompleteMultipartUploadResult{}, "", err
	}
	opts, err := b.putConditions(ctx, p, in.IfMatch, in.IfNoneMatch)
	if err != nil {
		return s3response.CompleteMultipartUploadResult{}, "", err
	}
	md := map[string]string{}
	for k, v := range info.Meta {
		md[k] = v
	}
	md[metaETag] = strings.Trim(tag, `"`)
	if _, err := concat(ctx, b.c, p, srcs, md, opts.IfNotExist, opts.IfVersion); err != nil {
		return s3response.CompleteMultipartUploadResult{}, "", b.putError(ctx, p, err, opts)
	}
	if err := b.c.RemoveAll(ctx, dir); err != nil {
		b.log.Warn().Err(err).Str("upload", id).Msg("remove a completed upload's parts")
	}
	return s3response.CompleteMultipartUploadResult{Bucket: &bucket, Key: &key, ETag: &tag}, "", nil
}

// AbortStale removes, acting as user, the multipart uploads of every
// bucket started more than maxAge ago, and returns how many it removed.
func (b *Backend) AbortStale(ctx context.Context, user string, maxAge time.Duration) (int, error) {
	if user != "" {
		ctx = client.ActingAs(ctx, user)
	}
	cutoff := b.clock.Now().Add(-maxAge)
	var stale []string
	err := b.c.ListPages(ctx, multipartRoot, false, func(buckets []client.DirEntry) error {
		for _, bk := range buckets {
			if !bk.IsDir {
				continue
			}
			err := b.c.ListPages(ctx, bk.Path, false, func(ups []client.DirEntry) error {
				for _, u := range ups {
					if u.IsDir && !u.Modified.IsZero() && u.Modified.Before(cutoff) {
						stale = append(stale, u.Path)
					}
				}
				return nil
			})
			if err != nil && rpc.KindOf(err) != rpc.NotFound {
				return err
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
