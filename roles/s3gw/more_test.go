package s3gw_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"
	"github.com/minio/minio-go/v7"
	mcreds "github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/roles/s3gw"
)

// listKeys lists a bucket whole with ListObjectsV2 pages of max keys.
func listKeys(t *testing.T, c *s3.Client, in *s3.ListObjectsV2Input) (keys, prefixes []string, pages int) {
	t.Helper()
	p := s3.NewListObjectsV2Paginator(c, in)
	for p.HasMorePages() {
		out, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		pages++
		for _, o := range out.Contents {
			keys = append(keys, *o.Key)
		}
		for _, cp := range out.CommonPrefixes {
			prefixes = append(prefixes, *cp.Prefix)
		}
	}
	return keys, prefixes, pages
}

// TestListObjects: v1 and v2, prefix, delimiter, continuation, start-after,
// max-keys; S3's byte order across directories.
func TestListObjects(t *testing.T) {
	is := is.New(t)
	g, c := startBucket(t, "lst")
	ctx := t.Context()
	var err error
	all := []string{"a-b", "a/b", "a/b/c", "a/b-c", "a0", "b/x/y/z", "b/x0", "c.txt", "d/", "e/f/"}
	// "a/b" (a file) and "a/b/c" (below a directory a/b) cannot both be:
	// keep what dfs can hold.
	all = slices.DeleteFunc(all, func(k string) bool { return k == "a/b" })
	for _, k := range all {
		if strings.HasSuffix(k, "/") {
			put(t, c, "lst", k, nil)
			continue
		}
		put(t, c, "lst", k, []byte(k))
	}
	want := slices.Clone(all)
	sort.Strings(want) // S3 order: bytewise

	keys, prefixes, _ := listKeys(t, c, &s3.ListObjectsV2Input{Bucket: aws.String("lst")})
	is.Equal(keys, want) // recursive, in byte order, empty directories as markers
	is.Equal(len(prefixes), 0)

	keys, prefixes, pages := listKeys(t, c, &s3.ListObjectsV2Input{Bucket: aws.String("lst"), MaxKeys: aws.Int32(2)})
	is.Equal(keys, want) // the same in pages of 2
	is.Equal(pages, (len(want)+1)/2)
	is.Equal(len(prefixes), 0)

	keys, prefixes, _ = listKeys(t, c, &s3.ListObjectsV2Input{Bucket: aws.String("lst"), Delimiter: aws.String("/")})
	is.Equal(keys, []string{"a-b", "a0", "c.txt"})       // top level
	is.Equal(prefixes, []string{"a/", "b/", "d/", "e/"}) // rolled up
	keys, prefixes, pages = listKeys(t, c, &s3.ListObjectsV2Input{Bucket: aws.String("lst"), Delimiter: aws.String("/"), MaxKeys: aws.Int32(1)})
	is.Equal(keys, []string{"a-b", "a0", "c.txt"}) // the same one by one
	is.Equal(prefixes, []string{"a/", "b/", "d/", "e/"})
	is.Equal(pages, 7)

	keys, prefixes, _ = listKeys(t, c, &s3.ListObjectsV2Input{Bucket: aws.String("lst"), Prefix: aws.String("a/"), Delimiter: aws.String("/")})
	is.Equal(keys, []string{"a/b-c"})
	is.Equal(prefixes, []string{"a/b/"})
	keys, _, _ = listKeys(t, c, &s3.ListObjectsV2Input{Bucket: aws.String("lst"), Prefix: aws.String("b/x")})
	is.Equal(keys, []string{"b/x/y/z", "b/x0"}) // a prefix that ends inside a name
	keys, _, _ = listKeys(t, c, &s3.ListObjectsV2Input{Bucket: aws.String("lst"), StartAfter: aws.String("a/b/c")})
	is.Equal(keys, want[slices.Index(want, "a/b/c")+1:]) // start-after
	keys, _, _ = listKeys(t, c, &s3.ListObjectsV2Input{Bucket: aws.String("lst"), Prefix: aws.String("zzz")})
	is.Equal(len(keys), 0) // nothing

	// v1 with marker.
	var v1 []string
	marker := ""
	for range 20 {
		out, err := c.ListObjects(ctx, &s3.ListObjectsInput{Bucket: aws.String("lst"), Marker: aws.String(marker), MaxKeys: aws.Int32(3)})
		is.NoErr(err)
		for _, o := range out.Contents {
			v1 = append(v1, *o.Key)
		}
		if !*out.IsTruncated {
			break
		}
		marker = *out.NextMarker
	}
	is.Equal(v1, want) // v1 pages

	out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("lst"), Prefix: aws.String("c.txt")})
	is.NoErr(err)
	is.Equal(*out.Contents[0].ETag, `"`+md5hex([]byte("c.txt"))+`"`) // listings carry the ETag
	is.Equal(*out.Contents[0].Size, int64(5))

	// A file written with dfs put: no MD5 stored, the same ETag listed
	// and stat'ed, not one that looks like an MD5.
	_, err = g.dfs.Put(ctx, "/lst/native", strings.NewReader("native"), 6, nil)
	is.NoErr(err)
	out, err = c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("lst"), Prefix: aws.String("native")})
	is.NoErr(err)
	h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("lst"), Key: aws.String("native")})
	is.NoErr(err)
	is.Equal(*out.Contents[0].ETag, *h.ETag)
	is.True(strings.HasSuffix(*h.ETag, `-1"`))
	is.Equal(string(get(t, c, "lst", "native")), "native")

	_, err = c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("nolist")})
	is.Equal(code(err), "NoSuchBucket")
}

