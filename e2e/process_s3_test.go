package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/rolestest"
)

const (
	procS3Access = "AKIDFSPROC"
	procS3Secret = "dfs-proc-secret-key"
)

// startS3 starts a `dfs s3` process named name against c and waits until
// it answers HTTP; it returns its endpoint and process.
func (c *procCluster) startS3(name string) (string, *serverProc) {
	c.t.Helper()
	addr := rolestest.FreeAddr(c.t)
	p := c.start(name, "s3", "--listen", addr, "--coordinator", c.coord, "--access-key", procS3Access, "--secret-key", procS3Secret)
	endpoint := "http://" + addr
	pollUntil(c.t, name+" serves S3", func() (bool, string) {
		c.alive()
		resp, err := http.Get(endpoint + "/")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusForbidden, resp.Status // anonymous: refused, so serving
	})
	return endpoint, p
}

// procS3Client is an aws-sdk-go-v2 client of the gateway at endpoint.
func procS3Client(endpoint string) *s3.Client {
	return s3.New(s3.Options{
		Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(procS3Access, procS3Secret, ""),
		BaseEndpoint: aws.String(endpoint), UsePathStyle: true, HTTPClient: &http.Client{Timeout: time.Minute},
	})
}

// stallingReader gives n bytes of data, but after the first half it
// signals half and blocks until ctx ends.
type stallingReader struct {
	ctx  context.Context
	data []byte
	off  int
	half chan struct{}
}

func (r *stallingReader) Read(p []byte) (int, error) {
	if r.off >= len(r.data)/2 {
		select {
		case <-r.half:
		default:
			close(r.half)
		}
		<-r.ctx.Done()
		return 0, r.ctx.Err()
	}
	n := copy(p, r.data[r.off:len(r.data)/2])
	r.off += n
	return n, nil
}

// TestProcessS3 kills -9 the S3 gateway in the middle of a multipart
// upload, which a restarted gateway (on another address) continues and
// completes, and in the middle of a PutObject, after which the object's
// previous version, or nothing, is what any gateway shows.
func TestProcessS3(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	is := is.New(t)
	ctx := t.Context()
	bin := buildDFSBinary(t)
	c := startProcCluster(t, bin, procClusterConfig{nodes: 3, suspectAfter: 5 * time.Second, deadAfter: 10 * time.Second})
	endpoint, gw := c.startS3("s3-1")
	s := procS3Client(endpoint)
	bucket := "kill"
	_, err := s.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket})
	is.NoErr(err)

	// Mid-multipart: part 1 through the first gateway, which dies.
	data := procTestData(11<<20, "s3-multipart")
	key := "big/object"
	mp, err := s.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: &key})
	is.NoErr(err)
	p1, err := s.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: &key, UploadId: mp.UploadId, PartNumber: aws.Int32(1),
		Body: bytes.NewReader(data[:6<<20])})
	is.NoErr(err)
	c.kill(gw)

	endpoint, gw = c.startS3("s3-2")
	s = procS3Client(endpoint)
	p2, err := s.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: &key, UploadId: mp.UploadId, PartNumber: aws.Int32(2),
		Body: bytes.NewReader(data[6<<20:])})
	is.NoErr(err) // the upload goes on through another gateway
	parts, err := s.ListParts(ctx, &s3.ListPartsInput{Bucket: &bucket, Key: &key, UploadId: mp.UploadId})
	is.NoErr(err)
	is.Equal(len(parts.Parts), 2) // the part sent to the dead gateway is there
	_, err = s.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: &key, UploadId: mp.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{
			{PartNumber: aws.Int32(1), ETag: p1.ETag}, {PartNumber: aws.Int32(2), ETag: p2.ETag}}}})
	is.NoErr(err)
	is.True(bytes.Equal(procS3Get(t, s, bucket, key), data)) // whole, in order

	// Mid-PutObject: over an old version, and of a new key.
	old := procTestData(1<<20, "s3-old")
	_, err = s.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("obj"), Body: bytes.NewReader(old)})
	is.NoErr(err)
	presign := s3.NewPresignClient(s)
	for _, k := range []string{"obj", "fresh"} {
		req, err := presign.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String(k)})
		is.NoErr(err)
		body := &stallingReader{ctx: ctx, data: procTestData(24<<20, "s3-new-"+k), half: make(chan struct{})}
		putCtx, cancel := context.WithCancel(ctx)
		body.ctx = putCtx
		hreq, err := http.NewRequestWithContext(putCtx, http.MethodPut, req.URL, body)
		is.NoErr(err)
		hreq.ContentLength = int64(len(body.data))
		done := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(hreq)
			if err == nil {
				resp.Body.Close()
				err = fmt.Errorf("the put was answered %s", resp.Status)
			}
			done <- err
		}()
		<-body.half // half the object is in the gateway
		c.kill(gw)
		cancel()
		is.True(<-done != nil) // the put failed

		endpoint, gw = c.startS3(fmt.Sprintf("s3-%s", k))
		s = procS3Client(endpoint)
		presign = s3.NewPresignClient(s)
	}
	is.True(bytes.Equal(procS3Get(t, s, bucket, "obj"), old)) // the old version stays
	_, err = s.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: aws.String("fresh")})
	var nf *types.NotFound
	is.True(errors.As(err, &nf)) // and no half of the new one
	list, err := s.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket})
	is.NoErr(err)
	var keys []string
	for _, o := range list.Contents {
		keys = append(keys, *o.Key)
	}
	is.Equal(keys, []string{"big/object", "obj"}) // nothing half-written is listed
}

// procS3Get reads a whole object.
func procS3Get(t *testing.T, s *s3.Client, bucket, key string) []byte {
	t.Helper()
	out, err := s.GetObject(t.Context(), &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("read %s/%s: %v", bucket, key, err)
	}
	return b
}
