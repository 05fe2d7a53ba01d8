// Package roles is the composition root: it builds the coordinator,
// datanode and client roles from their configurations, wires them to the
// command line, and runs whole clusters in one process for `dfs dev`,
// `dfs bench --dev` and the tests.
package roles

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/datanode"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// ClusterConfig describes an in-process cluster.
type ClusterConfig struct {
	// Dir holds coordinator/ and datanode-N/ data directories.
	Dir string
	// Nodes is how many datanodes to start.
	Nodes int
	// Listen is the coordinator's address ("127.0.0.1:0" picks a port).
	Listen      string
	Coordinator coordinator.Config
	Datanode    datanode.Config
	Log         zerolog.Logger
	// OpenStore opens the coordinator's metadata store; nil opens bolt in
	// Dir/coordinator. The cluster closes the store when it stops.
	OpenStore func() (meta.Store, error)
	// AdminListen, when set, serves the coordinator's admin endpoints
	// (status page, /metrics, /healthz, /readyz) there.
	AdminListen string
	// Pprof serves net/http/pprof on the admin endpoints (the whole
	// process: every role of the cluster runs in it).
	Pprof bool
	// NodeAdmin serves each datanode's admin endpoints on a loopback port
	// of its own (ClusterNode.AdminAddr).
	NodeAdmin bool
	// Secure runs the cluster with TLS and access checks: a CA and
	// certificates under Dir/tls (LocalPKI), kept across restarts. Its
	// clients are the superuser unless told otherwise (UserConfig).
	Secure bool
}

// DefaultClusterConfig returns a 3-node loopback cluster in dir.
func DefaultClusterConfig(dir string) ClusterConfig {
	dn := datanode.DefaultConfig()
	dn.ShutdownGrace = time.Second
	co := coordinator.DefaultConfig()
	co.ShutdownGrace = time.Second
	return ClusterConfig{Dir: dir, Nodes: 3, Listen: "127.0.0.1:0", Coordinator: co, Datanode: dn, Log: zerolog.Nop()}
}

// Cluster is a coordinator and datanodes running in this process.
type Cluster struct {
	cfg     ClusterConfig
	ctx     context.Context
	coord   *coordinator.Coordinator
	metrics *prometheus.Registry
	admin   string
	pki     *LocalPKI // with Secure
	tls     *pki.TLS  // the coordinator's, with Secure
	stopC   func()
	doneC   chan error

	// mu guards nodes, and coord and metrics, which RestartCoordinator
	// replaces.
	mu    sync.Mutex
	nodes []*ClusterNode
}

// ClusterNode is one datanode of a Cluster.
type ClusterNode struct {
	Dir  string
	Node *datanode.Node
	// Metrics is the node's metrics registry.
	Metrics *prometheus.Registry
	// AdminAddr is the node's admin HTTP address, with NodeAdmin.
	AdminAddr string
	tls       *pki.TLS // with Secure
	stop      func()
	done      chan error
}

