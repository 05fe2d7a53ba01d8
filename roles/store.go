package roles

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/boltstore"
	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore"
	"github.com/dfs-project/dfs/rpc"
)

// boltFile is the metadata file in a coordinator's data dir.
const boltFile = "metadata.db"

// OpenBolt opens (creating if needed) the bolt metadata store in dir.
func OpenBolt(dir string, log zerolog.Logger) (*boltstore.Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("coordinator: data dir: %w", err)
	}
	return boltstore.Open(filepath.Join(dir, boltFile), boltstore.Options{Log: log})
}

// StoreConfig says which metadata store a coordinator uses.
type StoreConfig struct {
	// Kind is bolt (a file in Dir) or etcd (at EtcdEndpoints).
	Kind          string
	Dir           string
	EtcdEndpoints []string
	// EtcdPrefix is the key prefix of this cluster's metadata in etcd.
	EtcdPrefix string
	// EtcdCA, EtcdCert and EtcdKey are the PEM files of TLS to etcd: the
	// CA that signs etcd's certificate (empty: the system's), and a
	// client certificate and key if etcd asks for one. Any of them set
	// dials etcd over TLS.
	EtcdCA, EtcdCert, EtcdKey string
	// EtcdUser and EtcdPassword authenticate to etcd (etcd's own users);
	// EtcdPasswordFile names a file holding the password instead.
	EtcdUser, EtcdPassword, EtcdPasswordFile string
	// LeaseTTL is the leader lease with etcd.
	LeaseTTL time.Duration
	// Restore is a backup file to start from ("" for none).
	Restore string
}

// DefaultStoreConfig returns the defaults of `dfs coordinator`.
func DefaultStoreConfig() StoreConfig {
	return StoreConfig{Kind: "bolt", Dir: "./dfs-data/coordinator", EtcdPrefix: "/dfs/", LeaseTTL: etcdstore.DefaultLeaseTTL}
}

// RunCoordinator opens the admin address (adm.Listen, "" for none) and the
// metadata store, restores a backup into the store if asked, and runs a
// coordinator with its admin endpoints until ctx ends. With t it serves
// and dials over TLS and checks every caller (t's files are reloaded when
// they change and on SIGHUP); nil runs in plain text.
func RunCoordinator(ctx context.Context, cfg coordinator.Config, sc StoreConfig, adm Admin, t *pki.TLS, log zerolog.Logger) error {
	admin, err := adminListen(adm.Listen)
	if err != nil {
		return err
	}
	if admin != nil {
		defer admin.Close() // in case the coordinator never starts
	}
	reg := NewMetricsRegistry()
	var store meta.Store
	deps := coordinator.Deps{Log: log, StoreName: sc.Kind, Metrics: reg, TLS: t, Tokens: tokenVerifier(t)}
	switch sc.Kind {
	case "bolt":
		s, err := OpenBolt(sc.Dir, log)
		if err != nil {
			return err
		}
		store = s
	case "etcd":
		s, elector, err := openEtcd(ctx, sc, log)
		if err != nil {
			return err
		}
		store, deps.Elector = s, elector
	default:
		return rpc.Errorf(rpc.Invalid, "unknown --metadata %q: want bolt or etcd", sc.Kind)
	}
	defer store.Close()
	if sc.Restore != "" {
		if err := restore(ctx, store, sc.Restore, log); err != nil {
			return err
		}
		// What the restore held (the last batch of bolt transactions,
		// and for a store that takes the records whole, the records) is
		// garbage now; the heap goal still counts it, so loading the
		// term would grow on it before a collection. Collect and return
		// it first.
		debug.FreeOSMemory()
	}
	deps.Store = store
	co, err := coordinator.New(cfg, deps)
	if err != nil {
		return err
	}
	KeepTLSFresh(ctx, t, log)
	lis, h := AdminAccess{TLS: t, Tokens: deps.Tokens, Superusers: cfg.Superusers}.guard(admin, AdminHandler(reg, co.Readiness, co.StatusHandler(), adm.Pprof), log)
	err = runWithAdmin(ctx, lis, h, log, func(ctx context.Context) error {
		return runNotifying(ctx, co.Ready(), log, co.Run)
	})
	if sc.Kind == "bolt" && rpc.KindOf(err) == rpc.Internal {
		f := filepath.Join(sc.Dir, boltFile)
		err = fmt.Errorf("%w; to copy what is readable into a new store: dfs admin salvage --from %s --to %s.salvaged (docs/operations.md, \"Damaged metadata\")", err, f, f)
	}
	return err
}

// restore loads a backup into an empty store. The backup is read and
// verified whole before the store is touched. A store that can load
// records as they are read (bolt) gets them in a second read, one at a
// time, so memory does not grow with the backup. bolt writes them in
// batches under a marker: if that read fails (the file changed) or ctx
// ends part-way, the store is left marked as an interrupted restore,
// which the coordinator refuses to start on (rather than make a new
// cluster of it) until a restore of the same cluster completes; that
// restore empties it first. A store holding an interrupted restore
// counts as empty here.
func restore(ctx context.Context, store meta.Store, file string, log zerolog.Logger) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	si, streams := store.(meta.StreamIniter)
	var recs []meta.Record
	var info meta.BackupInfo
	if streams {
		info, err = meta.EachBackupRecord(f, nil)
	} else {
		info, recs, err = meta.ReadBackup(f)
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", file, err)
	}
	if have := store.ClusterID(); have != "" {
		if have != info.ClusterID {
			return rpc.Errorf(rpc.FailedPrecondition, "restore %s: the backup is from another cluster (%s) than the one this metadata store holds (%s); restore into an empty store", file, info.ClusterID, have)
		}
		return rpc.Errorf(rpc.FailedPrecondition, "restore %s: the metadata store already holds cluster %s; restore needs an empty store", file, have)
	}
	if streams {
		err = si.InitEach(ctx, info.ClusterID, func(put func(meta.Record) error) error {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			again, err := meta.EachBackupRecord(f, put)
			if err == nil && again != info {
				err = rpc.Errorf(rpc.Invalid, "backup: changed while it was restored")
			}
			return err
		})
	} else {
		err = store.Init(ctx, info.ClusterID, recs)
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", file, err)
	}
	log.Info().Str("cluster_id", info.ClusterID).Uint64("records", info.Records).Time("taken", info.Created).Msg("metadata restored from backup")
	return nil
}
