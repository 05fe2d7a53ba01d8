package roles

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore"
	"github.com/dfs-project/dfs/roles/datanode"
	"github.com/dfs-project/dfs/rpc"
)

func env(name string) []string { return []string{"DFS_" + name} }

// Commands returns every dfs subcommand. log is the process logger;
// stdio is where client commands print.
func Commands(log func() zerolog.Logger, stdio client.IO) []*cli.Command {
	cmds := []*cli.Command{coordinatorCommand(log), datanodeCommand(log), devCommand(log, stdio), benchCommand(log, stdio)}
	cmds = append(cmds, healthCommand(stdio))
	cmds = append(cmds, client.Commands(log, stdio)...)
	// admin salvage works on files, with no coordinator running: it lives
	// here, beside the metadata store, not in the client's commands.
	for _, c := range cmds {
		if c.Name == "admin" {
			c.Subcommands = append(c.Subcommands, salvageCommand(stdio))
		}
	}
	return cmds
}

func coordinatorFlags() []cli.Flag {
	d := coordinator.DefaultConfig()
	return []cli.Flag{
		&cli.StringFlag{Name: "listen", Value: d.Listen, EnvVars: env("LISTEN"), Usage: "gRPC listen address"},
		&cli.StringFlag{Name: "advertise", EnvVars: env("ADVERTISE"), Usage: "address clients and datanodes reach this coordinator at (default: the listen address)"},
		&cli.StringFlag{Name: "data-dir", Value: "./dfs-data/coordinator", EnvVars: env("DATA_DIR"), Usage: "directory for the coordinator's state (the bolt metadata file)"},
		&cli.StringFlag{Name: "metadata", Value: "bolt", EnvVars: env("METADATA"), Usage: "metadata store: bolt (a file in --data-dir) or etcd (--etcd-endpoints)"},
		&cli.StringFlag{Name: "etcd-endpoints", EnvVars: env("ETCD_ENDPOINTS"), Usage: "comma-separated etcd endpoints, with --metadata etcd"},
		&cli.StringFlag{Name: "etcd-prefix", Value: "/dfs/", EnvVars: env("ETCD_PREFIX"), Usage: "key prefix of this cluster's metadata in etcd"},
		&cli.DurationFlag{Name: "leader-lease", Value: etcdstore.DefaultLeaseTTL, EnvVars: env("LEADER_LEASE"), Usage: "with etcd: a leader silent this long is replaced by a standby"},
		&cli.StringFlag{Name: "restore", EnvVars: env("RESTORE"), Usage: "start from this backup (made by dfs admin backup); the metadata store must be empty"},
		&cli.DurationFlag{Name: "safe-mode-timeout", Value: d.SafeModeTimeout, EnvVars: env("SAFE_MODE_TIMEOUT"), Usage: "longest wait, after taking over, for the datanodes to report every chunk before serving anyway"},
		&cli.IntFlag{Name: "replication", Value: d.Replication, EnvVars: env("REPLICATION"), Usage: "default replication factor"},
		&cli.GenericFlag{Name: "chunk-size", Value: ptr(rpc.ByteSize(d.ChunkSize)), EnvVars: env("CHUNK_SIZE"), Usage: "default chunk size (64KiB to 64MiB)"},
		&cli.DurationFlag{Name: "suspect-after", Value: d.SuspectAfter, EnvVars: env("SUSPECT_AFTER"), Usage: "a datanode silent this long is suspect and gets no new chunks"},
		&cli.DurationFlag{Name: "dead-after", Value: d.DeadAfter, EnvVars: env("DEAD_AFTER"), Usage: "a datanode silent this long is dead"},
		&cli.DurationFlag{Name: "forget-dead-after", Value: d.ForgetDeadAfter, EnvVars: env("FORGET_DEAD_AFTER"), Usage: "a datanode dead this long is removed from the membership and its pending deletions dropped; it rejoins as a new node"},
		&cli.Float64Flag{Name: "register-rate", Value: d.RegisterRate, EnvVars: env("REGISTER_RATE"), Usage: "most datanode registrations per second on average (0: no limit); more are refused with ResourceExhausted and retried"},
		&cli.IntFlag{Name: "register-burst", Value: d.RegisterBurst, EnvVars: env("REGISTER_BURST"), Usage: "most datanode registrations accepted at once, beyond --register-rate"},
		&cli.DurationFlag{Name: "session-timeout", Value: d.SessionTimeout, EnvVars: env("SESSION_TIMEOUT"), Usage: "an upload idle this long is aborted and its chunks collected"},
		&cli.IntFlag{Name: "max-uploads", Value: d.MaxUploads, EnvVars: env("MAX_UPLOADS"), Usage: "most uploads open at once; more are refused until some commit, abort or expire"},
		&cli.IntFlag{Name: "max-file-chunks", Value: d.MaxFileChunks, EnvVars: env("MAX_FILE_CHUNKS"), Usage: "most chunks one file may have (at most 1048576); larger uploads are refused before any chunk is sent"},
		&cli.DurationFlag{Name: "gc-delay", Value: d.GCDelay, EnvVars: env("GC_DELAY"), Usage: "wait this long before deleting the chunks of a removed or replaced file, so running reads finish"},
		&cli.GenericFlag{Name: "repair-bandwidth", Value: ptr(rpc.ByteSize(d.RepairBandwidth)), EnvVars: env("REPAIR_BANDWIDTH"), Usage: "most bytes per second re-replicated cluster-wide (0: no cap)"},
		&cli.IntFlag{Name: "repair-concurrency", Value: d.RepairTotal, EnvVars: env("REPAIR_CONCURRENCY"), Usage: "most chunk copies running at once in the cluster"},
		&cli.IntFlag{Name: "repair-per-node", Value: d.RepairPerNode, EnvVars: env("REPAIR_PER_NODE"), Usage: "most chunk copies one datanode takes part in at once"},
		&cli.DurationFlag{Name: "orphan-grace", Value: d.OrphanGrace, EnvVars: env("ORPHAN_GRACE"), Usage: "a chunk no file or upload needs is deleted after this long"},
		&cli.StringFlag{Name: "placement", Value: d.Placement, EnvVars: env("PLACEMENT"), Usage: "placement policy: most-free or random"},
		&cli.DurationFlag{Name: "rpc-timeout", Value: d.RPCTimeout, EnvVars: env("RPC_TIMEOUT"), Usage: "timeout of calls to datanodes"},
		&cli.DurationFlag{Name: "failure-penalty", Value: d.FailurePenalty, EnvVars: env("FAILURE_PENALTY"), Usage: "a datanode reported failing a chunk stream gets new chunks only after every other node for this long (0: ignore reports)"},
		adminListenFlag("", "admin HTTP address for /metrics, /healthz, /readyz and the status page at / (empty: none)"),
	}
}

