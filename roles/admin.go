package roles

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"net/http/pprof"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/dfs-project/dfs/rpc"
)

// Admin HTTP server timeouts. The endpoints answer from memory, so a slow
// client is the only thing that can hold a connection; the write timeout
// leaves room for a CPU profile of up to a minute (/debug/pprof/profile
// refuses a duration at or past it).
const (
	adminReadTimeout  = 10 * time.Second
	adminWriteTimeout = 65 * time.Second
	adminIdleTimeout  = 2 * time.Minute
	adminShutdown     = 5 * time.Second
)

// Admin is a server role's admin listener: Listen is its address ("" for
// none) and Pprof adds Go's profiling endpoints under /debug/pprof/ (off by
// default: a profile costs the role CPU while it runs, and the heap and
// goroutine dumps name internals).
type Admin struct {
	Listen string
	Pprof  bool
}

// NewMetricsRegistry returns the registry of one role: the role registers
// its own metrics on it, beside the process and Go runtime collectors.
// Each role has its own, so roles sharing a process (dfs dev, the tests)
// never mix their figures, and nothing uses the global default registry.
func NewMetricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return reg
}

// adminListen opens a role's admin address at start-up, before the role
// starts, so that an address in use fails the start with one clear line.
// An empty address means no admin server: nil, nil.
func adminListen(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, rpc.Errorf(rpc.Unavailable, "--admin-listen %s: address already in use (another process serves there; choose another address, or \"\" for none)", addr)
	case err != nil:
		return nil, rpc.Errorf(rpc.Invalid, "--admin-listen %s: %w", addr, err)
	}
	return lis, nil
}

// AdminHandler routes a role's admin endpoints: /metrics from reg in the
// Prometheus text format, /healthz (200 while the process serves HTTP),
// /readyz (200 when ready returns nil, else 503 with the reason) and, when
// index is set, the role's page at /; without it / lists the endpoints.
// With withPprof it also serves net/http/pprof under /debug/pprof/.
func AdminHandler(reg *prometheus.Registry, ready func(context.Context) error, index http.Handler, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		plain(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			plain(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
		plain(w, http.StatusOK, "ready")
	})
	if index == nil {
		index = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/" {
				http.NotFound(w, r)
				return
			}
			plain(w, http.StatusOK, "dfs admin endpoints: /metrics (Prometheus), /healthz (liveness), /readyz (readiness)")
		})
	}
	mux.Handle("GET /", index)
	if withPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func plain(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// runWithAdmin runs a role until it returns, with its admin server on lis
// beside it (no admin server when lis is nil). The admin server stops
// after the role, so /healthz and /readyz answer while the role stops; an
// admin server that fails stops the role and its error is returned.
func runWithAdmin(ctx context.Context, lis net.Listener, h http.Handler, log zerolog.Logger, run func(context.Context) error) error {
	if lis == nil {
		return run(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: adminReadTimeout,
		ReadTimeout:       adminReadTimeout,
		WriteTimeout:      adminWriteTimeout,
		IdleTimeout:       adminIdleTimeout,
	}
	log = log.With().Str("admin", lis.Addr().String()).Logger()
	srv.ErrorLog = stdlog.New(log, "", 0)
	errc := make(chan error, 1)
	go func() {
		err := srv.Serve(lis)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else {
			log.Error().Err(err).Msg("admin server failed; stopping")
			cancel()
		}
		errc <- err
	}()
	log.Info().Msg("admin endpoints serving")
	err := run(ctx)
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), adminShutdown)
	defer scancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		srv.Close()
	}
	if aerr := <-errc; aerr != nil && err == nil {
		err = fmt.Errorf("admin server %s: %w", lis.Addr(), aerr)
	}
	return err
}