// TestConditionalAndCopy: If-Match, If-None-Match (* for create-only),
// If-Modified-Since; server-side copy with both metadata directives.
func TestConditionalAndCopy(t *testing.T) {
	is := is.New(t)
	g, c := startBucket(t, "cnd")
	ctx := t.Context()
	var err error

	v1 := put(t, c, "cnd", "k", []byte("one"))
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("cnd"), Key: aws.String("k"), Body: strings.NewReader("two"), IfNoneMatch: aws.String("*")})
	is.Equal(code(err), "PreconditionFailed") // create-only refuses an existing key
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("cnd"), Key: aws.String("new"), Body: strings.NewReader("n"), IfNoneMatch: aws.String("*")})
	is.NoErr(err) // create-only of a new key
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("cnd"), Key: aws.String("k"), Body: strings.NewReader("two"), IfMatch: aws.String(`"0123"`)})
	is.Equal(code(err), "PreconditionFailed") // If-Match of another ETag
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("cnd"), Key: aws.String("k"), Body: strings.NewReader("two"), IfMatch: v1.ETag})
	is.NoErr(err) // If-Match of the current ETag
	is.Equal(string(get(t, c, "cnd", "k")), "two")

	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("cnd"), Key: aws.String("k"), IfMatch: v1.ETag})
	is.Equal(code(err), "PreconditionFailed") // the ETag changed
	h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("cnd"), Key: aws.String("k")})
	is.NoErr(err)
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("cnd"), Key: aws.String("k"), IfNoneMatch: h.ETag})
	is.Equal(code(err), "NotModified") // 304
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("cnd"), Key: aws.String("k"), IfModifiedSince: h.LastModified})
	is.Equal(code(err), "NotModified") // not modified since (HTTP dates are to the second)
	o, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("cnd"), Key: aws.String("k"), IfModifiedSince: aws.Time(h.LastModified.Add(-time.Hour))})
	is.NoErr(err) // modified since
	o.Body.Close()

	// Copy, keeping the metadata.
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("cnd"), Key: aws.String("src"), Body: strings.NewReader("source bytes"),
		ContentType: aws.String("text/plain"), Metadata: map[string]string{"a": "1"}})
	is.NoErr(err)
	cp, err := c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String("cnd"), Key: aws.String("dst/copy"), CopySource: aws.String("cnd/src")})
	is.NoErr(err)
	is.Equal(*cp.CopyObjectResult.ETag, `"`+md5hex([]byte("source bytes"))+`"`)
	h, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("cnd"), Key: aws.String("dst/copy")})
	is.NoErr(err)
	is.Equal(*h.ContentType, "text/plain") // COPY keeps the metadata
	is.Equal(h.Metadata["a"], "1")
	is.Equal(string(get(t, c, "cnd", "dst/copy")), "source bytes")
	src, err := g.dfs.Stat(ctx, "/cnd/src")
	is.NoErr(err)
	dst, err := g.dfs.Stat(ctx, "/cnd/dst/copy")
	is.NoErr(err)
	is.Equal(src.Chunks[0].ID, dst.Chunks[0].ID) // server side: the chunks are shared

	// Copy, replacing it.
	_, err = c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String("cnd"), Key: aws.String("dst/repl"), CopySource: aws.String("cnd/src"),
		MetadataDirective: types.MetadataDirectiveReplace, ContentType: aws.String("application/json"), Metadata: map[string]string{"b": "2"}})
	is.NoErr(err)
	h, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("cnd"), Key: aws.String("dst/repl")})
	is.NoErr(err)
	is.Equal(*h.ContentType, "application/json") // REPLACE takes the request's
	is.Equal(h.Metadata, map[string]string{"b": "2"})
	is.Equal(*h.ETag, `"`+md5hex([]byte("source bytes"))+`"`) // the ETag stays the content's

	_, err = c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String("cnd"), Key: aws.String("x"), CopySource: aws.String("cnd/src"), CopySourceIfMatch: aws.String(`"nope"`)})
	is.Equal(code(err), "PreconditionFailed") // copy-source-if-match
	_, err = c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String("cnd"), Key: aws.String("x"), CopySource: aws.String("cnd/missing")})
	is.Equal(code(err), "NoSuchKey")
}

