package etcdstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/matryer/is"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dfs-project/dfs/roles/coordinator/meta/etcdstore/etcdtest"
	"github.com/dfs-project/dfs/rpc"
)

// newClient returns a client of its own, as each coordinator process has.
func newClient(t *testing.T, eps []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

type campaignResult struct {
	l   *Leadership
	err error
	at  time.Time
}

func campaign(ctx context.Context, e *Election, value string, ttl time.Duration) <-chan campaignResult {
	ch := make(chan campaignResult, 1)
	go func() {
		l, err := e.Campaign(ctx, value, ttl)
		ch <- campaignResult{l, err, time.Now()}
	}()
	return ch
}

// next returns the next value from an Observe channel that differs from
// skip, within a generous deadline.
func next(t *testing.T, ch <-chan string, skip ...string) string {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		select {
		case v, ok := <-ch:
			if !ok {
				t.Fatal("observe channel closed")
			}
			skipped := false
			for _, s := range skip {
				skipped = skipped || v == s
			}
			if !skipped {
				return v
			}
		case <-deadline:
			t.Fatal("no leader change observed")
		}
	}
}

func TestElectionTakeoverAfterCrash(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	const name = "/dfs-test/election/coordinator"
	cliA, cliB, cliObs := newClient(t, eps), newClient(t, eps), newClient(t, eps)
	a, b, obs := NewElection(cliA, name), NewElection(cliB, name), NewElection(cliObs, name)
	ctx := testCtx(t)

	_, err := obs.Leader(ctx)
	is.True(errors.Is(err, rpc.NotFound)) // nobody leads yet
	observed := obs.Observe(ctx)
	is.Equal(next(t, observed), "") // Observe starts with the current state

	la, err := a.Campaign(ctx, "a:7000", 0)
	is.NoErr(err) // the first candidate leads
	is.Equal(next(t, observed), "a:7000")
	won := campaign(ctx, b, "b:7000", 0)
	select {
	case r := <-won:
		t.Fatalf("a second leader while the first lives: %v", r.err)
	case <-time.After(500 * time.Millisecond):
	}
	leader, err := obs.Leader(ctx)
	is.NoErr(err)
	is.Equal(leader, "a:7000") // the standby learns the leader's address

	// The leader crashes: its process and connection go, nobody resigns.
	crashed := time.Now()
	cliA.Close()
	var r campaignResult
	select {
	case r = <-won:
	case <-time.After(time.Minute):
		t.Fatal("no takeover within a minute")
	}
	is.NoErr(r.err) // the standby took over
	t.Logf("takeover %v after the crash (lease TTL %v)", r.at.Sub(crashed).Round(10*time.Millisecond), DefaultLeaseTTL)
	is.Equal(next(t, observed, ""), "b:7000") // observers follow
	select {
	case <-la.Done(): // the crashed leader's session knows it is over
	case <-time.After(time.Minute):
		t.Fatal("a closed client's leadership not done")
	}

	is.NoErr(r.l.Resign(ctx))
	is.NoErr(r.l.Resign(ctx)) // resign is idempotent
	select {
	case <-r.l.Done():
	case <-time.After(time.Minute):
		t.Fatal("resigned leadership not done")
	}
	is.Equal(next(t, observed), "") // nobody leads after the resign
}

func TestElectionResignHandsOver(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	s := open(t, eps, Options{})
	cliB := newClient(t, eps)
	a := s.Election("coordinator")
	b := NewElection(cliB, s.electionKey("coordinator"))
	ctx := testCtx(t)
	la, err := a.Campaign(ctx, "a:7000", 2*time.Second)
	is.NoErr(err)
	won := campaign(ctx, b, "b:7000", 2*time.Second)
	is.NoErr(la.Resign(ctx))
	select {
	case r := <-won:
		is.NoErr(r.err) // a resign hands over without waiting for a lease
		is.Equal(r.l.Value(), "b:7000")
		leader, err := a.Leader(ctx)
		is.NoErr(err)
		is.Equal(leader, "b:7000")
	case <-time.After(time.Minute):
		t.Fatal("no handover after a resign")
	}
}

func TestCampaignGivesUpWithItsContext(t *testing.T) {
	is := is.New(t)
	eps := etcdtest.Start(t)
	s := open(t, eps, Options{})
	e := s.Election("coordinator")
	_, err := e.Campaign(testCtx(t), "a:7000", 0)
	is.NoErr(err)
	ctx, cancel := context.WithCancel(testCtx(t))
	won := campaign(ctx, NewElection(newClient(t, eps), s.electionKey("coordinator")), "b:7000", 0)
	cancel()
	select {
	case r := <-won:
		is.True(errors.Is(r.err, context.Canceled)) // a canceled campaign returns
	case <-time.After(time.Minute):
		t.Fatal("campaign ignored its context")
	}
	resp, err := s.cli.Get(testCtx(t), s.electionKey("coordinator")+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	is.NoErr(err)
	is.Equal(resp.Count, int64(1)) // and withdrew its candidacy
}
