package roles

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

func openEtcd(ctx context.Context, sc storeConfig, cfg coordinator.Config, log zerolog.Logger) (meta.Store, coordinator.Elector, error) {
	return nil, nil, rpc.Errorf(rpc.Invalid, "etcd metadata is not wired yet")
}
