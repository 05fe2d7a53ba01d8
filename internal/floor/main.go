// Command floor measures what a put and a get cost on this machine with
// gRPC and dfs's durability, and none of dfs: the floor under `dfs bench
// --dev`'s figures (docs/benchmarks.md, "The floor under dfs").
//
// It starts a coordinator and three datanodes as processes of its own
// binary (GOMAXPROCS=1 each, as `dfs bench --dev` lays them out on two
// cores) and is their client, on both cores. Each step is one unary gRPC
// call with a byte-slice codec, no interceptor, token, permission check,
// metric or log:
//
//   - 4 KiB put: Open (the coordinator answers 200 bytes, a placement;
//     not with -no-open);
//     Write to the primary, which sends the data on to the other two
//     datanodes in parallel while it appends to its pack file; each
//     append is made durable by a group commit (one fdatasync for what
//     queued meanwhile) before its call answers; Confirm (the
//     coordinator writes a 4 KiB record, fdatasyncs, writes a 4 KiB meta
//     page, fdatasyncs, group-committed, as bbolt commits).
//   - 4 KiB get: Lookup (from the coordinator's memory), Read (a pread
//     of the 4 KiB from the pack file).
//   - 1 GiB get (-large-mib): server streams of eight 1 MiB frames from memory,
//     four at once across the datanodes, each frame's SHA-256 checked
//     and the frame written to /dev/null.
//
// The client hashes each 4 KiB with SHA-256 both ways, as a dfs client
// does. It prints one JSON object.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dfs-project/dfs/internal/proccpu"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

const (
	smallSize  = 4 << 10
	frameSize  = 1 << 20
	chunkFrame = 8 // frames per chunk of the 1 GiB get
	window     = 4 << 20
	connWindow = 16 << 20
	ioBuffer   = 1 << 20
)

// msg is every request and answer: bytes, sent as they are.
type msg struct{ b []byte }

// codec passes a msg's bytes through (gRPC's buffer is reused after
// Unmarshal returns, so it copies them).
type codec struct{}

func (codec) Marshal(v any) ([]byte, error) { return v.(*msg).b, nil }
func (codec) Unmarshal(d []byte, v any) error {
	m := v.(*msg)
	m.b = append(m.b[:0], d...)
	return nil
}
func (codec) Name() string { return "floor" }

type handler func(ctx context.Context, in []byte) ([]byte, error)

func main() {
	role := flag.String("role", "client", "client, coordinator or datanode (the client starts the others)")
	dir := flag.String("dir", "", "a server's directory")
	certs := flag.String("certs", "", "a server's directory of cert.pem and key.pem (with -tls)")
	useTLS := flag.Bool("tls", false, "TLS 1.3 with client certificates (ECDSA P-256), as dfs by default")
	files := flag.Int("files", 4000, "4 KiB files to put, then get")
	inFlight := flag.Int("in-flight", 16, "4 KiB puts and gets at once")
	largeMiB := flag.Int("large-mib", 1024, "MiB of the large get, a multiple of 8")
	noOpen := flag.Bool("no-open", false, "puts skip Open, as if placements and tokens were leased ahead")
	flag.Parse()
	var err error
	if *role == "client" {
		var res Result
		if res, err = client(*files, *inFlight, *largeMiB, *useTLS, !*noOpen); err == nil {
			err = json.NewEncoder(os.Stdout).Encode(res)
		}
	} else {
		err = server(*role, *dir, *certs, *useTLS)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func server(role, dir, certs string, useTLS bool) error {
	cr, err := creds(certs, useTLS)
	if err != nil {
		return err
	}
	var methods map[string]handler
	switch role {
	case "coordinator":
		methods, err = coordinator(dir)
	case "datanode":
		methods, err = datanode(dir, &dialer{creds: cr})
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(lis.Addr())
	return newServer(cr, methods).Serve(lis)
}

func newServer(cr credentials.TransportCredentials, methods map[string]handler) *grpc.Server {
	desc := grpc.ServiceDesc{ServiceName: "floor.S", HandlerType: (*any)(nil)}
	for name, h := range methods {
		desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: name, Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in msg
			if err := dec(&in); err != nil {
				return nil, err
			}
			out, err := h(ctx, in.b)
			if err != nil {
				return nil, err
			}
			return &msg{out}, nil
		}})
	}
	desc.Streams = []grpc.StreamDesc{{StreamName: "Stream", ServerStreams: true, Handler: stream}}
	srv := grpc.NewServer(grpc.Creds(cr), grpc.ForceServerCodec(codec{}), grpc.NumStreamWorkers(16),
		grpc.InitialWindowSize(window), grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(ioBuffer), grpc.WriteBufferSize(ioBuffer), grpc.MaxSendMsgSize(2*frameSize))
	srv.RegisterService(&desc, struct{}{})
	return srv
}

