package roles_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"golang.org/x/net/html"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
	"github.com/dfs-project/dfs/roles/datanode"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
)

// withAdmin serves the coordinator's admin endpoints on a loopback port
// and each datanode's on one of its own.
func withAdmin(c *roles.ClusterConfig) {
	c.AdminListen = "127.0.0.1:0"
	c.NodeAdmin = true
}

// httpGet fetches url and returns the status code and body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// metricValue sums the samples of metric name (exactly; histograms by
// their _count, _sum or _bucket names) in a Prometheus text exposition
// whose labels include every one of labels ("code=\"OK\""). found is
// false when no sample matches.
func metricValue(exposition, name string, labels ...string) (sum float64, found bool) {
	sc := bufio.NewScanner(strings.NewReader(exposition))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		series, value := line[:i], line[i+1:]
		metric, lbls, _ := strings.Cut(series, "{")
		if metric != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(lbls, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

func TestAdminHandler(t *testing.T) {
	reg := roles.NewMetricsRegistry()
	var mu sync.Mutex
	var notReady error
	ready := func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		return notReady
	}
	srv := httptest.NewServer(roles.AdminHandler(reg, ready, nil, false))
	defer srv.Close()

	t.Run("Healthz", func(t *testing.T) {
		is := is.New(t)
		code, body := httpGet(t, srv.URL+"/healthz")
		is.Equal(code, http.StatusOK)           // /healthz answers 200 while the process serves
		is.Equal(strings.TrimSpace(body), "ok") // with "ok"
	})
	t.Run("Readyz", func(t *testing.T) {
		is := is.New(t)
		code, _ := httpGet(t, srv.URL+"/readyz")
		is.Equal(code, http.StatusOK) // ready: 200
		mu.Lock()
		notReady = errors.New("coordinator in safe mode: 3 of 5 chunks located")
		mu.Unlock()
		code, body := httpGet(t, srv.URL+"/readyz")
		is.Equal(code, http.StatusServiceUnavailable)                                                   // not ready: 503
		is.Equal(strings.TrimSpace(body), "not ready: coordinator in safe mode: 3 of 5 chunks located") // with the reason on one line
	})
	t.Run("Metrics", func(t *testing.T) {
		is := is.New(t)
		code, body := httpGet(t, srv.URL+"/metrics")
		is.Equal(code, http.StatusOK) // /metrics serves
		_, ok := metricValue(body, "go_goroutines")
		is.True(ok) // with the Go runtime collector
		_, ok = metricValue(body, "process_start_time_seconds")
		is.True(ok) // and the process collector
	})
	t.Run("Index", func(t *testing.T) {
		is := is.New(t)
		code, body := httpGet(t, srv.URL+"/")
		is.Equal(code, http.StatusOK)               // a role without a page lists its endpoints at /
		is.True(strings.Contains(body, "/metrics")) // naming them
		code, _ = httpGet(t, srv.URL+"/nothing-here")
		is.Equal(code, http.StatusNotFound) // other paths are 404
	})
	t.Run("PprofOffByDefault", func(t *testing.T) {
		is := is.New(t)
		code, _ := httpGet(t, srv.URL+"/debug/pprof/heap")
		is.Equal(code, http.StatusNotFound) // without --pprof no profile is served
	})
	t.Run("Pprof", func(t *testing.T) {
		is := is.New(t)
		psrv := httptest.NewServer(roles.AdminHandler(reg, ready, nil, true))
		defer psrv.Close()
		code, body := httpGet(t, psrv.URL+"/debug/pprof/")
		is.Equal(code, http.StatusOK)                // --pprof serves the profile index
		is.True(strings.Contains(body, "goroutine")) // listing the profiles
		code, body = httpGet(t, psrv.URL+"/debug/pprof/goroutine?debug=1")
		is.Equal(code, http.StatusOK)                               // and a profile
		is.True(strings.Contains(body, "goroutine profile: total")) // in pprof's text form
		code, _ = httpGet(t, psrv.URL+"/metrics")
		is.Equal(code, http.StatusOK) // beside the other endpoints
	})
}

// neverElected is an Elector under which this coordinator stands by for
// good, with leader named as the leader.
type neverElected struct{ leader string }

func (e neverElected) Campaign(ctx context.Context, addr string) (<-chan struct{}, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (e neverElected) Leader(ctx context.Context) (string, error) { return e.leader, nil }

// startCoordinator runs a coordinator on store (with elector, if set)
// and its admin handler on an httptest server; both stop with the test.
func startCoordinator(t *testing.T, store meta.Store, elector coordinator.Elector) (*coordinator.Coordinator, *httptest.Server) {
	t.Helper()
	is := is.New(t)
	reg := roles.NewMetricsRegistry()
	lis, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err) // listen
	cfg := coordinator.DefaultConfig()
	cfg.ShutdownGrace = time.Second
	cfg.SafeModeTimeout = time.Hour
	co, err := coordinator.New(cfg, coordinator.Deps{Log: rolestest.Logger(t), Store: store, StoreName: "mem", Elector: elector, Listener: lis, Metrics: reg})
	is.NoErr(err) // coordinator builds
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- co.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	<-co.Ready()
	srv := httptest.NewServer(roles.AdminHandler(reg, co.Readiness, co.StatusHandler(), false))
	t.Cleanup(srv.Close)
	return co, srv
}

// grpcHealth asks addr's standard health service about the whole server.
func grpcHealth(t *testing.T, addr string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(testDial(t, addr)).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check %s: %v", addr, err)
	}
	return resp.Status
}

