package s3gw_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/roles/s3gw"
)

// The real S3 tools from Debian's packages (awscli, s3cmd, rclone; .ci/run
// installs them) against a gateway over an in-process cluster: each
// copies trees and large files in and out, and the bytes must come back
// as they went in. A test whose tool is missing skips, saying so.

const (
	toolAccess = "AKIDFSTOOLS"
	toolSecret = "dfs-tools-secret-key"
)

// toolGateway starts a cluster of 3 datanodes and a gateway with one key,
// and returns the gateway's endpoint; both stop when the test ends.
func toolGateway(t *testing.T) string {
	t.Helper()
	c := rolestest.Start(t, 3)
	g := startGateway(t, rolestest.Client(t, c), func(cfg *s3gw.Config) {
		cfg.Keys = []s3gw.Key{{Access: toolAccess, Secret: toolSecret}}
	})
	return g.Endpoint()
}

// tool finds a tool on PATH or skips the test.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (Debian package %s; .ci/run installs it): skipping", name, pkg)
	}
	return p
}

// run runs a tool with env added to a minimal environment and returns
// its standard output; a failure fails the test with what it printed.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8"}, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(name), strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// makeTree writes a tree of small files in nested directories and one
// large file (multipart for every tool's defaults) under dir, and returns
// the large file's name.
func makeTree(t *testing.T, dir string, large int) string {
	t.Helper()
	for i := range 40 {
		p := filepath.Join(dir, "d"+string(rune('a'+i%4)), "sub", "f"+string(rune('a'+i%26))+strings.Repeat("x", i/26)+".txt")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, noise(i*997), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	big := filepath.Join(dir, "big.bin")
	if err := os.WriteFile(big, noise(large), 0o644); err != nil {
		t.Fatal(err)
	}
	return big
}

// noise returns n random bytes.
func noise(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// sameTree fails the test unless the regular files below a and b are
// the same, by relative path and content.
func sameTree(t *testing.T, a, b string) {
	t.Helper()
	files := func(root string) map[string][]byte {
		out := map[string][]byte{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(p)
			rel, _ := filepath.Rel(root, p)
			out[rel] = data
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	fa, fb := files(a), files(b)
	if len(fa) != len(fb) {
		t.Fatalf("%s holds %d files, %s %d", a, len(fa), b, len(fb))
	}
	for name, data := range fa {
		if !bytes.Equal(data, fb[name]) {
			t.Fatalf("%s differs between %s and %s", name, a, b)
		}
	}
}

// sameFile fails the test unless files a and b hold the same bytes.
func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s (%d bytes) and %s (%d bytes) differ", a, len(x), b, len(y))
	}
}

// TestAWSCLI: aws s3 mb/cp/sync/ls/rm/rb and aws s3api multipart and
// ranges against the gateway.
func TestAWSCLI(t *testing.T) {
	is := is.New(t)
	aws := tool(t, "aws", "awscli")
	endpoint := toolGateway(t)
	home := t.TempDir()
	env := []string{"HOME=" + home, "AWS_ACCESS_KEY_ID=" + toolAccess, "AWS_SECRET_ACCESS_KEY=" + toolSecret,
		"AWS_DEFAULT_REGION=us-east-1", "AWS_CONFIG_FILE=" + filepath.Join(home, "config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "credentials"), "AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER="}
	s3 := func(args ...string) string {
		if args[0] == "s3" && args[1] != "ls" && args[1] != "mb" && args[1] != "rb" {
			args = append(args, "--only-show-errors")
		}
		return run(t, env, aws, append([]string{"--endpoint-url", endpoint}, args...)...)
	}
	src, out := filepath.Join(home, "src"), filepath.Join(home, "out")
	big := makeTree(t, src, 21<<20) // multipart: 8 MiB parts by default

	s3("s3", "mb", "s3://tools")
	is.True(strings.Contains(s3("s3", "ls"), "tools")) // the bucket is listed
	s3("s3", "cp", big, "s3://tools/one/big.bin")
	s3("s3", "cp", "s3://tools/one/big.bin", filepath.Join(out, "big.bin"))
	sameFile(t, big, filepath.Join(out, "big.bin")) // a multipart object back as it went

	s3("s3", "sync", src, "s3://tools/tree")
	listed := s3("s3", "ls", "--recursive", "s3://tools/tree/")
	is.Equal(strings.Count(listed, "\n"), 41) // every file of the tree
	s3("s3", "sync", "s3://tools/tree", filepath.Join(out, "tree"))
	sameTree(t, src, filepath.Join(out, "tree")) // the tree comes back whole

	// s3api: a range, and a multipart upload with its parts out of order.
	rangeOut := filepath.Join(out, "range")
	s3("s3api", "get-object", "--bucket", "tools", "--key", "one/big.bin", "--range", "bytes=8388600-8388709", rangeOut)
	data, err := os.ReadFile(big)
	is.NoErr(err)
	got, err := os.ReadFile(rangeOut)
	is.NoErr(err)
	is.True(bytes.Equal(got, data[8388600:8388710])) // the range, across a part boundary

	var created struct{ UploadId string }
	is.NoErr(json.Unmarshal([]byte(s3("s3api", "create-multipart-upload", "--bucket", "tools", "--key", "mp/obj")), &created))
	part1, part2 := filepath.Join(home, "p1"), filepath.Join(home, "p2")
	is.NoErr(os.WriteFile(part1, data[:5<<20], 0o644))
	is.NoErr(os.WriteFile(part2, data[5<<20:6<<20], 0o644))
	var e2, e1 struct{ ETag string }
	is.NoErr(json.Unmarshal([]byte(s3("s3api", "upload-part", "--bucket", "tools", "--key", "mp/obj", "--upload-id", created.UploadId,
		"--part-number", "2", "--body", part2)), &e2))
	is.NoErr(json.Unmarshal([]byte(s3("s3api", "upload-part", "--bucket", "tools", "--key", "mp/obj", "--upload-id", created.UploadId,
		"--part-number", "1", "--body", part1)), &e1))
	parts, err := json.Marshal(map[string]any{"Parts": []map[string]any{{"PartNumber": 1, "ETag": e1.ETag}, {"PartNumber": 2, "ETag": e2.ETag}}})
	is.NoErr(err)
	s3("s3api", "complete-multipart-upload", "--bucket", "tools", "--key", "mp/obj", "--upload-id", created.UploadId,
		"--multipart-upload", string(parts))
	var head struct{ ETag string }
	is.NoErr(json.Unmarshal([]byte(s3("s3api", "head-object", "--bucket", "tools", "--key", "mp/obj")), &head))
	is.True(strings.HasSuffix(strings.Trim(head.ETag, `"`), "-2")) // a multipart ETag of 2 parts
	s3("s3", "cp", "s3://tools/mp/obj", filepath.Join(out, "mp"))
	got, err = os.ReadFile(filepath.Join(out, "mp"))
	is.NoErr(err)
	is.True(bytes.Equal(got, data[:6<<20])) // the parts in order

	s3("s3", "rm", "--recursive", "s3://tools")
	is.Equal(s3("s3", "ls", "--recursive", "s3://tools"), "") // all gone
	s3("s3", "rb", "s3://tools")
	is.True(!strings.Contains(s3("s3", "ls"), "tools")) // and the bucket
}

// TestS3cmd: s3cmd mb/put/get/ls -r/del/rb, with its MD5 checks of what
// it gets, against the gateway.
func TestS3cmd(t *testing.T) {
	is := is.New(t)
	s3cmd := tool(t, "s3cmd", "s3cmd")
	endpoint := toolGateway(t)
	home := t.TempDir()
	host := strings.TrimPrefix(endpoint, "http://")
	cfg := filepath.Join(home, "s3cfg")
	is.NoErr(os.WriteFile(cfg, []byte("[default]\naccess_key = "+toolAccess+"\nsecret_key = "+toolSecret+
		"\nhost_base = "+host+"\nhost_bucket = "+host+"\nuse_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n"), 0o600))
	env := []string{"HOME=" + home}
	s3 := func(args ...string) string { return run(t, env, s3cmd, append([]string{"-c", cfg}, args...)...) }
	src, out := filepath.Join(home, "src"), filepath.Join(home, "out")
	big := makeTree(t, src, 20<<20) // multipart: 15 MiB parts by default

	s3("mb", "s3://cmd")
	s3("put", big, "s3://cmd/big.bin")
	s3("put", "--recursive", filepath.Join(src, "da"), "s3://cmd/tree/")
	listed := s3("ls", "-r", "s3://cmd")
	is.Equal(strings.Count(listed, "\n"), 11) // the large file and the 10 small ones
	is.NoErr(os.MkdirAll(out, 0o755))
	s3("get", "s3://cmd/big.bin", filepath.Join(out, "big.bin"))
	sameFile(t, big, filepath.Join(out, "big.bin"))
	is.NoErr(os.MkdirAll(filepath.Join(out, "tree"), 0o755))
	s3("get", "--recursive", "s3://cmd/tree/", filepath.Join(out, "tree")+"/")
	sameTree(t, filepath.Join(src, "da"), filepath.Join(out, "tree", "da")) // s3cmd checks each MD5 ETag too
	s3("del", "--recursive", "--force", "s3://cmd")
	is.Equal(s3("ls", "-r", "s3://cmd"), "") // all gone
	s3("rb", "s3://cmd")
}

// TestRclone: rclone copy/check/sync/purge against the gateway; check
// compares sizes and MD5 hashes (the ETags), sync deletes what the
// source no longer has.
func TestRclone(t *testing.T) {
	is := is.New(t)
	rclone := tool(t, "rclone", "rclone")
	endpoint := toolGateway(t)
	home := t.TempDir()
	// rclone takes its remote from the environment; some machines set
	// AWS_CA_BUNDLE, which it would try to read: the environment here is
	// built from nothing.
	env := []string{"HOME=" + home, "RCLONE_CONFIG=" + filepath.Join(home, "rclone.conf"),
		"RCLONE_CONFIG_DFS_TYPE=s3", "RCLONE_CONFIG_DFS_PROVIDER=Other", "RCLONE_CONFIG_DFS_ENV_AUTH=false",
		"RCLONE_CONFIG_DFS_ACCESS_KEY_ID=" + toolAccess, "RCLONE_CONFIG_DFS_SECRET_ACCESS_KEY=" + toolSecret,
		"RCLONE_CONFIG_DFS_ENDPOINT=" + endpoint, "RCLONE_CONFIG_DFS_REGION=us-east-1",
		"RCLONE_S3_UPLOAD_CUTOFF=8M", "RCLONE_S3_CHUNK_SIZE=5M"} // multipart from 8 MiB, in 5 MiB parts
	rc := func(args ...string) string { return run(t, env, rclone, args...) }
	src, out := filepath.Join(home, "src"), filepath.Join(home, "out")
	makeTree(t, src, 17<<20)

	rc("mkdir", "dfs:rcl")
	rc("copy", src, "dfs:rcl/tree")
	rc("check", src, "dfs:rcl/tree") // sizes and MD5s, the multipart object's too (rclone stores its MD5)
	is.NoErr(os.Remove(filepath.Join(src, "da", "sub", "fa.txt")))
	is.NoErr(os.WriteFile(filepath.Join(src, "db", "sub", "new.txt"), []byte("new"), 0o644))
	rc("sync", src, "dfs:rcl/tree")
	rc("check", src, "dfs:rcl/tree") // the removed file is gone, the new one there
	rc("copy", "dfs:rcl/tree", out)
	sameTree(t, src, out)
	rc("purge", "dfs:rcl")
	is.Equal(rc("lsf", "dfs:"), "") // the bucket is gone
}