// frame is the 1 MiB frame Stream sends, its SHA-256 after it.
var frame = func() []byte {
	b := make([]byte, frameSize, frameSize+sha256.Size)
	rand.Read(b)
	h := sha256.Sum256(b)
	return append(b, h[:]...)
}()

// stream sends as many frames as its request's uvarint asks for.
func stream(_ any, st grpc.ServerStream) error {
	var in msg
	if err := st.RecvMsg(&in); err != nil {
		return err
	}
	n, _ := binary.Uvarint(in.b)
	for range n {
		if err := st.SendMsg(&msg{frame}); err != nil {
			return err
		}
	}
	return nil
}

// committer appends records to a file and makes what queued during one
// fdatasync durable together in the next.
type committer struct {
	f    *os.File
	meta bool // a second write and fdatasync per commit, as bbolt's meta page
	kick chan struct{}

	mu    sync.Mutex
	queue []pending
	off   int64
}

type pending struct {
	b    []byte
	done chan<- result
}

type result struct {
	off int64
	err error
}

func newCommitter(path string, meta bool) (*committer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	c := &committer{f: f, meta: meta, kick: make(chan struct{}, 1), off: 4096}
	go c.loop()
	return c, nil
}

// commit returns b's offset in the file once b is durable.
func (c *committer) commit(b []byte) (int64, error) {
	done := make(chan result, 1)
	c.mu.Lock()
	c.queue = append(c.queue, pending{b, done})
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	r := <-done
	return r.off, r.err
}

func (c *committer) loop() {
	page := make([]byte, 4096)
	for range c.kick {
		c.mu.Lock()
		batch, off := c.queue, c.off
		c.queue = nil
		c.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		var buf []byte
		for _, p := range batch {
			buf = append(buf, p.b...)
		}
		_, err := c.f.WriteAt(buf, off)
		if err == nil {
			err = syscall.Fdatasync(int(c.f.Fd()))
		}
		if err == nil && c.meta {
			if _, err = c.f.WriteAt(page, 0); err == nil {
				err = syscall.Fdatasync(int(c.f.Fd()))
			}
		}
		c.mu.Lock()
		c.off += int64(len(buf))
		c.mu.Unlock()
		for _, p := range batch {
			p.done <- result{off, err}
			off += int64(len(p.b))
		}
	}
}

func coordinator(dir string) (map[string]handler, error) {
	c, err := newCommitter(filepath.Join(dir, "meta"), true)
	if err != nil {
		return nil, err
	}
	var names sync.Map // name -> "primary|offset"
	return map[string]handler{
		"Open": func(_ context.Context, in []byte) ([]byte, error) {
			return make([]byte, 200), nil
		},
		// in: "name|primary|offset"
		"Confirm": func(_ context.Context, in []byte) ([]byte, error) {
			name, rec, _ := strings.Cut(string(in), "|")
			page := make([]byte, 4096)
			copy(page, in)
			if _, err := c.commit(page); err != nil {
				return nil, err
			}
			names.Store(name, rec)
			return []byte("ok"), nil
		},
		"Lookup": func(_ context.Context, in []byte) ([]byte, error) {
			rec, ok := names.Load(string(in))
			if !ok {
				return nil, fmt.Errorf("no file %s", in)
			}
			out := make([]byte, 200)
			copy(out, rec.(string))
			return out[:len(rec.(string))], nil
		},
	}, nil
}

func datanode(dir string, d *dialer) (map[string]handler, error) {
	c, err := newCommitter(filepath.Join(dir, "pack"), false)
	if err != nil {
		return nil, err
	}
	return map[string]handler{
		// in: "replica,replica\n" then the data; out: its offset in the pack
		"Write": func(ctx context.Context, in []byte) ([]byte, error) {
			head, data, _ := strings.Cut(string(in), "\n")
			var g errgroup.Group
			if head != "" {
				for _, addr := range strings.Split(head, ",") {
					g.Go(func() error {
						cc, err := d.conn(addr)
						if err != nil {
							return err
						}
						_, err = call(ctx, cc, "Write", append([]byte("\n"), data...))
						return err
					})
				}
			}
			off, err := c.commit([]byte(data))
			if err := errors.Join(err, g.Wait()); err != nil {
				return nil, err
			}
			return binary.AppendUvarint(nil, uint64(off)), nil
		},
		// in: the uvarint offset
		"Read": func(_ context.Context, in []byte) ([]byte, error) {
			off, _ := binary.Uvarint(in)
			out := make([]byte, smallSize)
			if _, err := c.f.ReadAt(out, int64(off)); err != nil {
				return nil, err
			}
			return out, nil
		},
	}, nil
}