func TestCoordinatorReadiness(t *testing.T) {
	t.Run("Starting", func(t *testing.T) {
		is := is.New(t)
		co, err := coordinator.New(coordinator.DefaultConfig(), coordinator.Deps{Store: metatest.NewMem()})
		is.NoErr(err)                                                                           // coordinator builds
		is.True(strings.Contains(co.Readiness(t.Context()).Error(), "coordinator is starting")) // not ready before Run
	})

	t.Run("Leading", func(t *testing.T) {
		is := is.New(t)
		co, srv := startCoordinator(t, metatest.NewMem(), nil)
		eventually(t, "the coordinator leads", co.Leading)
		var code int
		var body string
		eventually(t, "readyz says why it cannot take writes", func() bool { // once the (empty) metadata is loaded
			code, body = httpGet(t, srv.URL+"/readyz")
			return !strings.Contains(body, "safe mode")
		})
		is.Equal(code, http.StatusServiceUnavailable)                               // leading without datanodes: not ready
		is.True(strings.Contains(body, "cannot take writes: not enough datanodes")) // every put would fail
		eventually(t, "gRPC health reports SERVING", func() bool {                  // gRPC health: it leads, so SERVING
			return grpcHealth(t, co.Addr()) == healthpb.HealthCheckResponse_SERVING
		})
		_, body = httpGet(t, srv.URL+"/metrics")
		v, _ := metricValue(body, "dfs_coordinator_leader")
		is.Equal(v, 1.0) // the leader gauge is 1
	})

	t.Run("SafeMode", func(t *testing.T) {
		is := is.New(t)
		store := metatest.NewMem()
		is.NoErr(store.Init(t.Context(), "cluster-safe-mode", nil)) // a cluster
		id := rpc.NewChunkID("/kept", rpc.NewSessionID(), 0, 0)
		is.NoErr(store.Commit(t.Context(), &meta.Txn{Path: "/kept", Put: &meta.File{ // holding a file whose chunk no datanode reported
			Path: "/kept", Size: 10, SHA256: make([]byte, 32), ChunkSize: rolestest.ChunkSize, Replication: 1, Version: 1, Modified: time.Now(),
			Chunks: []meta.Chunk{{ID: id, Size: 10, Digest: make([]byte, 32), FrameSize: rolestest.FrameSize}},
		}}))
		co, srv := startCoordinator(t, store, nil)
		eventually(t, "the coordinator leads", co.Leading)
		code, body := httpGet(t, srv.URL+"/readyz")
		is.Equal(code, http.StatusServiceUnavailable) // in safe mode (loading the files, then waiting): not ready
		is.True(strings.Contains(body, "safe mode"))  // saying why
		eventually(t, "readyz names the chunks safe mode waits for", func() bool {
			code, body = httpGet(t, srv.URL+"/readyz")
			return strings.Contains(body, "1 chunks") // once the files are loaded
		})
		is.Equal(code, http.StatusServiceUnavailable)              // still not ready
		eventually(t, "gRPC health reports SERVING", func() bool { // gRPC health: it leads, so SERVING
			return grpcHealth(t, co.Addr()) == healthpb.HealthCheckResponse_SERVING
		})
		_, body = httpGet(t, srv.URL+"/metrics")
		v, _ := metricValue(body, "dfs_coordinator_safe_mode")
		is.Equal(v, 1.0) // the safe-mode gauge is 1
		v, _ = metricValue(body, "dfs_coordinator_files")
		is.Equal(v, 1.0) // the file counts
		_, page := httpGet(t, srv.URL+"/")
		is.True(strings.Contains(page, `id="safe-mode"`)) // the status page shows safe mode
	})

	t.Run("Standby", func(t *testing.T) {
		is := is.New(t)
		co, srv := startCoordinator(t, metatest.NewMem(), neverElected{leader: "10.9.8.7:7000"})
		code, body := httpGet(t, srv.URL+"/readyz")
		is.Equal(code, http.StatusServiceUnavailable)                                // a standby is not ready
		is.True(strings.Contains(body, "standby"))                                   // saying it stands by
		is.True(strings.Contains(body, "10.9.8.7:7000"))                             // and naming the leader
		is.Equal(grpcHealth(t, co.Addr()), healthpb.HealthCheckResponse_NOT_SERVING) // gRPC health: NOT_SERVING
		code, page := httpGet(t, srv.URL+"/")
		is.Equal(code, http.StatusOK)                                      // the status page serves on a standby
		is.True(strings.Contains(page, "<strong>standby</strong>"))        // saying it is a standby
		is.True(strings.Contains(page, `<code id="leader">10.9.8.7:7000`)) // naming the leader
		_, body = httpGet(t, srv.URL+"/metrics")
		v, ok := metricValue(body, "dfs_coordinator_leader")
		is.True(ok)      // a standby reports the leader gauge
		is.Equal(v, 0.0) // as 0
		_, ok = metricValue(body, "dfs_coordinator_files")
		is.True(!ok) // and nothing a standby does not know
	})
}

