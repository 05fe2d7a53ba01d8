package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/rolestest"
)

// lineWriter collects output and tells when a line matching re came.
type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	re   *regexp.Regexp
	seen chan []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if m := w.re.FindStringSubmatch(w.buf.String()); m != nil && w.seen != nil {
		w.seen <- m
		w.seen = nil
	}
	return len(p), nil
}

// runServer runs the command line args until the test ends; it returns
// the submatches of the first output matching re.
func runServer(t *testing.T, re string, args ...string) []string {
	t.Helper()
	return runServerLogging(t, io.Discard, re, args...)
}

// runServerLogging is runServer with the logs written to logw.
func runServerLogging(t *testing.T, logw io.Writer, re string, args ...string) []string {
	t.Helper()
	seen := make(chan []string, 1)
	out := &lineWriter{re: regexp.MustCompile(re), seen: seen}
	app := App(Version{}, IO{In: strings.NewReader(""), Out: out, Err: out}, logw)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- app.RunContext(ctx, append([]string{"dfs"}, args...)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dfs %s: %v", args[0], err)
		}
	})
	select {
	case m := <-seen:
		return m
	case err := <-done:
		t.Fatalf("dfs %s ended: %v", args[0], err)
	case <-time.After(rolestest.WaitFor):
		t.Fatalf("dfs %s: no %q in its output", args[0], re)
	}
	return nil
}

func s3Client(endpoint, access, secret string) *s3.Client {
	return s3.New(s3.Options{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(access, secret, ""),
		BaseEndpoint: aws.String(endpoint), UsePathStyle: true, HTTPClient: &http.Client{Timeout: time.Minute}})
}

// TestS3Command: dfs s3 serves a cluster with keys from flags and --keys.
func TestS3Command(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 3)
	listen := rolestest.FreeAddr(t)
	// The second key comes from the config file, as a list.
	conf := filepath.Join(t.TempDir(), "s3.yaml")
	is.NoErr(os.WriteFile(conf, []byte("secret-key: secret-one\nkeys: [\"AKIDTWO:secret-two:bob\"]\n"), 0o600))
	m := runServer(t, `serving (http://\S+)`, "--config", conf, "s3", "--coordinator", c.Addr(), "--listen", listen, "--access-key", "AKIDONE")
	is.Equal(m[1], "http://"+listen) // prints its endpoint
	ctx := t.Context()
	one := s3Client(m[1], "AKIDONE", "secret-one")
	_, err := one.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("cli")})
	is.NoErr(err)
	_, err = one.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("cli"), Key: aws.String("k"), Body: strings.NewReader("hello")})
	is.NoErr(err)
	two := s3Client(m[1], "AKIDTWO", "secret-two")
	out, err := two.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("cli"), Key: aws.String("k")})
	is.NoErr(err) // the second key works too
	b, err := io.ReadAll(out.Body)
	out.Body.Close()
	is.NoErr(err)
	is.Equal(string(b), "hello")
}

// TestS3CommandRefuses: bad key options are refused before serving.
func TestS3CommandRefuses(t *testing.T) {
	run := func(args ...string) error {
		app := App(Version{}, IO{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}, io.Discard)
		return app.RunContext(t.Context(), append([]string{"dfs", "s3", "--coordinator", "127.0.0.1:1", "--listen", "127.0.0.1:9"}, args...))
	}
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"NoKey":       {nil, "no access key"},
		"NoSecret":    {[]string{"--access-key", "AKID"}, "must both be set"},
		"ShortSecret": {[]string{"--access-key", "AKID", "--secret-key", "short"}, "at least 8"},
		"BadKeys":     {[]string{"--keys", "justakey"}, "ACCESS:SECRET"},
		"Twice":       {[]string{"--access-key", "AKID", "--secret-key", "12345678", "--keys", "AKID:87654321"}, "given twice"},
	} {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			err := run(tc.args...)
			is.True(err != nil) // refused
			is.True(strings.Contains(err.Error(), tc.want))
		})
	}
}

// TestDevS3: dfs dev starts a gateway and prints its endpoint and
// credentials, which work.
func TestDevS3(t *testing.T) {
	is := is.New(t)
	listen := rolestest.FreeAddr(t)
	m := runServer(t, `AWS_ACCESS_KEY_ID=(\S+) AWS_SECRET_ACCESS_KEY=(\S+) AWS_ENDPOINT_URL=(\S+)`, "dev", "--listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(t.TempDir(), "dev"), "--nodes", "1", "--replication", "1", "--admin-listen", "", "--s3-listen", listen)
	is.Equal(m[3], "http://"+listen)
	c := s3Client(m[3], m[1], m[2])
	ctx := t.Context()
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("dev")})
	is.NoErr(err) // the printed credentials work
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("dev"), Key: aws.String("a/b"), Body: strings.NewReader("x")})
	is.NoErr(err)
}