type dialer struct {
	creds credentials.TransportCredentials
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (d *dialer) conn(addr string) (*grpc.ClientConn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cc, ok := d.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(d.creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{}), grpc.MaxCallRecvMsgSize(2*frameSize)),
		grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(ioBuffer), grpc.WithWriteBufferSize(ioBuffer))
	if err != nil {
		return nil, err
	}
	if d.conns == nil {
		d.conns = map[string]*grpc.ClientConn{}
	}
	d.conns[addr] = cc
	return cc, nil
}

func call(ctx context.Context, cc *grpc.ClientConn, method string, in []byte) ([]byte, error) {
	var out msg
	err := cc.Invoke(ctx, "/floor.S/"+method, &msg{in}, &out)
	return out.b, err
}

func creds(dir string, useTLS bool) (credentials.TransportCredentials, error) {
	if !useTLS {
		return insecure.NewCredentials(), nil
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}), nil
}

// writeCert makes one self-signed certificate for 127.0.0.1 that every
// process serves and presents. Plain crypto/tls, not internal/pki: the
// floor is gRPC's, without dfs's own batching of TLS writes or checks of
// a peer's role.
func writeCert(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "floor"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return errors.Join(
		os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600),
		os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
}

// proc is a server process the client started.
type proc struct {
	cmd  *exec.Cmd
	addr string
}

func start(role, root string, n int, useTLS bool) (proc, error) {
	dir := filepath.Join(root, fmt.Sprint(role, n))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return proc{}, err
	}
	exe, err := os.Executable()
	if err != nil {
		return proc{}, err
	}
	cmd := exec.Command(exe, "-role", role, "-dir", dir, "-certs", root, "-tls="+strconv.FormatBool(useTLS))
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return proc{}, err
	}
	if err := cmd.Start(); err != nil {
		return proc{}, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return proc{}, fmt.Errorf("%s did not start: %w", role, err)
	}
	return proc{cmd, strings.TrimSpace(line)}, nil
}

// cpu is the CPU seconds the process has used (0 once it is gone).
func (p proc) cpu() float64 {
	t, _ := proccpu.Of(p.cmd.Process.Pid)
	return t.Seconds()
}

// Result is what the client prints.
type Result struct {
	TLS              bool    `json:"tls"`
	Files            int     `json:"files"`
	InFlight         int     `json:"in_flight"`
	Open             bool    `json:"open"`
	PutsPerSec       float64 `json:"small_puts_per_sec"`
	PutClientMs      float64 `json:"small_put_client_cpu_ms"`
	PutClusterMs     float64 `json:"small_put_cluster_cpu_ms"`
	GetsPerSec       float64 `json:"small_gets_per_sec"`
	GetClientMs      float64 `json:"small_get_client_cpu_ms"`
	GetClusterMs     float64 `json:"small_get_cluster_cpu_ms"`
	GetMBps          float64 `json:"get_mbps"`
	GetClientPerGiB  float64 `json:"get_client_cpu_s_per_gib"`
	GetClusterPerGiB float64 `json:"get_cluster_cpu_s_per_gib"`
}

