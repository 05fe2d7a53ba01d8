package s3gw_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/matryer/is"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/roles/s3gw"
)

const (
	testAccess = "AKIDFSTEST"
	testSecret = "dfs-test-secret-key"
)

// gw is a running gateway of a test cluster.
type gw struct {
	cluster  *roles.Cluster
	dfs      *client.Client // the cluster's superuser (or plain) client
	endpoint string
	gateway  *s3gw.Gateway
}

// startGateway runs a gateway over the cluster's client c with cfg
// adjusted by tune; it stops when the test ends (one gateway per process
// at a time: tests here do not run in parallel).
func startGateway(t *testing.T, c *client.Client, tune func(*s3gw.Config)) *s3gw.Gateway {
	t.Helper()
	for attempt := 0; ; attempt++ {
		cfg := s3gw.DefaultConfig()
		cfg.Listen = rolestest.FreeAddr(t)
		cfg.Keys = []s3gw.Key{{Access: testAccess, Secret: testSecret}}
		if tune != nil {
			tune(&cfg)
		}
		g, err := s3gw.New(cfg, c, rolestest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- g.Run(ctx) }()
		select {
		case <-g.Ready():
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("gateway run: %v", err)
				}
			})
			return g
		case err := <-done:
			cancel()
			if attempt < 5 && err != nil && strings.Contains(err.Error(), "bind") {
				continue // the port was taken meanwhile
			}
			t.Fatalf("gateway did not start: %v", err)
		}
	}
}

// start starts a cluster of 3 datanodes and a gateway on it.
func start(t *testing.T, opts ...rolestest.Option) *gw {
	t.Helper()
	c := rolestest.Start(t, 3, append([]rolestest.Option{rolestest.WithLogLevel(zerolog.WarnLevel)}, opts...)...)
	dc := rolestest.Client(t, c)
	g := startGateway(t, dc, nil)
	return &gw{cluster: c, dfs: dc, endpoint: g.Endpoint(), gateway: g}
}

// startBucket starts a cluster and a gateway (as start does) and makes
// bucket there; it returns the gateway and an aws-sdk-go-v2 client of it.
func startBucket(t *testing.T, bucket string) (*gw, *s3.Client) {
	t.Helper()
	g := start(t)
	c := awsClient(g.endpoint, testAccess, testSecret)
	if _, err := c.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	return g, c
}

// awsClient is an aws-sdk-go-v2 S3 client of the gateway at endpoint.
func awsClient(endpoint, access, secret string) *s3.Client {
	return s3.New(s3.Options{
		Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(access, secret, ""),
		BaseEndpoint: aws.String(endpoint), UsePathStyle: true, HTTPClient: &http.Client{Timeout: 2 * time.Minute},
	})
}

// code returns the S3 error code of err, or "".
func code(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

func get(t *testing.T, c *s3.Client, bucket, key string) []byte {
	t.Helper()
	out, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: &bucket, Key: &key})
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

func put(t *testing.T, c *s3.Client, bucket, key string, data []byte) *s3.PutObjectOutput {
	t.Helper()
	out, err := c.PutObject(t.Context(), &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(data)})
	if err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
	return out
}

// TestBuckets: create, head, list, location, delete only when empty;
// invalid names refused.
func TestBuckets(t *testing.T) {
	is := is.New(t)
	g := start(t)
	c := awsClient(g.endpoint, testAccess, testSecret)
	ctx := t.Context()

	for _, b := range []string{"alpha", "beta"} {
		_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)})
		is.NoErr(err) // create
	}
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("alpha")})
	is.Equal(code(err), "BucketAlreadyOwnedByYou") // twice
	fi, err := g.dfs.Stat(ctx, "/alpha")
	is.NoErr(err)
	is.True(fi.IsDir) // a bucket is a top-level directory

	_, err = c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("alpha")})
	is.NoErr(err) // head
	_, err = c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("nope")})
	is.True(err != nil) // head of a missing bucket

	// A top-level file or dot-directory is no bucket.
	_, err = g.dfs.Put(ctx, "/toplevel.txt", strings.NewReader("x"), 1, nil)
	is.NoErr(err)
	is.NoErr(g.dfs.MkdirAll(ctx, "/.hidden"))
	lb, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
	is.NoErr(err)
	var names []string
	for _, b := range lb.Buckets {
		names = append(names, *b.Name)
	}
	is.Equal(names, []string{"alpha", "beta"}) // list

	loc, err := c.GetBucketLocation(ctx, &s3.GetBucketLocationInput{Bucket: aws.String("alpha")})
	is.NoErr(err) // location
	is.True(loc.LocationConstraint == "" || loc.LocationConstraint == "us-east-1")

	_, err = c.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String("alpha")})
	is.NoErr(err) // versioning: never enabled
	_, err = c.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: aws.String("alpha")})
	is.Equal(code(err), "NoSuchBucketPolicy")

	put(t, c, "alpha", "k", []byte("v"))
	_, err = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String("alpha")})
	is.Equal(code(err), "BucketNotEmpty") // only empty
	_, err = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("alpha"), Key: aws.String("k")})
	is.NoErr(err)
	_, err = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String("alpha")})
	is.NoErr(err) // empty: deleted
	_, err = c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("alpha")})
	is.True(err != nil) // gone
	_, err = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String("alpha")})
	is.Equal(code(err), "NoSuchBucket")

	for _, bad := range []string{"UPPER", "a_b", "ab", "-lead", "x..y"} {
		_, err = c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bad)})
		if code(err) != "InvalidBucketName" {
			t.Errorf("bucket %q: %v", bad, err)
		}
	}
}

