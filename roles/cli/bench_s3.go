package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/rpc"
)

// S3BenchResult is what `dfs bench --s3` measures through an S3 gateway
// process with aws-sdk-go-v2, beside the native figures of the same run.
type S3BenchResult struct {
	PutMBps         float64 `json:"put_mb_per_s"`
	GetMBps         float64 `json:"get_mb_per_s"`
	PartBytes       int64   `json:"part_bytes"`
	PartsInFlight   int     `json:"parts_in_flight"`
	SmallPutsPerSec float64 `json:"small_puts_per_s"`
	SmallGetsPerSec float64 `json:"small_gets_per_s"`
	// GatewayCPUPutPerGiB and GatewayCPUGetPerGiB are the gateway
	// process's CPU seconds (user and system) per GiB moved.
	GatewayCPUPutPerGiB float64 `json:"gateway_cpu_s_per_gib_put"`
	GatewayCPUGetPerGiB float64 `json:"gateway_cpu_s_per_gib_get"`
	// GatewayPeakRSS is the gateway process's high-water resident set.
	GatewayPeakRSS int64 `json:"gateway_peak_rss_bytes"`
}

const (
	benchS3Access = "dfs-bench"
	benchS3Bucket = "bench" // the directory /bench, which the run's user owns
)

// s3Gateway is a `dfs s3` child process of the bench.
type s3Gateway struct {
	cmd      *exec.Cmd
	endpoint string
	client   *s3.Client
}