// uploadParts uploads parts (1-based numbers in order) out of order and
// returns the completed parts in order.
func uploadParts(t *testing.T, c *s3.Client, bucket, key, id string, parts [][]byte) []types.CompletedPart {
	t.Helper()
	done := make([]types.CompletedPart, len(parts))
	order := make([]int, len(parts))
	for i := range order {
		order[i] = len(parts) - 1 - i // last first
	}
	for _, i := range order {
		out, err := c.UploadPart(t.Context(), &s3.UploadPartInput{Bucket: &bucket, Key: &key, UploadId: &id, PartNumber: aws.Int32(int32(i + 1)),
			Body: bytes.NewReader(parts[i])})
		if err != nil {
			t.Fatalf("upload part %d: %v", i+1, err)
		}
		done[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
	}
	return done
}

// multipartETag is S3's: the MD5 of the parts' MD5s, "-", their count.
func multipartETag(parts [][]byte) string {
	var sums []byte
	for _, p := range parts {
		s := md5.Sum(p)
		sums = append(sums, s[:]...)
	}
	s := md5.Sum(sums)
	return fmt.Sprintf(`"%s-%d"`, hex.EncodeToString(s[:]), len(parts))
}

// TestMultipart: 5 MiB parts out of order, the S3 ETag, ListParts,
// ListMultipartUploads, Abort, UploadPartCopy; the object's chunks are the
// parts' (no copy).
func TestMultipart(t *testing.T) {
	is := is.New(t)
	g, c := startBucket(t, "mpu")
	ctx := t.Context()
	var err error

	parts := [][]byte{randomBytes(5 << 20), randomBytes(5 << 20), randomBytes(1<<20 + 3)}
	cr, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("big/object"),
		ContentType: aws.String("video/mp4"), Metadata: map[string]string{"m": "v"}})
	is.NoErr(err)
	done := uploadParts(t, c, "mpu", "big/object", *cr.UploadId, parts)

	lp, err := c.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String("mpu"), Key: aws.String("big/object"), UploadId: cr.UploadId})
	is.NoErr(err)
	is.Equal(len(lp.Parts), 3) // listed in order
	for i, p := range lp.Parts {
		is.Equal(*p.PartNumber, int32(i+1))
		is.Equal(*p.ETag, `"`+md5hex(parts[i])+`"`)
		is.Equal(*p.Size, int64(len(parts[i])))
	}
	lu, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String("mpu")})
	is.NoErr(err)
	is.Equal(len(lu.Uploads), 1)
	is.Equal(*lu.Uploads[0].Key, "big/object")
	is.Equal(*lu.Uploads[0].UploadId, *cr.UploadId)
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("mpu"), Key: aws.String("big/object")})
	is.True(err != nil) // nothing visible before Complete

	// A part too small in the middle is refused.
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("big/object"), UploadId: cr.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{done[0], done[2], {ETag: done[1].ETag, PartNumber: aws.Int32(4)}}}})
	is.True(err != nil) // InvalidPart or EntityTooSmall

	cm, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("big/object"), UploadId: cr.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done}})
	is.NoErr(err)
	is.Equal(*cm.ETag, multipartETag(parts)) // md5-of-md5s-N
	whole := bytes.Join(parts, nil)
	is.True(bytes.Equal(get(t, c, "mpu", "big/object"), whole)) // the parts in order
	h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("mpu"), Key: aws.String("big/object")})
	is.NoErr(err)
	is.Equal(*h.ETag, multipartETag(parts))
	is.Equal(*h.ContentType, "video/mp4") // the upload's metadata
	is.Equal(h.Metadata["m"], "v")
	fi, err := g.dfs.Stat(ctx, "/mpu/big/object")
	is.NoErr(err)
	is.Equal(fi.SHA256, []byte(nil)) // made by Concat: the parts' chunks, not a copy
	lu, err = c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String("mpu")})
	is.NoErr(err)
	is.Equal(len(lu.Uploads), 0) // completed uploads are gone
	_, err = c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("mpu"), Key: aws.String("big/object"), UploadId: cr.UploadId,
		PartNumber: aws.Int32(1), Body: strings.NewReader("x")})
	is.Equal(code(err), "NoSuchUpload")

	// Abort.
	ab, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("aborted")})
	is.NoErr(err)
	uploadParts(t, c, "mpu", "aborted", *ab.UploadId, [][]byte{[]byte("part")})
	_, err = c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("aborted"), UploadId: ab.UploadId})
	is.NoErr(err)
	_, err = c.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String("mpu"), Key: aws.String("aborted"), UploadId: ab.UploadId})
	is.Equal(code(err), "NoSuchUpload") // aborted
	_, err = c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("aborted"), UploadId: aws.String("not-an-upload")})
	is.Equal(code(err), "NoSuchUpload")

	// UploadPartCopy: a whole object and a range of it.
	pc, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("copied")})
	is.NoErr(err)
	put(t, c, "mpu", "five", parts[0])
	c1, err := c.UploadPartCopy(ctx, &s3.UploadPartCopyInput{Bucket: aws.String("mpu"), Key: aws.String("copied"), UploadId: pc.UploadId,
		PartNumber: aws.Int32(1), CopySource: aws.String("mpu/five")})
	is.NoErr(err)
	c2, err := c.UploadPartCopy(ctx, &s3.UploadPartCopyInput{Bucket: aws.String("mpu"), Key: aws.String("copied"), UploadId: pc.UploadId,
		PartNumber: aws.Int32(2), CopySource: aws.String("mpu/five"), CopySourceRange: aws.String("bytes=100-199")})
	is.NoErr(err)
	is.Equal(*c2.CopyPartResult.ETag, `"`+md5hex(parts[0][100:200])+`"`)
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("copied"), UploadId: pc.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{
			{ETag: c1.CopyPartResult.ETag, PartNumber: aws.Int32(1)}, {ETag: c2.CopyPartResult.ETag, PartNumber: aws.Int32(2)}}}})
	is.NoErr(err)
	is.True(bytes.Equal(get(t, c, "mpu", "copied"), append(slices.Clone(parts[0]), parts[0][100:200]...)))
}

