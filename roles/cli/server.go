package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/datanode"
	"github.com/dfs-project/dfs/roles/mount"
	"github.com/dfs-project/dfs/roles/s3gw"
	"github.com/dfs-project/dfs/rpc"
)

// addrsFlag is a flag of a comma-separated address list that sets dst
// (through its Action, once the command line, the environment and the
// config file are read); its default is what dst holds.
func addrsFlag(name string, dst *[]string, envs []string, usage string) *cli.StringFlag {
	return &cli.StringFlag{Name: name, Value: strings.Join(*dst, ","), EnvVars: envs, Usage: usage,
		Action: func(_ *cli.Context, v string) error {
			*dst = SplitAddrs(v)
			return nil
		}}
}

// SplitAddrs splits a comma-separated address list.
func SplitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// byteSize lets a flag set an int64 byte count ("64MiB").
func byteSize(p *int64) *rpc.ByteSize { return (*rpc.ByteSize)(p) }

// superusersFlag is the --superusers flag of a server role.
func superusersFlag(dst *[]string) cli.Flag {
	return addrsFlag("superusers", dst, env("SUPERUSERS"), "comma-separated users who may do anything: bypass permissions, run dfs admin commands, read the admin endpoints")
}

// pprofFlag is the --pprof flag of a server role.
func pprofFlag(dst *bool) cli.Flag {
	return &cli.BoolFlag{Name: "pprof", Destination: dst, EnvVars: env("PPROF"), Usage: "also serve Go's profiles (net/http/pprof) under /debug/pprof/ on the admin address, for profiling in the field"}
}

// adminListenFlag is the --admin-listen flag of a server role.
func adminListenFlag(dst *string, usage string) cli.Flag {
	return &cli.StringFlag{Name: "admin-listen", Value: *dst, Destination: dst, EnvVars: env("ADMIN_LISTEN"), Usage: usage}
}