// startS3Gateway starts a gateway process of this executable against
// d's cluster, acting for user (with a gateway certificate when the
// cluster has TLS), and waits until it serves.
func (d *devProcs) startS3Gateway(ctx context.Context, user string, logw io.Writer) (*s3Gateway, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	secret := string(rpc.NewSessionID())
	args := []string{"--log-level", "warn", "--insecure"}
	if d.pki != nil {
		f, err := d.pki.Issue(pki.Request{Role: pki.Gateway, Name: "s3"})
		if err != nil {
			return nil, err
		}
		args = []string{"--log-level", "warn", "--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}
	}
	args = append(args, "s3", "--listen", addr, "--coordinator", d.coordAddr, "--access-key", benchS3Access, "--user", user)
	cmd := child(exe, args, logw, "DFS_S3_SECRET_KEY="+secret)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	g := &s3Gateway{cmd: cmd, endpoint: "http://" + addr}
	g.client = s3.New(s3.Options{
		Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(benchS3Access, secret, ""),
		BaseEndpoint: aws.String(g.endpoint), UsePathStyle: true,
		HTTPClient: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := g.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(benchS3Bucket)})
		if err == nil {
			return g, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			g.stop()
			return nil, rpc.Errorf(rpc.Unavailable, "bench: the S3 gateway did not serve within 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the gateway process.
func (g *s3Gateway) stop() {
	g.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { g.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		g.cmd.Process.Kill()
		<-done
	}
}

// cpu returns the process's CPU seconds so far (user and system).
func (g *s3Gateway) cpu() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", g.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// peakRSS reads the process's VmHWM.
func (g *s3Gateway) peakRSS() int64 { return vmHWM(g.cmd.Process.Pid) }

// runS3Bench times, through g, what runBench timed natively: the large
// object put as a multipart upload (PartsInFlight parts of PartBytes at
// once) and got in one stream, then the small objects, res.SmallParallel
// at once.
func runS3Bench(ctx context.Context, g *s3Gateway, res *BenchResult, out *S3BenchResult, say func(string, ...any)) error {
	const mb = 1e6
	gib := float64(res.LargeBytes) / (1 << 30)
	s := g.client
	bucket := aws.String(benchS3Bucket)
	if res.LargeBytes > 0 {
		say("putting %s through S3 (%s parts, %d in flight)...", rpc.FormatBytes(res.LargeBytes), rpc.FormatBytes(out.PartBytes), out.PartsInFlight)
		key := aws.String("s3-large")
		part := make([]byte, out.PartBytes)
		roles.NewPatternReader(out.PartBytes).Read(part)
		cpu0, start := g.cpu(), time.Now()
		mp, err := s.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: bucket, Key: key})
		if err != nil {
			return err
		}
		n := int((res.LargeBytes + out.PartBytes - 1) / out.PartBytes)
		done := make([]types.CompletedPart, n)
		var mu sync.Mutex
		_, err = parallel(ctx, n, out.PartsInFlight, func(i int) error {
			size := min(out.PartBytes, res.LargeBytes-int64(i)*out.PartBytes)
			r, err := s.UploadPart(ctx, &s3.UploadPartInput{Bucket: bucket, Key: key, UploadId: mp.UploadId,
				PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(part[:size])})
			if err == nil {
				mu.Lock()
				done[i] = types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: r.ETag}
				mu.Unlock()
			}
			return err
		})
		if err != nil {
			return err
		}
		if _, err := s.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: bucket, Key: key, UploadId: mp.UploadId,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: done}}); err != nil {
			return err
		}
		out.PutMBps = float64(res.LargeBytes) / mb / time.Since(start).Seconds()
		out.GatewayCPUPutPerGiB = (g.cpu() - cpu0) / gib
		say("getting %s through S3...", rpc.FormatBytes(res.LargeBytes))
		cpu0, start = g.cpu(), time.Now()
		got, err := s.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: key})
		if err != nil {
			return err
		}
		n64, err := io.Copy(io.Discard, got.Body)
		got.Body.Close()
		if err != nil {
			return err
		}
		if n64 != res.LargeBytes {
			return rpc.Errorf(rpc.Internal, "bench: got %d bytes of %d through S3", n64, res.LargeBytes)
		}
		out.GetMBps = float64(res.LargeBytes) / mb / time.Since(start).Seconds()
		out.GatewayCPUGetPerGiB = (g.cpu() - cpu0) / gib
		if _, err := s.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: bucket, Key: key}); err != nil {
			return err
		}
	}
	out.GatewayPeakRSS = g.peakRSS()
	if res.SmallFiles > 0 {
		data := make([]byte, res.SmallBytes)
		roles.NewPatternReader(res.SmallBytes).Read(data)
		key := func(i int) *string { return aws.String(fmt.Sprintf("s3-small/%06d", i)) }
		say("putting %d small objects through S3...", res.SmallFiles)
		elapsed, err := parallel(ctx, res.SmallFiles, res.SmallParallel, func(i int) error {
			_, err := s.PutObject(ctx, &s3.PutObjectInput{Bucket: bucket, Key: key(i), Body: bytes.NewReader(data)})
			return err
		})
		if err != nil {
			return err
		}
		out.SmallPutsPerSec = float64(res.SmallFiles) / elapsed.Seconds()
		say("getting %d small objects through S3...", res.SmallFiles)
		elapsed, err = parallel(ctx, res.SmallFiles, res.SmallParallel, func(i int) error {
			got, err := s.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: key(i)})
			if err != nil {
				return err
			}
			defer got.Body.Close()
			_, err = io.Copy(io.Discard, got.Body)
			return err
		})
		if err != nil {
			return err
		}
		out.SmallGetsPerSec = float64(res.SmallFiles) / elapsed.Seconds()
		if _, err := parallel(ctx, res.SmallFiles, res.SmallParallel, func(i int) error {
			_, err := s.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: bucket, Key: key(i)})
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// printS3Bench prints the S3 figures and their ratios to the native ones.
func printS3Bench(w io.Writer, res *BenchResult) {
	s := res.S3
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	if res.LargeBytes > 0 {
		fmt.Fprintf(w, "S3 large object %s (%s parts, %d in flight): put %.1f MB/s (%.2fx native), get %.1f MB/s (%.2fx native)\n",
			rpc.FormatBytes(res.LargeBytes), rpc.FormatBytes(s.PartBytes), s.PartsInFlight, s.PutMBps, ratio(s.PutMBps, res.PutMBps), s.GetMBps, ratio(s.GetMBps, res.GetMBps))
		fmt.Fprintf(w, "S3 gateway CPU: %.2f s/GiB put, %.2f s/GiB get\n", s.GatewayCPUPutPerGiB, s.GatewayCPUGetPerGiB)
	}
	if res.SmallFiles > 0 {
		fmt.Fprintf(w, "S3 %d x %s objects (%d in flight): %.0f puts/s (%.2fx native), %.0f gets/s (%.2fx native)\n",
			res.SmallFiles, rpc.FormatBytes(res.SmallBytes), res.SmallParallel, s.SmallPutsPerSec, ratio(s.SmallPutsPerSec, res.SmallPutsPerSec),
			s.SmallGetsPerSec, ratio(s.SmallGetsPerSec, res.SmallGetsPerSec))
	}
	fmt.Fprintf(w, "S3 gateway peak RSS: %s\n", rpc.FormatBytes(s.GatewayPeakRSS))
}