// TestMultipartAnotherGateway: an upload begun through one gateway is
// finished through another (the parts live in dfs).
func TestMultipartAnotherGateway(t *testing.T) {
	is := is.New(t)
	cl := rolestest.Start(t, 3)
	dc := rolestest.Client(t, cl)
	ctx := t.Context()
	parts := [][]byte{randomBytes(5 << 20), randomBytes(100)}

	first, stop := startStoppable(t, dc)
	c := awsClient(first.Endpoint(), testAccess, testSecret)
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("two")})
	is.NoErr(err)
	cr, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("two"), Key: aws.String("k")})
	is.NoErr(err)
	p1 := uploadParts(t, c, "two", "k", *cr.UploadId, parts[:1])
	stop() // the first gateway goes

	second := startGateway(t, dc, nil)
	c = awsClient(second.Endpoint(), testAccess, testSecret)
	out, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("two"), Key: aws.String("k"), UploadId: cr.UploadId, PartNumber: aws.Int32(2),
		Body: bytes.NewReader(parts[1])})
	is.NoErr(err)
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("two"), Key: aws.String("k"), UploadId: cr.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: append(p1, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(2)})}})
	is.NoErr(err) // continued on another gateway
	is.True(bytes.Equal(get(t, c, "two", "k"), bytes.Join(parts, nil)))
}

// startStoppable starts a gateway that the test stops when it wants.
func startStoppable(t *testing.T, dc *client.Client) (*s3gw.Gateway, func()) {
	t.Helper()
	cfg := s3gw.DefaultConfig()
	cfg.Listen = rolestest.FreeAddr(t)
	cfg.Keys = []s3gw.Key{{Access: testAccess, Secret: testSecret}}
	g, err := s3gw.New(cfg, dc, rolestest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("gateway: %v", err)
	}
	var stopped bool
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return g, stop
}

// TestStaleUploadsAborted: uploads older than the max age are removed by
// the sweep; younger ones stay.
func TestStaleUploadsAborted(t *testing.T) {
	is := is.New(t)
	cl := rolestest.Start(t, 3)
	dc := rolestest.Client(t, cl)
	ctx := t.Context()
	clock := clockwork.NewFakeClockAt(time.Now())
	g := startGateway(t, dc, func(cfg *s3gw.Config) {
		cfg.Clock, cfg.MultipartMaxAge = clock, 0 // no sweep: the test calls it
	})
	c := awsClient(g.Endpoint(), testAccess, testSecret)
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("old")})
	is.NoErr(err)
	old, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("old"), Key: aws.String("stale")})
	is.NoErr(err)
	clock.Advance(2 * time.Hour)
	young, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("old"), Key: aws.String("young")})
	is.NoErr(err)

	n, err := g.Backend().AbortStale(ctx, "", time.Hour)
	is.NoErr(err)
	is.Equal(n, 1) // the stale one
	_, err = c.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String("old"), Key: aws.String("stale"), UploadId: old.UploadId})
	is.Equal(code(err), "NoSuchUpload") // aborted
	_, err = c.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String("old"), Key: aws.String("young"), UploadId: young.UploadId})
	is.NoErr(err) // kept
}

// TestAuth: anonymous requests and bad signatures are refused.
func TestAuth(t *testing.T) {
	is := is.New(t)
	g := start(t)
	ctx := t.Context()
	c := awsClient(g.endpoint, testAccess, testSecret)
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("sec")})
	is.NoErr(err)
	put(t, c, "sec", "k", []byte("secret"))

	resp, err := http.Get(g.endpoint + "/sec/k")
	is.NoErr(err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	is.Equal(resp.StatusCode, http.StatusForbidden) // anonymous refused
	is.True(strings.Contains(string(body), "AccessDenied"))

	bad := awsClient(g.endpoint, testAccess, "not-the-secret")
	_, err = bad.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("sec"), Key: aws.String("k")})
	is.Equal(code(err), "SignatureDoesNotMatch") // wrong secret
	unknown := awsClient(g.endpoint, "AKIDUNKNOWN", testSecret)
	_, err = unknown.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("sec"), Key: aws.String("k")})
	is.Equal(code(err), "InvalidAccessKeyId") // unknown key

	// A presigned URL works without credentials of its own.
	ps := s3.NewPresignClient(c)
	req, err := ps.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("sec"), Key: aws.String("k")}, s3.WithPresignExpires(time.Minute))
	is.NoErr(err)
	resp, err = http.Get(req.URL)
	is.NoErr(err)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	is.Equal(resp.StatusCode, http.StatusOK) // presigned
	is.Equal(string(body), "secret")
}