func (a *app) coordinatorCommand() *cli.Command {
	cfg := coordinator.DefaultConfig()
	sc := roles.DefaultStoreConfig()
	var admin roles.Admin
	return &cli.Command{
		Name: "coordinator", Usage: "run the coordinator (namespace, membership, placement)", Category: "server",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: cfg.Listen, Destination: &cfg.Listen, EnvVars: env("LISTEN"), Usage: "gRPC listen address"},
			&cli.StringFlag{Name: "advertise", Value: cfg.Advertise, Destination: &cfg.Advertise, EnvVars: env("ADVERTISE"), Usage: "address clients and datanodes reach this coordinator at (default: the listen address)"},
			&cli.StringFlag{Name: "data-dir", Value: sc.Dir, Destination: &sc.Dir, EnvVars: env("DATA_DIR"), Usage: "directory for the coordinator's state (the bolt metadata file)"},
			&cli.StringFlag{Name: "metadata", Value: sc.Kind, Destination: &sc.Kind, EnvVars: env("METADATA"), Usage: "metadata store: bolt (a file in --data-dir) or etcd (--etcd-endpoints)"},
			addrsFlag("etcd-endpoints", &sc.EtcdEndpoints, env("ETCD_ENDPOINTS"), "comma-separated etcd endpoints, with --metadata etcd"),
			&cli.StringFlag{Name: "etcd-prefix", Value: sc.EtcdPrefix, Destination: &sc.EtcdPrefix, EnvVars: env("ETCD_PREFIX"), Usage: "key prefix of this cluster's metadata in etcd"},
			&cli.StringFlag{Name: "etcd-ca", Value: sc.EtcdCA, Destination: &sc.EtcdCA, EnvVars: env("ETCD_CA"), Usage: "PEM file of the CA that signs etcd's certificate: dials etcd over TLS (empty: the system's CAs, if --etcd-cert is set)"},
			&cli.StringFlag{Name: "etcd-cert", Value: sc.EtcdCert, Destination: &sc.EtcdCert, EnvVars: env("ETCD_CERT"), Usage: "PEM client certificate to present to etcd (with --etcd-key)"},
			&cli.StringFlag{Name: "etcd-key", Value: sc.EtcdKey, Destination: &sc.EtcdKey, EnvVars: env("ETCD_KEY"), Usage: "PEM private key of --etcd-cert"},
			&cli.StringFlag{Name: "etcd-user", Value: sc.EtcdUser, Destination: &sc.EtcdUser, EnvVars: env("ETCD_USER"), Usage: "etcd user to authenticate as (with --etcd-password or --etcd-password-file)"},
			&cli.StringFlag{Name: "etcd-password", Value: sc.EtcdPassword, Destination: &sc.EtcdPassword, EnvVars: env("ETCD_PASSWORD"), Usage: "password of --etcd-user (prefer --etcd-password-file: a flag shows in ps)"},
			&cli.StringFlag{Name: "etcd-password-file", Value: sc.EtcdPasswordFile, Destination: &sc.EtcdPasswordFile, EnvVars: env("ETCD_PASSWORD_FILE"), Usage: "file holding the password of --etcd-user (a trailing newline is ignored)"},
			&cli.DurationFlag{Name: "leader-lease", Value: sc.LeaseTTL, Destination: &sc.LeaseTTL, EnvVars: env("LEADER_LEASE"), Usage: "with etcd: a leader silent this long is replaced by a standby"},
			&cli.StringFlag{Name: "restore", Value: sc.Restore, Destination: &sc.Restore, EnvVars: env("RESTORE"), Usage: "start from this backup (made by dfs admin backup); the metadata store must be empty"},
			&cli.DurationFlag{Name: "safe-mode-timeout", Value: cfg.SafeModeTimeout, Destination: &cfg.SafeModeTimeout, EnvVars: env("SAFE_MODE_TIMEOUT"), Usage: "after taking over, how long to wait for the datanodes to report more chunks before serving anyway with some unlocated"},
			&cli.IntFlag{Name: "replication", Value: cfg.Replication, Destination: &cfg.Replication, EnvVars: env("REPLICATION"), Usage: "default replication factor"},
			&cli.GenericFlag{Name: "chunk-size", Value: byteSize(&cfg.ChunkSize), EnvVars: env("CHUNK_SIZE"), Usage: "default chunk size (64KiB to 64MiB)"},
			&cli.DurationFlag{Name: "suspect-after", Value: cfg.SuspectAfter, Destination: &cfg.SuspectAfter, EnvVars: env("SUSPECT_AFTER"), Usage: "a datanode silent this long is suspect and gets no new chunks"},
			&cli.DurationFlag{Name: "dead-after", Value: cfg.DeadAfter, Destination: &cfg.DeadAfter, EnvVars: env("DEAD_AFTER"), Usage: "a datanode silent this long is dead"},
			&cli.DurationFlag{Name: "forget-dead-after", Value: cfg.ForgetDeadAfter, Destination: &cfg.ForgetDeadAfter, EnvVars: env("FORGET_DEAD_AFTER"), Usage: "a datanode dead this long is removed from the membership and its pending deletions dropped; it rejoins as a new node"},
			&cli.Float64Flag{Name: "register-rate", Value: cfg.RegisterRate, Destination: &cfg.RegisterRate, EnvVars: env("REGISTER_RATE"), Usage: "most datanode registrations per second on average (0: no limit); more are refused with ResourceExhausted and retried"},
			&cli.IntFlag{Name: "register-burst", Value: cfg.RegisterBurst, Destination: &cfg.RegisterBurst, EnvVars: env("REGISTER_BURST"), Usage: "most datanode registrations accepted at once, beyond --register-rate"},
			&cli.IntFlag{Name: "max-inventories", Value: cfg.MaxInventories, Destination: &cfg.MaxInventories, EnvVars: env("MAX_INVENTORIES"), Usage: "most datanodes' full chunk inventories applied at once; the others wait their turn, first come, first served"},
			&cli.DurationFlag{Name: "inventory-wait", Value: cfg.InventoryWait, Destination: &cfg.InventoryWait, EnvVars: env("INVENTORY_WAIT"), Usage: "longest a full inventory waits for its turn before its datanode is told to send it again after as long (keep it below the datanodes' --rpc-timeout)"},
			&cli.DurationFlag{Name: "session-timeout", Value: cfg.SessionTimeout, Destination: &cfg.SessionTimeout, EnvVars: env("SESSION_TIMEOUT"), Usage: "an upload idle this long is aborted and its chunks collected"},
			&cli.IntFlag{Name: "max-uploads", Value: cfg.MaxUploads, Destination: &cfg.MaxUploads, EnvVars: env("MAX_UPLOADS"), Usage: "most uploads open at once; more are refused until some commit, abort or expire"},
			&cli.IntFlag{Name: "max-file-chunks", Value: cfg.MaxFileChunks, Destination: &cfg.MaxFileChunks, EnvVars: env("MAX_FILE_CHUNKS"), Usage: "most chunks one file may have (at most 1048576); larger uploads are refused before any chunk is sent"},
			&cli.DurationFlag{Name: "gc-delay", Value: cfg.GCDelay, Destination: &cfg.GCDelay, EnvVars: env("GC_DELAY"), Usage: "wait this long before deleting the chunks of a removed or replaced file, so running reads finish"},
			&cli.GenericFlag{Name: "repair-bandwidth", Value: byteSize(&cfg.RepairBandwidth), EnvVars: env("REPAIR_BANDWIDTH"), Usage: "most bytes per second re-replicated cluster-wide (0: no cap)"},
			&cli.IntFlag{Name: "repair-concurrency", Value: cfg.RepairTotal, Destination: &cfg.RepairTotal, EnvVars: env("REPAIR_CONCURRENCY"), Usage: "most chunk copies running at once in the cluster"},
			&cli.IntFlag{Name: "repair-per-node", Value: cfg.RepairPerNode, Destination: &cfg.RepairPerNode, EnvVars: env("REPAIR_PER_NODE"), Usage: "most chunk copies one datanode takes part in at once"},
			&cli.DurationFlag{Name: "scan-interval", Value: cfg.ScanInterval, Destination: &cfg.ScanInterval, EnvVars: env("SCAN_INTERVAL"), Usage: "the paced health pass re-checks every chunk (and looks for orphans) once per this long; events (a node dead, a copy lost or bad) are handled at once"},
			&cli.DurationFlag{Name: "orphan-grace", Value: cfg.OrphanGrace, Destination: &cfg.OrphanGrace, EnvVars: env("ORPHAN_GRACE"), Usage: "a chunk no file or upload needs is deleted after this long"},
			&cli.StringFlag{Name: "placement", Value: cfg.Placement, Destination: &cfg.Placement, EnvVars: env("PLACEMENT"), Usage: "placement policy: most-free or random"},
			&cli.DurationFlag{Name: "rpc-timeout", Value: cfg.RPCTimeout, Destination: &cfg.RPCTimeout, EnvVars: env("RPC_TIMEOUT"), Usage: "timeout of calls to datanodes"},
			&cli.DurationFlag{Name: "failure-penalty", Value: cfg.FailurePenalty, Destination: &cfg.FailurePenalty, EnvVars: env("FAILURE_PENALTY"), Usage: "a datanode reported failing a chunk stream gets new chunks only after every other node for this long (0: ignore reports)"},
			&cli.GenericFlag{Name: "token-max-lifetime", Value: (*lifetime)(&cfg.TokenMaxLifetime), EnvVars: env("TOKEN_MAX_LIFETIME"), Usage: "the longest a bearer token this coordinator signs (dfs admin token create) may live: 12h, 7d, 90d"},
			adminListenFlag(&admin.Listen, "admin HTTP address for /metrics, /healthz, /readyz and the status page at / (empty: none; off loopback, HTTPS for servers and superusers only)"),
			pprofFlag(&admin.Pprof),
			superusersFlag(&cfg.Superusers),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return rpc.Errorf(rpc.Invalid, "coordinator takes no arguments, got %q", c.Args().First())
			}
			t, err := a.sec.server(pki.Coordinator, a.log)
			if err != nil {
				return err
			}
			return roles.RunCoordinator(c.Context, cfg, sc, admin, t, a.log)
		},
	}
}