func TestDatanodeReadiness(t *testing.T) {
	is := is.New(t)
	// A coordinator address nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	is.NoErr(err)
	nowhere := l.Addr().String()
	l.Close()

	cfg := datanode.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Coordinators = []string{nowhere}
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.ShutdownGrace = time.Second
	lis, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err)
	reg := roles.NewMetricsRegistry()
	dn, err := datanode.New(cfg, datanode.Deps{Log: rolestest.Logger(t), Listener: lis, Metrics: reg})
	is.NoErr(err) // datanode builds
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dn.Run(ctx) }()
	defer func() { cancel(); <-done }()
	srv := httptest.NewServer(roles.AdminHandler(reg, func(context.Context) error { return dn.Readiness() }, nil, false))
	defer srv.Close()

	code, body := httpGet(t, srv.URL+"/readyz")
	is.Equal(code, http.StatusServiceUnavailable)                        // unregistered: not ready
	is.True(strings.Contains(body, "not registered with a coordinator")) // saying why
	eventually(t, "the gRPC server answers", func() bool {
		return grpcHealth(t, lis.Addr().String()) == healthpb.HealthCheckResponse_NOT_SERVING
	})
	_, body = httpGet(t, srv.URL+"/metrics")
	v, ok := metricValue(body, "dfs_datanode_registered")
	is.True(ok && v == 0) // the registered gauge is 0
}