// TestMinio: minio-go's calls, ListObjects{Recursive: true} among them.
func TestMinio(t *testing.T) {
	is := is.New(t)
	g := start(t)
	ctx := t.Context()
	mc, err := minio.New(strings.TrimPrefix(g.endpoint, "http://"), &minio.Options{Creds: mcreds.NewStaticV4(testAccess, testSecret, ""), Region: "us-east-1"})
	is.NoErr(err)
	is.NoErr(mc.MakeBucket(ctx, "mini", minio.MakeBucketOptions{}))
	ok, err := mc.BucketExists(ctx, "mini")
	is.NoErr(err)
	is.True(ok)

	data := randomBytes(200 << 10)
	info, err := mc.PutObject(ctx, "mini", "p/q/r.bin", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{ContentType: "application/x-r",
		UserMetadata: map[string]string{"k": "v"}})
	is.NoErr(err)
	is.Equal(info.ETag, md5hex(data)) // ETag = MD5
	for _, k := range []string{"p/a", "p/q/s", "z"} {
		_, err := mc.PutObject(ctx, "mini", k, strings.NewReader(k), int64(len(k)), minio.PutObjectOptions{})
		is.NoErr(err)
	}
	obj, err := mc.GetObject(ctx, "mini", "p/q/r.bin", minio.GetObjectOptions{})
	is.NoErr(err)
	got, err := io.ReadAll(obj)
	is.NoErr(err)
	is.True(bytes.Equal(got, data))
	st, err := obj.Stat()
	is.NoErr(err)
	is.Equal(st.ContentType, "application/x-r")
	is.Equal(st.UserMetadata["K"], "v")
	obj.Close()

	var keys []string
	for o := range mc.ListObjects(ctx, "mini", minio.ListObjectsOptions{Recursive: true}) {
		is.NoErr(o.Err)
		keys = append(keys, o.Key)
	}
	is.Equal(keys, []string{"p/a", "p/q/r.bin", "p/q/s", "z"}) // recursive
	keys = nil
	for o := range mc.ListObjects(ctx, "mini", minio.ListObjectsOptions{Prefix: "p/"}) {
		is.NoErr(o.Err)
		keys = append(keys, o.Key)
	}
	is.Equal(keys, []string{"p/a", "p/q/"}) // one level

	// A multipart upload through minio-go (parts of 5 MiB).
	big := randomBytes(11 << 20)
	_, err = mc.PutObject(ctx, "mini", "big", bytes.NewReader(big), int64(len(big)), minio.PutObjectOptions{PartSize: 5 << 20})
	is.NoErr(err)
	obj, err = mc.GetObject(ctx, "mini", "big", minio.GetObjectOptions{})
	is.NoErr(err)
	got, err = io.ReadAll(obj)
	obj.Close()
	is.NoErr(err)
	is.True(bytes.Equal(got, big))

	_, err = mc.CopyObject(ctx, minio.CopyDestOptions{Bucket: "mini", Object: "copy"}, minio.CopySrcOptions{Bucket: "mini", Object: "z"})
	is.NoErr(err)
	opts := minio.GetObjectOptions{}
	is.NoErr(opts.SetRange(1, 2))
	obj, err = mc.GetObject(ctx, "mini", "p/q/r.bin", opts)
	is.NoErr(err)
	got, err = io.ReadAll(obj)
	obj.Close()
	is.NoErr(err)
	is.True(bytes.Equal(got, data[1:3])) // range

	is.NoErr(mc.RemoveObject(ctx, "mini", "z", minio.RemoveObjectOptions{}))
	_, err = mc.StatObject(ctx, "mini", "z", minio.StatObjectOptions{})
	is.Equal(minio.ToErrorResponse(err).Code, "NoSuchKey")
	objs := make(chan minio.ObjectInfo, 2)
	objs <- minio.ObjectInfo{Key: "p/a"}
	objs <- minio.ObjectInfo{Key: "copy"}
	close(objs)
	for e := range mc.RemoveObjects(ctx, "mini", objs, minio.RemoveObjectsOptions{}) {
		is.NoErr(e.Err)
	}
	err = mc.RemoveBucket(ctx, "mini")
	is.Equal(minio.ToErrorResponse(err).Code, "BucketNotEmpty")
}

