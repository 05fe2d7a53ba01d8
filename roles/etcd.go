package roles

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore"
	"github.com/dfs-project/dfs/rpc"
)

// electionName is the election coordinators of one etcd prefix run.
const electionName = "coordinator"

// The coordinator lowers its file chunk limit (--max-file-chunks) to what
// the etcd store can hold, through this method.
var _ interface{ MaxFileChunks() int } = (*etcdstore.Store)(nil)

// openEtcd opens the etcd metadata store and the election that lets
// several coordinators share it.
func openEtcd(ctx context.Context, sc StoreConfig, log zerolog.Logger) (*etcdstore.Store, coordinator.Elector, error) {
	if len(sc.EtcdEndpoints) == 0 {
		return nil, nil, rpc.Errorf(rpc.Invalid, "--metadata etcd needs --etcd-endpoints")
	}
	s, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: sc.EtcdEndpoints, Prefix: sc.EtcdPrefix, Log: log.With().Str("component", "etcdstore").Logger()})
	if err != nil {
		return nil, nil, err
	}
	return s, &etcdElector{store: s, election: s.Election(electionName), ttl: sc.LeaseTTL, log: log}, nil
}

// etcdElector elects a coordinator with an etcd lease; the store is fenced
// by the leadership, so a deposed leader can write nothing.
type etcdElector struct {
	store    *etcdstore.Store
	election *etcdstore.Election
	ttl      time.Duration
	log      zerolog.Logger
}

var _ coordinator.Elector = (*etcdElector)(nil)

func (e *etcdElector) Campaign(ctx context.Context, addr string) (<-chan struct{}, error) {
	l, err := e.election.Campaign(ctx, addr, e.ttl)
	if err != nil {
		return nil, err
	}
	e.store.SetFence(l)
	e.log.Info().Str("leader", addr).Dur("lease", e.ttl).Msg("elected leader")
	lost := make(chan struct{})
	go func() {
		defer close(lost)
		select {
		case <-l.Done():
		case <-ctx.Done():
			// Stopping: hand over at once rather than when the lease runs out.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err := l.Resign(rctx); err != nil {
				e.log.Warn().Err(err).Msg("resign leadership")
			}
		}
	}()
	return lost, nil
}

func (e *etcdElector) Leader(ctx context.Context) (string, error) {
	l, err := e.election.Leader(ctx)
	if rpc.KindOf(err) == rpc.NotFound {
		return "", nil
	}
	return l, err
}