// captureLog collects JSON log lines. Lines written after the test (by
// a handler that outlived its server) land in its buffer, harmlessly.
type captureLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func newCaptureLog() *captureLog { return &captureLog{} }

func (c *captureLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *captureLog) lines() []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(c.buf.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(l, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func TestRequestIDAcrossRoles(t *testing.T) {
	is := is.New(t)
	logs := newCaptureLog()
	c := rolestest.Start(t, 3, func(c *roles.ClusterConfig) {
		c.Log = zerolog.New(logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	})
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.Replication = 3 })
	const reqID = "req-observability-put-1"
	data := randomBytes(3*rolestest.ChunkSize + 100)
	_, err := cl.Put(rpc.WithRequestID(t.Context(), reqID), "/traced", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // the put succeeds

	var coordSeen bool
	nodes := map[string]bool{}
	eventually(t, "every datanode logs the put's request ID", func() bool {
		for _, l := range logs.lines() {
			if l["request_id"] != reqID {
				continue
			}
			switch l["role"] {
			case "coordinator":
				coordSeen = true
			case "datanode":
				if id, ok := l["node_id"].(string); ok {
					nodes[id] = true
				}
			}
		}
		return coordSeen && len(nodes) == 3
	})
	is.True(coordSeen)      // the coordinator's log carries the client's request ID
	is.Equal(len(nodes), 3) // and so does every datanode's: the primary's, and the replicas' through its forwarding
}

func TestMetricsAfterPut(t *testing.T) {
	is := is.New(t)
	c := rolestest.Start(t, 3, withAdmin)
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.Replication = 3 })
	size := 3*rolestest.ChunkSize + 1000
	chunks := 4
	data := randomBytes(size)
	_, err := cl.Put(t.Context(), "/metrics/a", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // put
	got, err := getBytes(t.Context(), cl, "/metrics/a")
	is.NoErr(err)                   // get
	is.True(bytes.Equal(got, data)) // reads back

	sum := func(name string, labels ...string) float64 {
		total := 0.0
		for _, n := range c.Nodes() {
			_, body := httpGet(t, "http://"+n.AdminAddr+"/metrics")
			v, _ := metricValue(body, name, labels...)
			total += v
		}
		return total
	}
	// Every node received every chunk: from the client as primary, from
	// the primary as replica.
	is.True(sum("dfs_datanode_chunk_bytes_received_total") >= float64(3*size))  // bytes received: every copy
	is.True(sum("dfs_datanode_chunk_bytes_forwarded_total") >= float64(2*size)) // bytes forwarded to replicas
	// What a server counts after its last send or its handler returned
	// may trail the client by a moment.
	eventually(t, "the nodes count the bytes sent to the reader", func() bool { return sum("dfs_datanode_chunk_bytes_sent_total") >= float64(size) })
	is.Equal(sum("dfs_datanode_chunks"), float64(3*chunks))    // chunks stored, counted from the stores
	is.True(sum("dfs_datanode_used_bytes") >= float64(3*size)) // disk used
	is.True(sum("dfs_datanode_free_bytes") > 0)                // disk free
	eventually(t, "upload latencies recorded", func() bool {
		return sum("dfs_datanode_chunk_op_duration_seconds_count", `op="upload"`, `result="ok"`) >= float64(3*chunks)
	})
	eventually(t, "download latencies recorded", func() bool {
		return sum("dfs_datanode_chunk_op_duration_seconds_count", `op="download"`, `result="ok"`) >= float64(chunks)
	})
	// Chunks of at most 256 KiB go in WriteChunks calls, several at once
	// when they can: each node took at least one.
	eventually(t, "RPC latencies recorded by method", func() bool {
		return sum("dfs_datanode_rpc_duration_seconds_count", `method="WriteChunks"`, `code="OK"`) >= 3
	})
	is.Equal(sum("dfs_datanode_registered"), 3.0) // every node registered
	eventually(t, "no stream left running", func() bool { return sum("dfs_datanode_streams") == 0 })

	for _, n := range c.Nodes() {
		code, _ := httpGet(t, "http://"+n.AdminAddr+"/readyz")
		is.Equal(code, http.StatusOK) // a registered datanode is ready
		eventually(t, "the datanode's gRPC health reports SERVING", func() bool {
			return grpcHealth(t, n.Node.Addr()) == healthpb.HealthCheckResponse_SERVING
		})
	}
	code, _ := httpGet(t, "http://"+c.AdminAddr()+"/readyz")
	is.Equal(code, http.StatusOK) // the leading coordinator is ready

	code, body := httpGet(t, "http://"+c.AdminAddr()+"/metrics")
	is.Equal(code, http.StatusOK) // the coordinator serves /metrics
	coord := func(name string, labels ...string) float64 {
		v, ok := metricValue(body, name, labels...)
		if !ok {
			t.Errorf("coordinator metrics lack %s%v", name, labels)
		}
		return v
	}
	is.Equal(coord("dfs_coordinator_leader"), 1.0)                                          // it leads
	is.Equal(coord("dfs_coordinator_safe_mode"), 0.0)                                       // out of safe mode
	is.Equal(coord("dfs_coordinator_files"), 1.0)                                           // one file
	is.Equal(coord("dfs_coordinator_chunks"), float64(chunks))                              // its chunks
	is.Equal(coord("dfs_coordinator_committed_bytes_total"), float64(size))                 // bytes committed by clients
	is.Equal(coord("dfs_coordinator_read_bytes_total"), float64(size))                      // bytes handed to readers
	is.Equal(coord("dfs_coordinator_nodes", `state="healthy"`), 3.0)                        // three healthy nodes
	is.Equal(coord("dfs_coordinator_nodes", `state="dead"`), 0.0)                           // none dead
	is.True(coord("dfs_coordinator_capacity_bytes") > 0)                                    // capacity
	is.Equal(coord("dfs_coordinator_upload_sessions"), 0.0)                                 // no upload open
	coord("dfs_coordinator_rpc_duration_seconds_count", `method="UploadFile"`, `code="OK"`) // RPC latencies by method and code
	for _, name := range []string{"dfs_coordinator_under_replicated_chunks", "dfs_coordinator_missing_chunks", "dfs_coordinator_corrupt_copies",
		"dfs_coordinator_repairs_in_progress", "dfs_coordinator_repairs_total", "dfs_coordinator_repaired_bytes_total",
		"dfs_coordinator_pending_deletions", "dfs_coordinator_reclaimed_bytes_total", "go_goroutines", "process_resident_memory_bytes"} {
		coord(name) // present
	}

	// A delete shows up in the GC figures once the chunks are gone.
	is.NoErr(cl.Remove(t.Context(), "/metrics/a")) // delete
	eventually(t, "the coordinator counts the bytes reclaimed", func() bool {
		_, body = httpGet(t, "http://"+c.AdminAddr()+"/metrics")
		v, _ := metricValue(body, "dfs_coordinator_reclaimed_bytes_total")
		return v >= float64(3*size)
	})
	is.True(sum("dfs_datanode_chunk_op_duration_seconds_count", `op="delete"`) >= float64(3*chunks)) // delete latencies
}

// chromium returns the path of a Chromium binary, or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("status page browser test skipped: no chromium on PATH (Debian: apt-get install chromium)")
	return ""
}