// TestSweep: the gateway's sweep aborts stale uploads by itself.
func TestSweep(t *testing.T) {
	is := is.New(t)
	cl := rolestest.Start(t, 3)
	dc := rolestest.Client(t, cl)
	ctx := t.Context()
	clock := clockwork.NewFakeClockAt(time.Now())
	swept := make(chan int, 10)
	g := startGateway(t, dc, func(cfg *s3gw.Config) {
		cfg.Clock, cfg.MultipartMaxAge, cfg.SweepEvery = clock, time.Hour, time.Minute
		cfg.OnSweep = func(n int, err error) { swept <- n }
	})
	is.Equal(<-swept, 0) // the first sweep, at start
	c := awsClient(g.Endpoint(), testAccess, testSecret)
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("swp")})
	is.NoErr(err)
	old, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("swp"), Key: aws.String("stale")})
	is.NoErr(err)
	is.NoErr(clock.BlockUntilContext(ctx, 1)) // the sweep waits for its ticker
	clock.Advance(2 * time.Hour)
	is.Equal(<-swept, 1) // the stale upload
	_, err = c.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String("swp"), Key: aws.String("stale"), UploadId: old.UploadId})
	is.Equal(code(err), "NoSuchUpload") // aborted
}

// TestSecureUsers: on a secure cluster the gateway (a gateway
// certificate) acts for each key's user: two keys, two users, and one
// cannot read the other's private object.
func TestSecureUsers(t *testing.T) {
	is := is.New(t)
	cl := rolestest.Start(t, 3, rolestest.Secure, rolestest.WithLogLevel(zerolog.WarnLevel))
	admin := rolestest.Client(t, cl)
	ctx := t.Context()
	// The superuser gives each user a bucket, and opens the uploads area.
	for _, u := range []string{"alice", "bob"} {
		is.NoErr(admin.Mkdir(ctx, "/"+u+"-data"))
		is.NoErr(admin.Chown(ctx, "/"+u+"-data", u, ""))
		is.NoErr(admin.Chmod(ctx, "/"+u+"-data", 0o700))
	}
	is.NoErr(admin.MkdirAll(ctx, "/.s3/multipart"))
	is.NoErr(admin.Chmod(ctx, "/.s3/multipart", 0o777|fs.ModeSticky))

	gc := rolestest.GatewayClient(t, cl, "s3gw")
	g := startGateway(t, gc, func(cfg *s3gw.Config) {
		cfg.Keys = []s3gw.Key{{Access: "AKIDALICE", Secret: "alice-secret", User: "alice"}, {Access: "AKIDBOB", Secret: "bob-secret-key", User: "bob"}}
	})
	alice := awsClient(g.Endpoint(), "AKIDALICE", "alice-secret")
	bob := awsClient(g.Endpoint(), "AKIDBOB", "bob-secret-key")

	put(t, alice, "alice-data", "private.txt", []byte("alice's"))
	fi, err := admin.Stat(ctx, "/alice-data/private.txt")
	is.NoErr(err)
	is.Equal(fi.Owner, "alice") // written as alice
	is.Equal(string(get(t, alice, "alice-data", "private.txt")), "alice's")

	_, err = bob.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("alice-data"), Key: aws.String("private.txt")})
	is.Equal(code(err), "AccessDenied") // bob may not read it
	_, err = bob.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("alice-data"), Key: aws.String("x"), Body: strings.NewReader("x")})
	is.Equal(code(err), "AccessDenied") // nor write there
	_, err = bob.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("alice-data")})
	is.Equal(code(err), "AccessDenied") // nor list
	put(t, bob, "bob-data", "mine", []byte("bob's"))
	_, err = alice.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bob-data"), Key: aws.String("mine")})
	is.Equal(code(err), "AccessDenied") // and the other way round

	_, err = alice.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("alice-new")})
	is.Equal(code(err), "AccessDenied") // only a superuser makes top-level directories

	// A multipart upload as alice, in her bucket.
	cr, err := alice.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("alice-data"), Key: aws.String("mp")})
	is.NoErr(err)
	parts := uploadParts(t, alice, "alice-data", "mp", *cr.UploadId, [][]byte{[]byte("one part")})
	_, err = bob.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String("alice-data"), Key: aws.String("mp"), UploadId: cr.UploadId})
	is.True(err != nil) // not bob's
	_, err = alice.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("alice-data"), Key: aws.String("mp"), UploadId: cr.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	is.NoErr(err)
	is.Equal(string(get(t, alice, "alice-data", "mp")), "one part")
	fi, err = admin.Stat(ctx, "/alice-data/mp")
	is.NoErr(err)
	is.Equal(fi.Owner, "alice")
}

// signed returns a request signed as the test key at t.
func signed(tb testing.TB, method, url string, body []byte, at time.Time) *http.Request {
	tb.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", hash)
	m := md5.Sum(body)
	req.Header.Set("Content-Md5", base64.StdEncoding.EncodeToString(m[:]))
	err = v4.NewSigner().SignHTTP(tb.Context(), aws.Credentials{AccessKeyID: testAccess, SecretAccessKey: testSecret}, req, hash, "s3", "us-east-1", at)
	if err != nil {
		tb.Fatal(err)
	}
	return req
}

