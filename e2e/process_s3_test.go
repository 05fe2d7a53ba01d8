package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
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
	procS3Access = "AKIDPROCESS"
	procS3Secret = "process-secret-key"
)

// startS3 starts (or restarts) a gateway process on addr and waits until
// it answers.
func (c *procCluster) startS3(addr string) *serverProc {
	c.t.Helper()
	p := c.start("s3", "s3", "--coordinator", c.coord, "--listen", addr, "--access-key", procS3Access, "--secret-key", procS3Secret)
	s := procS3Client(addr, 0)
	pollUntil(c.t, "the S3 gateway answers", func() (bool, string) {
		c.alive()
		_, err := s.ListBuckets(c.t.Context(), &s3.ListBucketsInput{})
		return err == nil, errString(err)
	})
	return p
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// procS3Client is an S3 client of the gateway at addr; attempts 0 keeps
// the SDK's retries.
func procS3Client(addr string, attempts int) *s3.Client {
	return s3.New(s3.Options{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(procS3Access, procS3Secret, ""),
		BaseEndpoint: aws.String("http://" + addr), UsePathStyle: true, HTTPClient: &http.Client{Timeout: procTransferTimeout},
		RetryMaxAttempts: attempts})
}

// TestProcessS3 kills -9 the gateway process in the middle of a multipart
// upload, which a restarted gateway then completes, and in the middle of
// a PutObject, after which the old version, whole, is what is read.
func TestProcessS3(t *testing.T) {
	if testing.Short() {
		t.Skip("process tests build the dfs binary and start processes; skipped with -short")
	}
	is := is.New(t)
	bin := buildDFSBinary(t)
	c := startProcCluster(t, bin, procClusterConfig{nodes: 3, suspectAfter: 5 * time.Second, deadAfter: 10 * time.Second})
	addr := rolestest.FreeAddr(t)
	gw := c.startS3(addr)
	s := procS3Client(addr, 0)
	ctx := t.Context()
	_, err := s.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("proc")})
	is.NoErr(err)

	// Kill -9 mid-multipart: the upload goes on through a new gateway.
	parts := [][]byte{procTestData(5<<20, "part1"), procTestData(5<<20, "part2"), procTestData(123, "part3")}
	cr, err := s.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("proc"), Key: aws.String("mp/object")})
	is.NoErr(err)
	var done []types.CompletedPart
	up, err := s.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("proc"), Key: aws.String("mp/object"), UploadId: cr.UploadId,
		PartNumber: aws.Int32(1), Body: bytes.NewReader(parts[0])})
	is.NoErr(err)
	done = append(done, types.CompletedPart{ETag: up.ETag, PartNumber: aws.Int32(1)})
	c.kill(gw)
	gw = c.startS3(addr)
	for i, p := range parts[1:] {
		up, err := s.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("proc"), Key: aws.String("mp/object"), UploadId: cr.UploadId,
			PartNumber: aws.Int32(int32(i + 2)), Body: bytes.NewReader(p)})
		is.NoErr(err) // the upload survived the gateway
		done = append(done, types.CompletedPart{ETag: up.ETag, PartNumber: aws.Int32(int32(i + 2))})
	}
	_, err = s.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("proc"), Key: aws.String("mp/object"), UploadId: cr.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done}})
	is.NoErr(err)
	is.True(bytes.Equal(procS3Get(t, s, "proc", "mp/object"), bytes.Join(parts, nil))) // every part, in order

	// Kill -9 mid-PutObject: the old version stays, whole.
	old := procTestData(200<<10, "old")
	_, err = s.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("proc"), Key: aws.String("k"), Body: bytes.NewReader(old)})
	is.NoErr(err)
	body := &stallingReader{data: procTestData(8<<20, "new"), stallAt: 3 << 20, stalled: make(chan struct{}), release: make(chan struct{})}
	defer body.unblock()
	once := procS3Client(addr, 1) // no retry: the request is cut off
	putErr := make(chan error, 1)
	go func() {
		_, err := once.PutObject(context.WithoutCancel(ctx), &s3.PutObjectInput{Bucket: aws.String("proc"), Key: aws.String("k"),
			Body: body, ContentLength: aws.Int64(int64(len(body.data)))})
		putErr <- err
	}()
	select {
	case <-body.stalled: // 3 MiB sent, 5 to go
	case err := <-putErr:
		t.Fatalf("the put ended before it stalled: %v", err)
	}
	c.kill(gw)
	body.unblock()
	is.True(<-putErr != nil) // the put failed with its gateway
	c.startS3(addr)
	is.True(bytes.Equal(procS3Get(t, s, "proc", "k"), old)) // the old version, whole
	h, err := s.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("proc"), Key: aws.String("k")})
	is.NoErr(err)
	is.Equal(*h.ContentLength, int64(len(old)))
}

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

// stallingReader gives data up to stallAt, then tells stalled and waits
// for release before it gives the rest.
type stallingReader struct {
	data     []byte
	off      int
	stallAt  int
	stalled  chan struct{}
	release  chan struct{}
	once     sync.Once
	unblockd sync.Once
}

func (r *stallingReader) Read(p []byte) (int, error) {
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	if r.off >= r.stallAt {
		r.once.Do(func() { close(r.stalled) })
		<-r.release
		return 0, errors.New("stalled reader released: the test cut the request off")
	}
	n := copy(p, r.data[r.off:min(len(r.data), r.stallAt)])
	r.off += n
	return n, nil
}

func (r *stallingReader) unblock() { r.unblockd.Do(func() { close(r.release) }) }
