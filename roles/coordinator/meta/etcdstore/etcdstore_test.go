package etcdstore

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore/etcdtest"
	"github.com/dfs-project/dfs/roles/coordinator/meta/metatest"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// open opens a store on its own prefix, so tests sharing a server stay
// independent.
func open(t testing.TB, endpoints []string, opts Options) *Store {
	t.Helper()
	opts.Endpoints = endpoints
	if opts.Prefix == "" {
		opts.Prefix = "/dfs-test/" + uuid.NewString() + "/"
	}
	s, err := Open(testCtx(t), opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	eps := etcdtest.Start(t)
	t.Run("stream", func(t *testing.T) { conformance(t, eps, Options{}) })
	// Servers before 3.7 have no RangeStream: ranges are read in pages.
	t.Run("paged", func(t *testing.T) { conformance(t, eps, Options{pagedReads: true}) })
}

func conformance(t *testing.T, eps []string, o Options) {
	metatest.Run(t, func(t *testing.T) (meta.Store, func() meta.Store) {
		s := open(t, eps, o)
		opts := s.opts
		return s, func() meta.Store {
			s.Close()
			r, err := Open(testCtx(t), opts)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			return r
		}
	})
}