func (a *app) datanodeCommand() *cli.Command {
	cfg := datanode.DefaultConfig()
	var admin roles.Admin
	superusers := []string{auth.DefaultSuperuser}
	return &cli.Command{
		Name: "datanode", Usage: "run a datanode (chunk storage and streaming)", Category: "server",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: cfg.Listen, Destination: &cfg.Listen, EnvVars: env("LISTEN"), Usage: "gRPC listen address"},
			&cli.StringFlag{Name: "advertise", Value: cfg.Advertise, Destination: &cfg.Advertise, EnvVars: env("ADVERTISE"), Usage: "address peers and clients dial (default: the listen address, with the host name if it has no host)"},
			&cli.StringFlag{Name: "data-dir", Value: cfg.DataDir, Destination: &cfg.DataDir, EnvVars: env("DATA_DIR"), Usage: "directory for the node ID and the chunks"},
			addrsFlag("coordinator", &cfg.Coordinators, env("COORDINATOR"), "coordinator address, or a comma-separated list"),
			&cli.GenericFlag{Name: "capacity", Value: byteSize(&cfg.Capacity), EnvVars: env("CAPACITY"), Usage: "most bytes to store (default: the whole filesystem)"},
			&cli.GenericFlag{Name: "pack-threshold", Value: byteSize(&cfg.PackThreshold), EnvVars: env("PACK_THRESHOLD"), Usage: "largest chunk stored in a pack file, many fsynced together (0: every chunk a file)"},
			&cli.DurationFlag{Name: "heartbeat-interval", Value: cfg.HeartbeatInterval, Destination: &cfg.HeartbeatInterval, EnvVars: env("HEARTBEAT_INTERVAL"), Usage: "pause between heartbeats"},
			&cli.DurationFlag{Name: "session-timeout", Value: cfg.SessionTimeout, Destination: &cfg.SessionTimeout, EnvVars: env("SESSION_TIMEOUT"), Usage: "a prepared or stalled chunk stream expires after this and its partial file is removed"},
			&cli.IntFlag{Name: "max-sessions", Value: cfg.MaxSessions, Destination: &cfg.MaxSessions, EnvVars: env("MAX_SESSIONS"), Usage: "most upload streams prepared or running (inline-prepared ones included), and most download streams prepared and not yet started; more are refused and the client tries another node"},
			&cli.GenericFlag{Name: "frame-budget", Value: byteSize(&cfg.FrameBudget), EnvVars: env("FRAME_BUDGET"), Usage: "most bytes of chunk frames held in memory by all upload and repair streams at once; streams beyond it wait (at least 8MiB)"},
			&cli.IntFlag{Name: "max-conn-streams", Value: cfg.MaxConnStreams, Destination: &cfg.MaxConnStreams, EnvVars: env("MAX_CONN_STREAMS"), Usage: "most concurrent calls on one incoming connection; a client's calls beyond it wait in the client"},
			&cli.DurationFlag{Name: "rpc-timeout", Value: cfg.RPCTimeout, Destination: &cfg.RPCTimeout, EnvVars: env("RPC_TIMEOUT"), Usage: "timeout of calls to peers and the coordinator"},
			&cli.DurationFlag{Name: "stream-progress-timeout", Value: cfg.ProgressTimeout, Destination: &cfg.ProgressTimeout, EnvVars: env("STREAM_PROGRESS_TIMEOUT"), Usage: "a stream to a peer (a replica, a repair source) that shows no progress this long fails, naming the peer"},
			&cli.IntFlag{Name: "max-peer-conns", Value: cfg.MaxPeerConns, Destination: &cfg.MaxPeerConns, EnvVars: env("MAX_PEER_CONNS"), Usage: "most connections kept to other datanodes and the coordinators; beyond it the one unused the longest is closed"},
			&cli.DurationFlag{Name: "peer-idle-timeout", Value: cfg.PeerIdleTimeout, Destination: &cfg.PeerIdleTimeout, EnvVars: env("PEER_IDLE_TIMEOUT"), Usage: "a connection to another datanode or a coordinator that carried no call for this long is closed"},
			&cli.DurationFlag{Name: "inventory-interval", Value: cfg.InventoryInterval, Destination: &cfg.InventoryInterval, EnvVars: env("INVENTORY_INTERVAL"), Usage: "pause between full chunk inventory reports to the coordinator, each after a disk check for chunk files gone (one is also sent after every registration)"},
			&cli.DurationFlag{Name: "scrub-interval", Value: cfg.ScrubInterval, Destination: &cfg.ScrubInterval, EnvVars: env("SCRUB_INTERVAL"), Usage: "pause between scrub passes over every stored chunk (0: continuous)"},
			&cli.GenericFlag{Name: "scrub-rate", Value: byteSize(&cfg.ScrubRate), EnvVars: env("SCRUB_RATE"), Usage: "most bytes per second the scrubber reads (0: no scrubbing)"},
			adminListenFlag(&admin.Listen, "admin HTTP address for /metrics, /healthz and /readyz (empty: none; off loopback, HTTPS for servers and superusers only)"),
			pprofFlag(&admin.Pprof),
			superusersFlag(&superusers),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return rpc.Errorf(rpc.Invalid, "datanode takes no arguments, got %q", c.Args().First())
			}
			t, err := a.sec.server(pki.Datanode, a.log)
			if err != nil {
				return err
			}
			return roles.RunDatanode(c.Context, cfg, admin, t, superusers, a.log)
		},
	}
}