func client(files, inFlight, largeMiB int, useTLS, open bool) (res Result, err error) {
	if files < 1 || inFlight < 1 || largeMiB < chunkFrame || largeMiB%chunkFrame != 0 {
		return res, errors.New("-files and -in-flight must be at least 1, -large-mib a multiple of 8")
	}
	root, err := os.MkdirTemp("", "dfs-floor-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(root)
	if useTLS {
		if err := writeCert(root); err != nil {
			return res, err
		}
	}
	var procs []proc
	defer func() {
		for _, p := range procs {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	}()
	for i, role := range []string{"coordinator", "datanode", "datanode", "datanode"} {
		p, err := start(role, root, i, useTLS)
		if err != nil {
			return res, err
		}
		procs = append(procs, p)
	}
	co, dn := procs[0], procs[1:]
	cr, err := creds(root, useTLS)
	if err != nil {
		return res, err
	}
	d := &dialer{creds: cr}
	conn := func(p proc) *grpc.ClientConn {
		cc, err := d.conn(p.addr)
		if err != nil {
			panic(err) // grpc.NewClient fails only on a malformed target
		}
		return cc
	}
	ctx := context.Background()
	data := make([]byte, smallSize)
	rand.Read(data)
	sum := sha256.Sum256(data)

	// measure runs op(0..n-1), par at once, and returns the rate and the
	// client's and servers' CPU seconds per op.
	measure := func(n, par int, op func(i int) error) (rate, client, cluster float64, err error) {
		cluster0, client0, t0 := 0.0, proccpu.Self().Seconds(), time.Now()
		for _, p := range procs {
			cluster0 -= p.cpu()
		}
		var next atomic.Int64
		var g errgroup.Group
		for range par {
			g.Go(func() error {
				for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
					if err := op(i); err != nil {
						return err
					}
				}
				return nil
			})
		}
		err = g.Wait()
		took := time.Since(t0).Seconds()
		for _, p := range procs {
			cluster0 += p.cpu()
		}
		return float64(n) / took, (proccpu.Self().Seconds() - client0) / float64(n), cluster0 / float64(n), err
	}
	res = Result{TLS: useTLS, Files: files, InFlight: inFlight, Open: open}
	res.PutsPerSec, res.PutClientMs, res.PutClusterMs, err = measure(files, inFlight, func(i int) error {
		name, p := fmt.Sprint("/f", i), i%3
		if open {
			if _, err := call(ctx, conn(co), "Open", []byte(name)); err != nil {
				return err
			}
		}
		if sha256.Sum256(data) != sum {
			return errors.New("the data changed")
		}
		req := append([]byte(dn[(p+1)%3].addr+","+dn[(p+2)%3].addr+"\n"), data...)
		out, err := call(ctx, conn(dn[p]), "Write", req)
		if err != nil {
			return err
		}
		off, _ := binary.Uvarint(out)
		_, err = call(ctx, conn(co), "Confirm", fmt.Appendf(nil, "%s|%d|%d", name, p, off))
		return err
	})
	if err != nil {
		return res, fmt.Errorf("put: %w", err)
	}
	res.GetsPerSec, res.GetClientMs, res.GetClusterMs, err = measure(files, inFlight, func(i int) error {
		rec, err := call(ctx, conn(co), "Lookup", []byte(fmt.Sprint("/f", i)))
		if err != nil {
			return err
		}
		ps, offs, _ := strings.Cut(string(rec), "|")
		p, _ := strconv.Atoi(ps)
		off, _ := strconv.ParseUint(offs, 10, 64)
		got, err := call(ctx, conn(dn[p%3]), "Read", binary.AppendUvarint(nil, off))
		if err != nil {
			return err
		}
		if sha256.Sum256(got) != sum {
			return fmt.Errorf("/f%d read back wrong", i)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("get: %w", err)
	}
	sink, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return res, err
	}
	defer sink.Close()
	chunks := largeMiB / chunkFrame
	res.GetMBps, res.GetClientPerGiB, res.GetClusterPerGiB, err = measure(chunks, 4, func(i int) error {
		st, err := conn(dn[i%3]).NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/floor.S/Stream")
		if err != nil {
			return err
		}
		if err := st.SendMsg(&msg{binary.AppendUvarint(nil, chunkFrame)}); err != nil {
			return err
		}
		if err := st.CloseSend(); err != nil {
			return err
		}
		var f msg
		for range chunkFrame {
			if err := st.RecvMsg(&f); err != nil {
				return err
			}
			body := f.b[:len(f.b)-sha256.Size]
			if h := sha256.Sum256(body); string(h[:]) != string(f.b[len(body):]) {
				return errors.New("a frame does not match its digest")
			}
			if _, err := sink.Write(body); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("large get: %w", err)
	}
	// per chunk -> MB/s and per GiB
	perGiB := float64(1<<30) / (chunkFrame * frameSize)
	res.GetMBps *= chunkFrame * frameSize / 1e6
	res.GetClientPerGiB *= perGiB
	res.GetClusterPerGiB *= perGiB
	res.PutClientMs, res.PutClusterMs = res.PutClientMs*1000, res.PutClusterMs*1000
	res.GetClientMs, res.GetClusterMs = res.GetClientMs*1000, res.GetClusterMs*1000
	return res, nil
}