// adminListenFlag is the --admin-listen flag of a server role.
func adminListenFlag(value, usage string) cli.Flag {
	return &cli.StringFlag{Name: "admin-listen", Value: value, EnvVars: env("ADMIN_LISTEN"), Usage: usage}
}

func coordinatorConfig(c *cli.Context) coordinator.Config {
	cfg := coordinator.DefaultConfig()
	cfg.Listen = c.String("listen")
	cfg.Advertise = c.String("advertise")
	cfg.SafeModeTimeout = c.Duration("safe-mode-timeout")
	cfg.Replication = c.Int("replication")
	cfg.ChunkSize = int64(*c.Generic("chunk-size").(*rpc.ByteSize))
	cfg.SuspectAfter = c.Duration("suspect-after")
	cfg.DeadAfter = c.Duration("dead-after")
	cfg.ForgetDeadAfter = c.Duration("forget-dead-after")
	cfg.RegisterRate = c.Float64("register-rate")
	cfg.RegisterBurst = c.Int("register-burst")
	cfg.SessionTimeout = c.Duration("session-timeout")
	cfg.MaxUploads = c.Int("max-uploads")
	cfg.MaxFileChunks = c.Int("max-file-chunks")
	cfg.GCDelay = c.Duration("gc-delay")
	cfg.RepairBandwidth = int64(*c.Generic("repair-bandwidth").(*rpc.ByteSize))
	cfg.RepairTotal = c.Int("repair-concurrency")
	cfg.RepairPerNode = c.Int("repair-per-node")
	cfg.OrphanGrace = c.Duration("orphan-grace")
	cfg.Placement = c.String("placement")
	cfg.RPCTimeout = c.Duration("rpc-timeout")
	cfg.FailurePenalty = c.Duration("failure-penalty")
	return cfg
}

func coordinatorCommand(log func() zerolog.Logger) *cli.Command {
	return &cli.Command{
		Name: "coordinator", Usage: "run the coordinator (namespace, membership, placement)", Category: "server",
		Flags: coordinatorFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return rpc.Errorf(rpc.Invalid, "coordinator takes no arguments, got %q", c.Args().First())
			}
			return runCoordinator(c.Context, coordinatorConfig(c), storeConfig{
				kind: c.String("metadata"), dir: c.String("data-dir"),
				etcdEndpoints: client.SplitAddrs(c.String("etcd-endpoints")), etcdPrefix: c.String("etcd-prefix"),
				leaseTTL: c.Duration("leader-lease"),
				restore:  c.String("restore"),
			}, c.String("admin-listen"), log())
		},
	}
}