func (a *app) devCommand() *cli.Command {
	dir, nodes, listen, replication, admin := "./dfs-dev", 3, "127.0.0.1:7000", 3, "127.0.0.1:7080"
	var pprofOn bool
	s3Listen := s3gw.DefaultListen
	var mountDir string
	return &cli.Command{
		Name: "dev", Usage: "run a coordinator and N datanodes in this process, for trying dfs out", Category: "server",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Value: dir, Destination: &dir, EnvVars: env("DATA_DIR"), Usage: "directory for every node's data"},
			&cli.IntFlag{Name: "nodes", Value: nodes, Destination: &nodes, EnvVars: env("NODES"), Usage: "number of datanodes"},
			&cli.StringFlag{Name: "listen", Value: listen, Destination: &listen, EnvVars: env("LISTEN"), Usage: "coordinator listen address"},
			&cli.IntFlag{Name: "replication", Value: replication, Destination: &replication, EnvVars: env("REPLICATION"), Usage: "default replication factor"},
			adminListenFlag(&admin, "the coordinator's admin HTTP address: status page, /metrics, /healthz, /readyz (empty: none)"),
			pprofFlag(&pprofOn),
			&cli.StringFlag{Name: "s3-listen", Value: s3Listen, Destination: &s3Listen, EnvVars: env("S3_LISTEN"), Usage: "address of an S3 gateway to the cluster, with credentials printed at start (empty: none)"},
			&cli.StringFlag{Name: "mount", Destination: &mountDir, EnvVars: env("DEV_MOUNT"), Usage: "also serve the cluster at this directory (FUSE), as dfs mount does"},
		},
		Action: func(c *cli.Context) error {
			if nodes < 1 || nodes > 64 {
				return rpc.Errorf(rpc.Invalid, "--nodes must be between 1 and 64")
			}
			cfg := roles.DefaultClusterConfig(dir)
			cfg.Nodes, cfg.Listen, cfg.Log = nodes, listen, a.log
			cfg.Secure = !a.sec.insecure
			if a.sec.insecure {
				a.log.Warn().Msg("dfs dev without TLS (--insecure): anyone who can reach its ports can read, write and delete any file")
			} else if a.sec.files.Set() || a.sec.token != "" {
				return rpc.Errorf(rpc.Invalid, "dfs dev makes its own CA and certificates under --data-dir/tls: it takes no --tls-* or --token")
			}
			cfg.AdminListen, cfg.Pprof = admin, pprofOn
			cfg.Coordinator.Replication = replication
			if replication > nodes {
				fmt.Fprintf(a.stdio.Err, "dfs dev: replication %d needs %d datanodes; using %d\n", replication, replication, nodes)
				cfg.Coordinator.Replication = nodes
			}
			cl, err := roles.StartCluster(c.Context, cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdio.Out, "dfs dev: coordinator at %s with %d datanodes in %s\n", cl.Addr(), nodes, cfg.Dir)
			if addr := cl.AdminAddr(); addr != "" {
				fmt.Fprintf(a.stdio.Out, "dfs dev: status page at http://%s/ (metrics at /metrics)\n", addr)
			}
			if p := cl.PKI(); p != nil {
				f := p.Files(auth.DefaultSuperuser)
				abs := func(p string) string {
					if a, err := filepath.Abs(p); err == nil {
						return a
					}
					return p
				}
				fmt.Fprintf(a.stdio.Out, "dfs dev: TLS on every port, CA and certificates in %s; you are the superuser %q. In another shell:\n", abs(p.Dir), auth.DefaultSuperuser)
				fmt.Fprintf(a.stdio.Out, "export DFS_COORDINATOR=%s DFS_TLS_CA=%s DFS_TLS_CERT=%s DFS_TLS_KEY=%s\n", cl.Addr(), abs(f.CA), abs(f.Cert), abs(f.Key))
				fmt.Fprintf(a.stdio.Out, "dfs nodes\n")
			} else {
				fmt.Fprintf(a.stdio.Out, "try: DFS_COORDINATOR=%s DFS_INSECURE=true dfs nodes\n", cl.Addr())
			}
			unmounted := func() error { return nil }
			if mountDir != "" {
				if unmounted, err = a.devMount(c.Context, cl, mountDir); err != nil {
					cl.Close()
					return err
				}
			}
			var gwDone chan error
			if s3Listen != "" {
				if gwDone, err = a.devGateway(c.Context, cl, s3Listen); err != nil {
					// The cluster is what dev is for: it runs on without
					// the gateway (another dev holds the port, say).
					fmt.Fprintf(a.stdio.Err, "dfs dev: no S3 gateway: %s\n", oneLine(err.Error()))
					gwDone = nil
				}
			}
			<-c.Context.Done()
			fmt.Fprintln(a.stdio.Out, "dfs dev: stopping")
			merr := unmounted() // before the cluster goes
			if gwDone != nil {
				if err := <-gwDone; err != nil {
					a.log.Warn().Err(err).Msg("s3 gateway")
				}
			}
			if err := cl.Close(); err != nil {
				return err
			}
			return merr
		},
	}
}