// StartCluster starts a coordinator and cfg.Nodes datanodes and waits until
// every datanode has registered. The cluster stops when ctx ends or on Close.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	co := cfg.Coordinator
	co.Listen = cfg.Listen
	admin, err := adminListen(cfg.AdminListen)
	if err != nil {
		return nil, err
	}
	closeAdmin := func() {
		if admin != nil {
			admin.Close()
		}
	}
	var local *LocalPKI
	if cfg.Secure {
		if local, err = OpenLocalPKI(filepath.Join(cfg.Dir, "tls")); err != nil {
			closeAdmin()
			return nil, err
		}
	}
	store, err := (&Cluster{cfg: cfg}).openStore()
	if err != nil {
		closeAdmin()
		return nil, err
	}
	lis, err := rpc.Listen(co.Listen)
	if err != nil {
		closeAdmin()
		store.Close()
		return nil, err
	}
	c := &Cluster{cfg: cfg, ctx: ctx, pki: local, admin: addrOf(admin), doneC: make(chan error, 1)}
	reg := NewMetricsRegistry()
	deps, err := c.coordinatorDeps(lis, store, reg)
	if err != nil {
		closeAdmin()
		lis.Close()
		store.Close()
		return nil, err
	}
	coord, err := coordinator.New(co, deps)
	if err != nil {
		closeAdmin()
		lis.Close()
		store.Close()
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	c.coord, c.metrics, c.stopC = coord, reg, cancel
	go func() {
		err := runWithAdmin(cctx, admin, AdminHandler(reg, coord.Readiness, coord.StatusHandler(), cfg.Pprof), cfg.Log, coord.Run)
		store.Close()
		c.doneC <- err
	}()
	select {
	case <-coord.Ready():
	case err := <-c.doneC:
		cancel()
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	for i := 0; i < cfg.Nodes; i++ {
		if _, err := c.AddNode(); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.WaitHealthy(cfg.Nodes, 30*time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Addr returns the coordinator's address.
func (c *Cluster) Addr() string { return c.Coordinator().Addr() }

// AdminAddr returns the coordinator's admin HTTP address, or "" without
// one.
func (c *Cluster) AdminAddr() string { return c.admin }

// Metrics returns the coordinator's metrics registry.
func (c *Cluster) Metrics() *prometheus.Registry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.metrics
}

func addrOf(lis net.Listener) string {
	if lis == nil {
		return ""
	}
	return lis.Addr().String()
}

// Coordinator returns the coordinator role.
func (c *Cluster) Coordinator() *coordinator.Coordinator {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.coord
}

// Nodes returns the datanodes started so far, stopped ones included.
func (c *Cluster) Nodes() []*ClusterNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*ClusterNode(nil), c.nodes...)
}

// AddNode starts one more datanode with a fresh data directory.
func (c *Cluster) AddNode() (*ClusterNode, error) { return c.AddNodeWith(nil) }

// AddNodeWith starts one more datanode, as AddNode does, with its
// configuration adjusted by tune (nil: none), which also learns the
// address the node is bound to. Tests put a proxy in front of a node this
// way (Advertise), or give it an address nobody listens on.
func (c *Cluster) AddNodeWith(tune func(cfg *datanode.Config, bound string)) (*ClusterNode, error) {
	c.mu.Lock()
	dir := filepath.Join(c.cfg.Dir, fmt.Sprintf("datanode-%d", len(c.nodes)))
	c.mu.Unlock()
	n, err := c.startNode(dir, "127.0.0.1:0", tune)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n, nil
}

func (c *Cluster) startNode(dir, listen string, tune func(cfg *datanode.Config, bound string)) (*ClusterNode, error) {
	dc := c.cfg.Datanode
	dc.Listen = listen
	dc.Advertise = ""
	dc.DataDir = dir
	dc.Coordinators = []string{c.Addr()}
	var admin net.Listener
	if c.cfg.NodeAdmin {
		var err error
		if admin, err = adminListen("127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	lis, err := rpc.Listen(dc.Listen)
	if err != nil {
		if admin != nil {
			admin.Close()
		}
		return nil, err
	}
	if tune != nil {
		tune(&dc, lis.Addr().String())
	}
	reg := NewMetricsRegistry()
	deps := datanode.Deps{Log: c.cfg.Log, Listener: lis, Metrics: reg}
	if c.pki != nil {
		if deps.TLS, err = pki.LoadTLS(c.pki.Files("datanode"), c.cfg.Log); err != nil {
			lis.Close()
			if admin != nil {
				admin.Close()
			}
			return nil, err
		}
		deps.Tokens = tokenVerifier(deps.TLS)
	}
	dn, err := datanode.New(dc, deps)
	if err != nil {
		lis.Close()
		if admin != nil {
			admin.Close()
		}
		return nil, err
	}
	ctx, cancel := context.WithCancel(c.ctx)
	n := &ClusterNode{Dir: dir, Node: dn, Metrics: reg, AdminAddr: addrOf(admin), tls: deps.TLS, stop: cancel, done: make(chan error, 1)}
	ready := func(context.Context) error { return dn.Readiness() }
	go func() {
		n.done <- runWithAdmin(ctx, admin, AdminHandler(reg, ready, nil, c.cfg.Pprof), c.cfg.Log, dn.Run)
	}()
	select {
	case <-dn.Ready():
		return n, nil
	case err := <-n.done:
		cancel()
		return nil, fmt.Errorf("datanode %s: %w", dir, err)
	case <-time.After(30 * time.Second):
		cancel()
		return nil, fmt.Errorf("datanode %s: not ready after 30s", dir)
	}
}

// StopNode stops datanode i (its data stays on disk) and waits for it.
func (c *Cluster) StopNode(i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	c.mu.Unlock()
	return n.Stop()
}

// Stop stops the datanode and waits for it; it is idempotent.
func (n *ClusterNode) Stop() error {
	n.stop()
	err, ok := <-n.done
	if ok {
		close(n.done)
	}
	return err
}

// RestartNode starts datanode i again on its data directory: same node ID,
// same chunks, a new address.
func (c *Cluster) RestartNode(i int) (*ClusterNode, error) {
	c.mu.Lock()
	old := c.nodes[i]
	c.mu.Unlock()
	old.Stop()
	return c.replaceNode(i, old.Dir, "127.0.0.1:0")
}

// RestartNodeInPlace starts datanode i again on its data directory and
// at its address: same node ID, same chunks, same address.
func (c *Cluster) RestartNodeInPlace(i int) (*ClusterNode, error) {
	c.mu.Lock()
	old := c.nodes[i]
	c.mu.Unlock()
	addr := old.Node.Addr()
	old.Stop()
	return c.replaceNode(i, old.Dir, addr)
}

func (c *Cluster) replaceNode(i int, dir, listen string) (*ClusterNode, error) {
	n, err := c.startNode(dir, listen, nil)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
	return n, nil
}

// WaitHealthy waits until the coordinator counts at least want healthy
// datanodes; a coordinator that has not begun to lead yet (just
// restarted) is waited for too.
func (c *Cluster) WaitHealthy(want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Coordinator().Server().ListNodes(c.ctx, &dfspb.ListNodesRequest{})
		if rpc.KindOf(rpc.FromStatus(err)) == rpc.Unavailable && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err != nil {
			return err
		}
		healthy := 0
		for _, n := range resp.Nodes {
			if n.State == dfspb.NodeState_NODE_STATE_HEALTHY {
				healthy++
			}
		}
		if healthy >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: %d of %d datanodes healthy after %s", healthy, want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Client returns a client of this cluster with cfg's tuning; it logs to
// the cluster's logger unless cfg names one. Of a Secure cluster, it is
// the superuser's unless cfg names TLS files (UserConfig).
func (c *Cluster) Client(cfg client.Config) (*client.Client, error) {
	cfg.Coordinators = []string{c.Addr()}
	if cfg.Logger == nil {
		cfg.Logger = &c.cfg.Log
	}
	if c.pki != nil && cfg.TLSCA == "" {
		f := c.pki.Files(auth.DefaultSuperuser)
		cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, cfg.TLSCRL = f.CA, f.Cert, f.Key, f.CRL
	}
	return client.New(c.ctx, cfg)
}

// PKI returns the CA and certificates of a Secure cluster, or nil.
func (c *Cluster) PKI() *LocalPKI { return c.pki }

// UserConfig returns a client configuration of a Secure cluster for user
// in groups, with a client certificate issued for them if they have none.
func (c *Cluster) UserConfig(user string, groups ...string) (client.Config, error) {
	if c.pki == nil {
		return client.Config{}, rpc.Errorf(rpc.FailedPrecondition, "the cluster is not secure: it has no users")
	}
	f, err := c.pki.User(user, groups...)
	if err != nil {
		return client.Config{}, err
	}
	return client.Config{Coordinators: []string{c.Addr()}, TLSCA: f.CA, TLSCert: f.Cert, TLSKey: f.Key, TLSCRL: f.CRL}, nil
}

// GatewayConfig returns the configuration of a client of the cluster with
// a gateway certificate called name (issued if it does not exist yet):
// such a client may act for users (client.ActingAs), as the S3 gateway
// does.
func (c *Cluster) GatewayConfig(name string) (client.Config, error) {
	if c.pki == nil {
		return client.Config{}, rpc.Errorf(rpc.FailedPrecondition, "the cluster is not secure: it has no gateways")
	}
	f, err := c.pki.issue(pki.Request{Role: pki.Gateway, Name: name})
	if err != nil {
		return client.Config{}, err
	}
	return client.Config{Coordinators: []string{c.Addr()}, TLSCA: f.CA, TLSCert: f.Cert, TLSKey: f.Key, TLSCRL: f.CRL}, nil
}

// coordinatorDeps returns what the coordinator is built with.
func (c *Cluster) coordinatorDeps(lis net.Listener, store meta.Store, reg *prometheus.Registry) (coordinator.Deps, error) {
	deps := coordinator.Deps{Log: c.cfg.Log, Listener: lis, Store: store, StoreName: "bolt", Metrics: reg}
	if c.pki != nil {
		t, err := pki.LoadTLS(c.pki.Files("coordinator"), c.cfg.Log)
		if err != nil {
			return deps, err
		}
		deps.TLS, deps.Tokens = t, tokenVerifier(t)
		c.mu.Lock()
		c.tls = t
		c.mu.Unlock()
	}
	return deps, nil
}

// ReloadTLS makes the coordinator and every running datanode of a Secure
// cluster reread their TLS files, as SIGHUP does to a server process.
func (c *Cluster) ReloadTLS() error {
	c.mu.Lock()
	all := []*pki.TLS{c.tls}
	for _, n := range c.nodes {
		all = append(all, n.tls)
	}
	c.mu.Unlock()
	for _, t := range all {
		if t == nil {
			continue
		}
		if err := t.Reload(); err != nil {
			return err
		}
	}
	return nil
}

// RestartCoordinator stops the coordinator and starts a new one at the
// same address on the same metadata store, without its admin endpoints;
// the datanodes keep running. It returns once the new coordinator serves.
func (c *Cluster) RestartCoordinator() error {
	addr := c.Addr()
	c.stopC()
	if err := <-c.doneC; err != nil {
		return fmt.Errorf("coordinator stop: %w", err)
	}
	store, err := c.openStore()
	if err != nil {
		return fmt.Errorf("reopen metadata: %w", err)
	}
	lis, err := rpc.Listen(addr)
	for i := 0; err != nil && i < 50; i++ { // the old socket may linger briefly
		time.Sleep(100 * time.Millisecond)
		lis, err = rpc.Listen(addr)
	}
	if err != nil {
		store.Close()
		return fmt.Errorf("listen on %s again: %w", addr, err)
	}
	co := c.cfg.Coordinator
	co.Listen = addr
	reg := NewMetricsRegistry()
	deps, err := c.coordinatorDeps(lis, store, reg)
	if err != nil {
		lis.Close()
		store.Close()
		return err
	}
	coord, err := coordinator.New(co, deps)
	if err != nil {
		lis.Close()
		store.Close()
		return fmt.Errorf("coordinator: %w", err)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	done := make(chan error, 1)
	go func() {
		err := coord.Run(ctx)
		store.Close()
		done <- err
	}()
	select {
	case <-coord.Ready():
	case err := <-done:
		cancel()
		return fmt.Errorf("coordinator: %w", err)
	}
	c.mu.Lock()
	c.coord, c.metrics, c.stopC, c.doneC = coord, reg, cancel, done
	c.mu.Unlock()
	return nil
}

// openStore opens the coordinator's metadata store.
func (c *Cluster) openStore() (meta.Store, error) {
	if c.cfg.OpenStore != nil {
		return c.cfg.OpenStore()
	}
	return OpenBolt(filepath.Join(c.cfg.Dir, "coordinator"), c.cfg.Log)
}

// Close stops every datanode, then the coordinator.
func (c *Cluster) Close() error {
	for _, n := range c.Nodes() {
		n.Stop()
	}
	c.stopC()
	err, ok := <-c.doneC
	if ok {
		close(c.doneC)
	}
	return err
}
