package roles

import (
	"context"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/internal/exepages"
	"github.com/dfs-project/dfs/rpc"
)

// notifySystemd speaks systemd's notify protocol for a Type=notify unit:
// READY=1 once serving closes (the role serves gRPC), STOPPING=1 once ctx
// ends (the role stops). Without $NOTIFY_SOCKET (not started by systemd)
// it does nothing. It returns when ctx ends.
func notifySystemd(ctx context.Context, serving <-chan struct{}, log zerolog.Logger) {
	select {
	case <-ctx.Done():
		return
	case <-serving:
	}
	sent, err := daemon.SdNotify(false, daemon.SdNotifyReady)
	if err != nil {
		log.Warn().Err(err).Msg("cannot tell systemd that the service is ready")
	} else if sent {
		log.Info().Msg("told systemd: ready")
	}
	<-ctx.Done()
	if sent {
		daemon.SdNotify(false, daemon.SdNotifyStopping)
	}
}

// runNotifying runs run(ctx) and, once serving closes, releases the
// executable's pages the process touched only to start (see exepages)
// and tells systemd (notifySystemd); it waits for both.
func runNotifying(ctx context.Context, serving <-chan struct{}, log zerolog.Logger, run func(context.Context) error) error {
	nctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-nctx.Done():
			return
		case <-serving:
		}
		if n, err := exepages.Release(); err != nil {
			log.Warn().Err(err).Msg("cannot release the executable's start-up pages")
		} else {
			log.Debug().Str("mappings", rpc.FormatBytes(n)).Msg("released the executable's start-up pages")
		}
		notifySystemd(nctx, serving, log)
	}()
	// STOPPING=1 goes when ctx ends (a signal): the role stops
	// gracefully from then on.
	err := run(ctx)
	cancel()
	<-done
	return err
}

// RunNotifying runs a role that is not built here (the S3 gateway) as
// runNotifying does: systemd hears READY=1 once serving closes.
func RunNotifying(ctx context.Context, serving <-chan struct{}, log zerolog.Logger, run func(context.Context) error) error {
	return runNotifying(ctx, serving, log, run)
}