func datanodeFlags() []cli.Flag {
	d := datanode.DefaultConfig()
	return []cli.Flag{
		&cli.StringFlag{Name: "listen", Value: d.Listen, EnvVars: env("LISTEN"), Usage: "gRPC listen address"},
		&cli.StringFlag{Name: "advertise", EnvVars: env("ADVERTISE"), Usage: "address peers and clients dial (default: the listen address, with the host name if it has no host)"},
		&cli.StringFlag{Name: "data-dir", Value: d.DataDir, EnvVars: env("DATA_DIR"), Usage: "directory for the node ID and the chunks"},
		&cli.StringFlag{Name: "coordinator", Value: d.Coordinators[0], EnvVars: env("COORDINATOR"), Usage: "coordinator address, or a comma-separated list"},
		&cli.GenericFlag{Name: "capacity", Value: new(rpc.ByteSize), EnvVars: env("CAPACITY"), Usage: "most bytes to store (default: the whole filesystem)"},
		&cli.DurationFlag{Name: "heartbeat-interval", Value: d.HeartbeatInterval, EnvVars: env("HEARTBEAT_INTERVAL"), Usage: "pause between heartbeats"},
		&cli.DurationFlag{Name: "session-timeout", Value: d.SessionTimeout, EnvVars: env("SESSION_TIMEOUT"), Usage: "a prepared or stalled chunk stream expires after this and its partial file is removed"},
		&cli.IntFlag{Name: "max-sessions", Value: d.MaxSessions, EnvVars: env("MAX_SESSIONS"), Usage: "most upload streams prepared or running (inline-prepared ones included), and most download streams prepared and not yet started; more are refused and the client tries another node"},
		&cli.GenericFlag{Name: "frame-budget", Value: ptr(rpc.ByteSize(d.FrameBudget)), EnvVars: env("FRAME_BUDGET"), Usage: "most bytes of chunk frames held in memory by all upload and repair streams at once; streams beyond it wait (at least 8MiB)"},
		&cli.IntFlag{Name: "max-conn-streams", Value: d.MaxConnStreams, EnvVars: env("MAX_CONN_STREAMS"), Usage: "most concurrent calls on one incoming connection; a client's calls beyond it wait in the client"},
		&cli.DurationFlag{Name: "rpc-timeout", Value: d.RPCTimeout, EnvVars: env("RPC_TIMEOUT"), Usage: "timeout of calls to peers and the coordinator"},
		&cli.DurationFlag{Name: "stream-progress-timeout", Value: d.ProgressTimeout, EnvVars: env("STREAM_PROGRESS_TIMEOUT"), Usage: "a stream to a peer (a replica, a repair source) that shows no progress this long fails, naming the peer"},
		&cli.IntFlag{Name: "max-peer-conns", Value: d.MaxPeerConns, EnvVars: env("MAX_PEER_CONNS"), Usage: "most connections kept to other datanodes and the coordinators; beyond it the one unused the longest is closed"},
		&cli.DurationFlag{Name: "peer-idle-timeout", Value: d.PeerIdleTimeout, EnvVars: env("PEER_IDLE_TIMEOUT"), Usage: "a connection to another datanode or a coordinator that carried no call for this long is closed"},
		&cli.DurationFlag{Name: "inventory-interval", Value: d.InventoryInterval, EnvVars: env("INVENTORY_INTERVAL"), Usage: "pause between full chunk inventory reports to the coordinator, each after a disk check for chunk files gone (one is also sent after every registration)"},
		&cli.DurationFlag{Name: "scrub-interval", Value: d.ScrubInterval, EnvVars: env("SCRUB_INTERVAL"), Usage: "pause between scrub passes over every stored chunk (0: continuous)"},
		&cli.GenericFlag{Name: "scrub-rate", Value: ptr(rpc.ByteSize(d.ScrubRate)), EnvVars: env("SCRUB_RATE"), Usage: "most bytes per second the scrubber reads (0: no scrubbing)"},
		adminListenFlag("", "admin HTTP address for /metrics, /healthz and /readyz (empty: none)"),
	}
}