// TestObjects: put, get, head, delete; ETag is the MD5; metadata round
// trip; ranges; bad keys.
func TestObjects(t *testing.T) {
	is := is.New(t)
	g, c := startBucket(t, "bkt")
	ctx := t.Context()
	var err error

	data := randomBytes(300<<10 + 17) // several 64 KiB chunks
	out, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/sub/obj.bin"), Body: bytes.NewReader(data),
		ContentType: aws.String("application/x-test"), ContentEncoding: aws.String("identity"), CacheControl: aws.String("max-age=60"),
		Metadata: map[string]string{"color": "blue", "Shape": "round"}})
	is.NoErr(err)
	is.Equal(*out.ETag, `"`+md5hex(data)+`"`) // ETag = MD5

	got := get(t, c, "bkt", "dir/sub/obj.bin")
	is.True(bytes.Equal(got, data)) // same bytes back
	back, err := g.dfs.Head(ctx, "/bkt/dir/sub/obj.bin")
	is.NoErr(err)
	is.Equal(back.Size, int64(len(data))) // a dfs file at /<bucket>/<key>

	h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/sub/obj.bin")})
	is.NoErr(err)
	is.Equal(*h.ContentLength, int64(len(data)))
	is.Equal(*h.ETag, `"`+md5hex(data)+`"`)
	is.Equal(*h.ContentType, "application/x-test")
	is.Equal(*h.ContentEncoding, "identity")
	is.Equal(*h.CacheControl, "max-age=60")
	is.Equal(h.Metadata, map[string]string{"color": "blue", "shape": "round"}) // x-amz-meta-* round trip

	// Ranges.
	for _, r := range []struct {
		spec       string
		start, end int
	}{{"bytes=0-0", 0, 1}, {"bytes=70000-140000", 70000, 140001}, {"bytes=-100", len(data) - 100, len(data)}, {"bytes=300000-", 300000, len(data)}} {
		ro, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/sub/obj.bin"), Range: aws.String(r.spec)})
		is.NoErr(err)
		b, err := io.ReadAll(ro.Body)
		ro.Body.Close()
		is.NoErr(err)
		is.True(bytes.Equal(b, data[r.start:r.end])) // the range's bytes
		is.Equal(*ro.ContentRange, fmt.Sprintf("bytes %d-%d/%d", r.start, r.end-1, len(data)))
	}
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/sub/obj.bin"), Range: aws.String("bytes=999999999-")})
	is.Equal(code(err), "InvalidRange") // past the end

	// Missing keys and buckets.
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("nope")})
	is.Equal(code(err), "NoSuchKey")
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/sub")})
	is.Equal(code(err), "NoSuchKey") // a directory is not an object
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("nobucket"), Key: aws.String("k")})
	is.Equal(code(err), "NoSuchBucket")
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("nobucket"), Key: aws.String("k"), Body: strings.NewReader("x")})
	is.Equal(code(err), "NoSuchBucket")

	// Keys that cannot map.
	for _, bad := range []string{"a//b", "a/./b", "a/../b", strings.Repeat("n", 256), "x/" + strings.Repeat("y", 1100)} {
		_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String(bad), Body: strings.NewReader("x")})
		is.True(err != nil) // refused
		is.True(code(err) == "InvalidArgument" || code(err) == "KeyTooLongError")
	}

	// An empty object, a directory marker.
	put(t, c, "bkt", "empty", nil)
	is.Equal(len(get(t, c, "bkt", "empty")), 0)
	mk := put(t, c, "bkt", "folder/", nil)
	is.Equal(*mk.ETag, `"d41d8cd98f00b204e9800998ecf8427e"`)
	fi, err := g.dfs.Stat(ctx, "/bkt/folder")
	is.NoErr(err)
	is.True(fi.IsDir) // a key ending in / is a directory
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("folder/")})
	is.NoErr(err)

	// A file in the way of a key, a directory in the way of an object.
	put(t, c, "bkt", "file", []byte("f"))
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("file/below")})
	is.Equal(code(err), "NoSuchKey") // below a file
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("file/below")})
	is.True(err != nil)
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("file/below"), Body: strings.NewReader("x")})
	is.Equal(code(err), "ObjectParentIsFile") // dfs cannot hold a key below an object
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir"), Body: strings.NewReader("x")})
	is.Equal(code(err), "ExistingObjectIsDirectory") // nor an object where keys lie below
	_, err = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("bkt"), Key: aws.String("file/below")})
	is.NoErr(err) // nothing to delete

	// Overwrite, then delete.
	put(t, c, "bkt", "dir/sub/obj.bin", []byte("short"))
	is.Equal(string(get(t, c, "bkt", "dir/sub/obj.bin")), "short")
	_, err = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/sub/obj.bin")})
	is.NoErr(err)
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/sub/obj.bin")})
	is.True(err != nil) // gone
	_, err = g.dfs.Stat(ctx, "/bkt/dir")
	is.True(errors.Is(err, fs.ErrNotExist)) // empty parents removed
	_, err = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("bkt"), Key: aws.String("never")})
	is.NoErr(err) // deleting a missing key is no error

	// DeleteObjects.
	for _, k := range []string{"m/1", "m/2", "m/3"} {
		put(t, c, "bkt", k, []byte(k))
	}
	do, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String("bkt"), Delete: &types.Delete{Objects: []types.ObjectIdentifier{
		{Key: aws.String("m/1")}, {Key: aws.String("m/2")}, {Key: aws.String("a//b")}}}})
	is.NoErr(err)
	is.Equal(len(do.Deleted), 2) // two deleted
	is.Equal(len(do.Errors), 1)  // the bad key reported
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("m/3")})
	is.NoErr(err) // the others stay
}