// renderDOM loads url in headless Chromium and returns the DOM it built.
func renderDOM(t *testing.T, browser, url string) *html.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir="+t.TempDir(), "--dump-dom", url)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium --dump-dom %s: %v\n%s", url, err, stderr.String())
	}
	doc, err := html.Parse(&stdout)
	if err != nil {
		t.Fatalf("parse the DOM chromium dumped: %v", err)
	}
	return doc
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func hasClass(n *html.Node, class string) bool {
	for _, c := range strings.Fields(attr(n, "class")) {
		if c == class {
			return true
		}
	}
	return false
}

// findAll returns the elements below n for which match is true.
func findAll(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

// text returns the text inside n, with runs of space folded.
func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

func byID(doc *html.Node, id string) *html.Node {
	found := findAll(doc, func(n *html.Node) bool { return attr(n, "id") == id })
	if len(found) == 0 {
		return nil
	}
	return found[0]
}

func TestStatusPageInBrowser(t *testing.T) {
	browser := chromium(t)
	is := is.New(t)
	c := rolestest.Start(t, 3, withAdmin)
	cl := rolestest.Client(t, c)
	for _, p := range []string{"/page/a", "/page/b"} {
		_, err := cl.Put(t.Context(), p, bytes.NewReader(randomBytes(rolestest.ChunkSize+10)), rolestest.ChunkSize+10, nil)
		is.NoErr(err) // put
	}
	// Drain one node so the page has a mark to show.
	drained := c.Nodes()[2].Node
	_, err := cl.Decommission(t.Context(), string(drained.ID()), false)
	is.NoErr(err) // decommission starts

	doc := renderDOM(t, browser, "http://"+c.AdminAddr()+"/")
	title := findAll(doc, func(n *html.Node) bool { return n.Data == "title" })
	is.True(len(title) == 1 && strings.Contains(text(title[0]), c.Addr())) // the page names the coordinator

	rows := findAll(doc, func(n *html.Node) bool { return n.Data == "tr" && hasClass(n, "node") })
	is.Equal(len(rows), 3) // one row per datanode
	for _, cn := range c.Nodes() {
		var row *html.Node
		for _, r := range rows {
			if attr(r, "data-node-id") == string(cn.Node.ID()) {
				row = r
			}
		}
		if row == nil {
			t.Fatalf("no row for node %s", cn.Node.ID())
		}
		addr := findAll(row, func(n *html.Node) bool { return hasClass(n, "addr") })
		is.True(len(addr) == 1 && text(addr[0]) == cn.Node.Addr()) // the row shows the node's address
		state := findAll(row, func(n *html.Node) bool { return hasClass(n, "state") && n.Data == "span" })
		is.True(len(state) == 1 && text(state[0]) == "healthy") // and its state
		bar := findAll(row, func(n *html.Node) bool { return hasClass(n, "fill") })
		is.True(len(bar) == 1 && strings.Contains(attr(bar[0], "style"), "width")) // and a usage bar
		marks := findAll(row, func(n *html.Node) bool { return hasClass(n, "draining") })
		is.Equal(len(marks) == 1, cn.Node.ID() == drained.ID()) // the draining node, and only it, is marked
	}

	files := byID(doc, "files")
	is.True(files != nil)                         // the page shows the file count
	is.Equal(text(files), "2")                    // of two files
	is.Equal(text(byID(doc, "chunks")), "4")      // and their chunks
	is.True(byID(doc, "under-replicated") != nil) // under-replicated chunks
	capacity := byID(doc, "capacity-total")
	is.True(capacity != nil && text(capacity) != "0 B") // cluster capacity

	events := byID(doc, "events")
	is.True(events != nil) // the page lists events
	all := text(events)
	for _, cn := range c.Nodes() {
		is.True(strings.Contains(all, fmt.Sprintf("datanode %s joined at %s", cn.Node.ID().Short(), cn.Node.Addr()))) // each node's joining
	}
	is.True(strings.Contains(all, "decommissioning datanode "+drained.ID().Short())) // the decommission
	is.True(strings.Contains(all, "leading"))                                        // the leadership
}
