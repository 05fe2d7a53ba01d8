package roles

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/roles/datanode"
)

// RunDatanode opens the admin address (adminAddr, "" for none) and runs a
// datanode with its admin endpoints until ctx ends.
func RunDatanode(ctx context.Context, cfg datanode.Config, adminAddr string, log zerolog.Logger) error {
	admin, err := adminListen(adminAddr)
	if err != nil {
		return err
	}
	if admin != nil {
		defer admin.Close() // in case the datanode never starts
	}
	reg := NewMetricsRegistry()
	dn, err := datanode.New(cfg, datanode.Deps{Log: log, Metrics: reg})
	if err != nil {
		return err
	}
	ready := func(context.Context) error { return dn.Readiness() }
	return runWithAdmin(ctx, admin, AdminHandler(reg, ready, nil), log, func(ctx context.Context) error {
		return runNotifying(ctx, dn.Serving(), log, dn.Run)
	})
}