// send sends req and returns the status and the body.
func send(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestBadInput: malformed XML, clock skew, oversized headers and a client
// that goes away mid-upload each get the error a client expects, and
// nothing half-written becomes visible.
func TestBadInput(t *testing.T) {
	is := is.New(t)
	g, c := startBucket(t, "bad")
	ctx := t.Context()
	var err error
	old := put(t, c, "bad", "k", []byte("old content"))

	status, body := send(t, signed(t, "POST", g.endpoint+"/bad?delete", []byte("<Delete><Object><Key>k</Key>"), time.Now()))
	is.Equal(status, http.StatusBadRequest) // malformed XML
	// versitygw answers InvalidRequest here, S3 MalformedXML.
	is.True(strings.Contains(body, "MalformedXML") || strings.Contains(body, "<Code>InvalidRequest</Code>"))
	cr, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("bad"), Key: aws.String("mp")})
	is.NoErr(err)
	status, body = send(t, signed(t, "POST", g.endpoint+"/bad/mp?uploadId="+*cr.UploadId, []byte("<CompleteMultipartUpload><Part>"), time.Now()))
	is.Equal(status, http.StatusBadRequest) // malformed XML
	if !strings.Contains(body, "MalformedXML") {
		t.Errorf("malformed XML: %d %s", status, body)
	}

	status, body = send(t, signed(t, "GET", g.endpoint+"/bad/k", nil, time.Now().Add(-time.Hour)))
	is.Equal(status, http.StatusForbidden) // an hour off
	is.True(strings.Contains(body, "RequestTimeTooSkewed"))

	req := signed(t, "GET", g.endpoint+"/bad/k", nil, time.Now())
	req.Header.Set("X-Big", strings.Repeat("h", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		is.True(resp.StatusCode >= 400) // oversized headers refused
		resp.Body.Close()
	}

	// A client that sends half its body and goes away.
	body2 := randomBytes(1 << 20)
	req = signedUnsigned(t, g.endpoint+"/bad/k")
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.endpoint, "http://"))
	is.NoErr(err)
	var head strings.Builder
	fmt.Fprintf(&head, "PUT /bad/k HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", req.Host, len(body2))
	for k, vs := range req.Header {
		fmt.Fprintf(&head, "%s: %s\r\n", k, vs[0])
	}
	head.WriteString("\r\n")
	_, err = conn.Write([]byte(head.String()))
	is.NoErr(err)
	_, err = conn.Write(body2[:300<<10])
	is.NoErr(err)
	is.NoErr(conn.Close())
	h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bad"), Key: aws.String("k")})
	is.NoErr(err)
	is.Equal(*h.ETag, *old.ETag) // the old version stays
	is.Equal(string(get(t, c, "bad", "k")), "old content")
	put(t, c, "bad", "k", body2)
	is.True(bytes.Equal(get(t, c, "bad", "k"), body2)) // the gateway serves on
}

// signedUnsigned returns a PUT of url signed with an unsigned payload.
func signedUnsigned(tb testing.TB, url string) *http.Request {
	tb.Helper()
	req, err := http.NewRequest("PUT", url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	if err := v4.NewSigner().SignHTTP(tb.Context(), aws.Credentials{AccessKeyID: testAccess, SecretAccessKey: testSecret}, req, "UNSIGNED-PAYLOAD", "s3", "us-east-1", time.Now()); err != nil {
		tb.Fatal(err)
	}
	return req
}

// TestMultipartUnevenParts: parts of different sizes cannot share their
// chunks (Concat needs one chunk size): the object is still made, copied.
func TestMultipartUnevenParts(t *testing.T) {
	is := is.New(t)
	_, c := startBucket(t, "uneven")
	ctx := t.Context()
	var err error
	parts := [][]byte{randomBytes(6 << 20), randomBytes(5 << 20), randomBytes(10)}
	cr, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("uneven"), Key: aws.String("k")})
	is.NoErr(err)
	done := uploadParts(t, c, "uneven", "k", *cr.UploadId, parts)
	cm, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("uneven"), Key: aws.String("k"), UploadId: cr.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done}})
	is.NoErr(err)
	is.Equal(*cm.ETag, multipartETag(parts))
	is.True(bytes.Equal(get(t, c, "uneven", "k"), bytes.Join(parts, nil)))
	h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("uneven"), Key: aws.String("k")})
	is.NoErr(err)
	is.Equal(*h.ETag, multipartETag(parts))
}

