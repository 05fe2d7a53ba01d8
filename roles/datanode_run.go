package roles

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles/datanode"
)

// RunDatanode opens the admin address (adm.Listen, "" for none) and runs a
// datanode with its admin endpoints until ctx ends. With t it serves and
// dials over TLS (t's files are reloaded when they change and on SIGHUP);
// nil runs in plain text. superusers may read its admin endpoints.
func RunDatanode(ctx context.Context, cfg datanode.Config, adm Admin, t *pki.TLS, superusers []string, log zerolog.Logger) error {
	admin, err := adminListen(adm.Listen)
	if err != nil {
		return err
	}
	if admin != nil {
		defer admin.Close() // in case the datanode never starts
	}
	reg := NewMetricsRegistry()
	deps := datanode.Deps{Log: log, Metrics: reg, TLS: t, Tokens: tokenVerifier(t)}
	dn, err := datanode.New(cfg, deps)
	if err != nil {
		return err
	}
	ready := func(context.Context) error { return dn.Readiness() }
	KeepTLSFresh(ctx, t, log)
	lis, h := AdminAccess{TLS: t, Tokens: deps.Tokens, Superusers: superusers}.guard(admin, AdminHandler(reg, ready, nil, adm.Pprof), log)
	return runWithAdmin(ctx, lis, h, log, func(ctx context.Context) error {
		return runNotifying(ctx, dn.Serving(), log, dn.Run)
	})
}