// devGateway starts the S3 gateway of dfs dev on listen, with a fresh
// access key, acting for the superuser when the cluster has TLS; it prints
// the endpoint and the credentials. The returned channel gives Run's
// result once ctx ends.
func (a *app) devGateway(ctx context.Context, cl *roles.Cluster, listen string) (chan error, error) {
	ccfg := client.Config{Coordinators: []string{cl.Addr()}, Logger: &a.log}
	user := ""
	if cl.PKI() != nil {
		gc, err := cl.GatewayConfig("s3-gateway")
		if err != nil {
			return nil, err
		}
		ccfg, user = gc, auth.DefaultSuperuser
		ccfg.Logger = &a.log
	}
	c, err := client.New(ctx, ccfg)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 20)
	rand.Read(secret)
	key := s3gw.Key{Access: "dfsdev", Secret: hex.EncodeToString(secret), User: user}
	cfg := s3gw.DefaultConfig()
	cfg.Listen, cfg.Keys = listen, []s3gw.Key{key}
	g, err := s3gw.New(cfg, c, a.log)
	if err != nil {
		c.Close()
		return nil, rpc.Errorf(rpc.Invalid, "s3 gateway: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		err := g.Run(ctx)
		c.Close()
		done <- err
	}()
	select {
	case <-g.Ready():
	case err := <-done:
		return nil, fmt.Errorf("s3 gateway on %s: %w", listen, err)
	}
	fmt.Fprintf(a.stdio.Out, "dfs dev: S3 gateway at %s (region %s)\n", g.Endpoint(), cfg.Region)
	fmt.Fprintf(a.stdio.Out, "export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_ENDPOINT_URL=%s AWS_REGION=%s\n", key.Access, key.Secret, g.Endpoint(), cfg.Region)
	return done, nil
}

// devMount serves the dev cluster cl at dir until ctx ends; it returns
// once the mount answers, with a function that waits for the mount to
// end, or with the reason it cannot mount.
func (a *app) devMount(ctx context.Context, cl *roles.Cluster, dir string) (func() error, error) {
	if err := mount.Available(); err != nil {
		return nil, rpc.Errorf(rpc.FailedPrecondition, "--mount: %v", err)
	}
	ccfg := client.DefaultConfig()
	ccfg.Logger = &a.log
	c, err := cl.Client(ccfg)
	if err != nil {
		return nil, err
	}
	mc := mount.DefaultConfig()
	mc.Mountpoint = dir
	m, err := mount.New(mc, c, a.log)
	if err != nil {
		c.Close()
		return nil, err
	}
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		err := m.Run(ctx, func() { close(ready) })
		c.Close()
		done <- err
	}()
	select {
	case <-ready:
		fmt.Fprintf(a.stdio.Out, "dfs dev: the cluster is mounted at %s\n", dir)
		return func() error { return <-done }, nil
	case err := <-done:
		return nil, err
	}
}