// TestVirtualHost: with a domain, <bucket>.<domain> addresses the bucket.
func TestVirtualHost(t *testing.T) {
	is := is.New(t)
	cl := rolestest.Start(t, 3, rolestest.WithLogLevel(zerolog.WarnLevel))
	dc := rolestest.Client(t, cl)
	g := startGateway(t, dc, func(cfg *s3gw.Config) { cfg.VirtualDomain = "s3.test" })
	addr := strings.TrimPrefix(g.Endpoint(), "http://")
	_, port, _ := net.SplitHostPort(addr)
	dial := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr) // every name is the gateway
	}}
	c := s3.New(s3.Options{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(testAccess, testSecret, ""),
		BaseEndpoint: aws.String("http://s3.test:" + port), UsePathStyle: false, HTTPClient: &http.Client{Transport: dial}})
	ctx := t.Context()
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("vhost")})
	is.NoErr(err)
	put(t, c, "vhost", "a/b", []byte("virtual"))
	is.Equal(string(get(t, c, "vhost", "a/b")), "virtual") // virtual-host style
	fi, err := dc.Stat(ctx, "/vhost/a/b")
	is.NoErr(err)
	is.Equal(fi.Size, int64(7))
	path := awsClient(g.Endpoint(), testAccess, testSecret)
	is.Equal(string(get(t, path, "vhost", "a/b")), "virtual") // path style too
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key,
// and returns their paths and a pool that trusts it.
func selfSigned(t *testing.T) (cert, key string, pool *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "s3 test"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "s3.crt"), filepath.Join(dir, "s3.key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(parsed)
	return cert, key, pool
}

// TestHTTPS: with a certificate the gateway serves S3 over HTTPS.
func TestHTTPS(t *testing.T) {
	is := is.New(t)
	cl := rolestest.Start(t, 3, rolestest.WithLogLevel(zerolog.WarnLevel))
	dc := rolestest.Client(t, cl)
	cert, key, pool := selfSigned(t)
	g := startGateway(t, dc, func(cfg *s3gw.Config) { cfg.CertFile, cfg.KeyFile = cert, key })
	is.True(strings.HasPrefix(g.Endpoint(), "https://"))
	c := s3.New(s3.Options{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(testAccess, testSecret, ""),
		BaseEndpoint: aws.String(g.Endpoint()), UsePathStyle: true,
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}})
	ctx := t.Context()
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("tls")})
	is.NoErr(err)
	put(t, c, "tls", "k", []byte("over https"))
	is.Equal(string(get(t, c, "tls", "k")), "over https")
}

// TestChecksumsAndRetries: x-amz-checksum-* headers are checked (a wrong
// one stores nothing) and returned; a copy onto itself replaces the
// metadata; a Complete retried after it succeeded succeeds; a conditional
// delete checks the ETag.
func TestChecksumsAndRetries(t *testing.T) {
	is := is.New(t)
	_, c := startBucket(t, "sums")
	ctx := t.Context()
	var err error

	data := []byte("checksummed bytes")
	sum := sha256.Sum256(data)
	good := base64.StdEncoding.EncodeToString(sum[:])
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("sums"), Key: aws.String("k"), Body: bytes.NewReader(data), ChecksumSHA256: aws.String(good)})
	is.NoErr(err) // the right SHA-256
	bad := base64.StdEncoding.EncodeToString(make([]byte, 32))
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("sums"), Key: aws.String("k"), Body: strings.NewReader("other bytes"), ChecksumSHA256: aws.String(bad)})
	is.Equal(code(err), "BadDigest")                       // a wrong one
	is.Equal(string(get(t, c, "sums", "k")), string(data)) // nothing stored
	h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("sums"), Key: aws.String("k"), ChecksumMode: types.ChecksumModeEnabled})
	is.NoErr(err)
	is.Equal(*h.ChecksumSHA256, good) // returned

	// Copy onto itself with new metadata.
	_, err = c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String("sums"), Key: aws.String("k"), CopySource: aws.String("sums/k"),
		MetadataDirective: types.MetadataDirectiveReplace, ContentType: aws.String("text/x-new")})
	is.NoErr(err)
	h, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("sums"), Key: aws.String("k")})
	is.NoErr(err)
	is.Equal(*h.ContentType, "text/x-new") // replaced
	is.Equal(string(get(t, c, "sums", "k")), string(data))
	_, err = c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String("sums"), Key: aws.String("k"), CopySource: aws.String("sums/k")})
	is.True(err != nil) // onto itself without a change: refused, as by S3

	// A Complete retried.
	cr, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("sums"), Key: aws.String("mp")})
	is.NoErr(err)
	parts := uploadParts(t, c, "sums", "mp", *cr.UploadId, [][]byte{[]byte("only part")})
	in := &s3.CompleteMultipartUploadInput{Bucket: aws.String("sums"), Key: aws.String("mp"), UploadId: cr.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}}
	first, err := c.CompleteMultipartUpload(ctx, in)
	is.NoErr(err)
	again, err := c.CompleteMultipartUpload(ctx, in)
	is.NoErr(err) // the same answer
	is.Equal(*again.ETag, *first.ETag)

	// A conditional delete.
	_, err = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("sums"), Key: aws.String("mp"), IfMatch: aws.String(`"0000"`)})
	is.Equal(code(err), "PreconditionFailed")
	_, err = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("sums"), Key: aws.String("mp"), IfMatch: first.ETag})
	is.NoErr(err)
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("sums"), Key: aws.String("mp")})
	is.True(err != nil) // deleted
}