func datanodeConfig(c *cli.Context) datanode.Config {
	cfg := datanode.DefaultConfig()
	cfg.Listen = c.String("listen")
	cfg.Advertise = c.String("advertise")
	cfg.DataDir = c.String("data-dir")
	cfg.Coordinators = client.SplitAddrs(c.String("coordinator"))
	cfg.Capacity = int64(*c.Generic("capacity").(*rpc.ByteSize))
	cfg.HeartbeatInterval = c.Duration("heartbeat-interval")
	cfg.SessionTimeout = c.Duration("session-timeout")
	cfg.MaxSessions = c.Int("max-sessions")
	cfg.FrameBudget = int64(*c.Generic("frame-budget").(*rpc.ByteSize))
	cfg.MaxConnStreams = c.Int("max-conn-streams")
	cfg.RPCTimeout = c.Duration("rpc-timeout")
	cfg.ProgressTimeout = c.Duration("stream-progress-timeout")
	cfg.MaxPeerConns = c.Int("max-peer-conns")
	cfg.PeerIdleTimeout = c.Duration("peer-idle-timeout")
	cfg.InventoryInterval = c.Duration("inventory-interval")
	cfg.ScrubInterval = c.Duration("scrub-interval")
	cfg.ScrubRate = int64(*c.Generic("scrub-rate").(*rpc.ByteSize))
	return cfg
}

func datanodeCommand(log func() zerolog.Logger) *cli.Command {
	return &cli.Command{
		Name: "datanode", Usage: "run a datanode (chunk storage and streaming)", Category: "server",
		Flags: datanodeFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return rpc.Errorf(rpc.Invalid, "datanode takes no arguments, got %q", c.Args().First())
			}
			return runDatanode(c.Context, datanodeConfig(c), c.String("admin-listen"), log())
		},
	}
}

// runDatanode opens the admin address (adminAddr, "" for none) and runs a
// datanode with its admin endpoints until ctx ends.
func runDatanode(ctx context.Context, cfg datanode.Config, adminAddr string, log zerolog.Logger) error {
	admin, err := adminListen(adminAddr)
	if err != nil {
		return err
	}
	if admin != nil {
		defer admin.Close() // in case the datanode never starts
	}
	reg := newMetricsRegistry()
	dn, err := datanode.New(cfg, datanode.Deps{Log: log, Metrics: reg})
	if err != nil {
		return err
	}
	ready := func(context.Context) error { return dn.Readiness() }
	return runWithAdmin(ctx, admin, adminHandler(reg, ready, nil), log, func(ctx context.Context) error {
		return runNotifying(ctx, dn.Serving(), log, dn.Run)
	})
}

func ptr[T any](v T) *T { return &v }

func devCommand(log func() zerolog.Logger, stdio client.IO) *cli.Command {
	return &cli.Command{
		Name: "dev", Usage: "run a coordinator and N datanodes in this process, for trying dfs out", Category: "server",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Value: "./dfs-dev", EnvVars: env("DATA_DIR"), Usage: "directory for every node's data"},
			&cli.IntFlag{Name: "nodes", Value: 3, EnvVars: env("NODES"), Usage: "number of datanodes"},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7000", EnvVars: env("LISTEN"), Usage: "coordinator listen address"},
			&cli.IntFlag{Name: "replication", Value: 3, EnvVars: env("REPLICATION"), Usage: "default replication factor"},
			adminListenFlag("127.0.0.1:7080", "the coordinator's admin HTTP address: status page, /metrics, /healthz, /readyz (empty: none)"),
		},
		Action: func(c *cli.Context) error {
			n := c.Int("nodes")
			if n < 1 || n > 64 {
				return rpc.Errorf(rpc.Invalid, "--nodes must be between 1 and 64")
			}
			cfg := DefaultClusterConfig(c.String("data-dir"))
			cfg.Nodes, cfg.Listen, cfg.Log = n, c.String("listen"), log()
			cfg.AdminListen = c.String("admin-listen")
			cfg.Coordinator.Replication = c.Int("replication")
			if cfg.Coordinator.Replication > n {
				fmt.Fprintf(stdio.Err, "dfs dev: replication %d needs %d datanodes; using %d\n", cfg.Coordinator.Replication, cfg.Coordinator.Replication, n)
				cfg.Coordinator.Replication = n
			}
			cl, err := StartCluster(c.Context, cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "dfs dev: coordinator at %s with %d datanodes in %s\n", cl.Addr(), n, cfg.Dir)
			if a := cl.AdminAddr(); a != "" {
				fmt.Fprintf(stdio.Out, "dfs dev: status page at http://%s/ (metrics at /metrics)\n", a)
			}
			fmt.Fprintf(stdio.Out, "try: DFS_COORDINATOR=%s dfs nodes\n", cl.Addr())
			<-c.Context.Done()
			fmt.Fprintln(stdio.Out, "dfs dev: stopping")
			return cl.Close()
		},
	}
}
