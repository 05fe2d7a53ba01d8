package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/dfs-project/dfs/rpc"
)

// DefaultLeaseTTL is the lease of a leader's session: a leader that
// crashes is replaced about this long after its last keep-alive (etcd
// checks lease expiry every 500 ms), and one whose keep-alives stop
// getting through learns it lost leadership (Done) after this long too.
// 5 s keeps a takeover well inside the 10 s the design asks for while
// riding out a short pause; etcd refuses TTLs under 1.5 election
// timeouts (1.5 s by default).
const DefaultLeaseTTL = 5 * time.Second

// Election elects one leader among candidates that campaign under one
// name, with etcd's concurrency recipe: each candidate holds a key under
// the election prefix, attached to the lease of its session; the oldest
// key leads; a crashed leader's lease expires and its key goes with it.
type Election struct {
	cli  *clientv3.Client
	name string
	pfx  string // without the trailing slash, as concurrency wants it
}

// NewElection returns the election whose keys live under prefix.
func NewElection(cli *clientv3.Client, prefix string) *Election {
	return &Election{cli: cli, name: prefix, pfx: prefix}
}

// Election returns the election name on the store's client, with keys
// under <prefix>election/<name>/; they are not part of the store's data.
func (s *Store) Election(name string) *Election {
	e := NewElection(s.cli, s.electionKey(name))
	e.name = name
	return e
}

// Leadership is a won election. It ends with Resign, or when its session's
// lease is lost (Done).
type Leadership struct {
	name  string
	key   string
	rev   int64
	value string

	session  *concurrency.Session
	election *concurrency.Election
	cancel   context.CancelFunc
	once     sync.Once
	err      error
}

// Campaign makes value (a coordinator's advertised address) a candidate
// with a session of lease ttl (DefaultLeaseTTL when 0; whole seconds,
// rounded up) and blocks until it leads, or ctx ends (an error; the
// candidacy is withdrawn). A session lost while waiting is replaced. The
// session lives on, past ctx, until the Leadership ends.
func (e *Election) Campaign(ctx context.Context, value string, ttl time.Duration) (*Leadership, error) {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	secs := int(math.Ceil(ttl.Seconds()))
	for {
		l, err := e.campaign(ctx, value, secs)
		switch {
		case err == nil:
			return l, nil
		case ctx.Err() != nil:
			return nil, fmt.Errorf("etcdstore: campaign for %s: %w", e.name, ctx.Err())
		case errors.Is(err, errSessionLost):
			continue
		default:
			return nil, err
		}
	}
}

var errSessionLost = errors.New("session lost")

func (e *Election) campaign(ctx context.Context, value string, secs int) (*Leadership, error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sess, err := concurrency.NewSession(e.cli, concurrency.WithTTL(secs), concurrency.WithContext(sctx))
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, etcdError("campaign "+e.name, err)
	}
	el := concurrency.NewElection(sess, e.pfx)
	cctx, ccancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done():
			ccancel()
		case <-cctx.Done():
		}
	}()
	err = el.Campaign(cctx, value)
	lost := false
	select {
	case <-sess.Done():
		lost = true
	default:
	}
	ccancel()
	if err == nil && !lost {
		// The lease may have expired on the server, taking the key, before
		// this client noticed: lead only with the key in place.
		resp, gerr := e.cli.Get(ctx, el.Key(), clientv3.WithKeysOnly())
		switch {
		case gerr != nil:
			err = gerr
		case len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != el.Rev():
			lost = true
		}
	}
	if err == nil && !lost {
		return &Leadership{name: e.name, key: el.Key(), rev: el.Rev(), value: value, session: sess, election: el, cancel: cancel}, nil
	}
	// Withdraw: revoke the lease, which deletes the candidate's key.
	rctx, rcancel := context.WithTimeout(sctx, 5*time.Second)
	el.Resign(rctx)
	rcancel()
	sess.Close()
	cancel()
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case lost:
		return nil, errSessionLost
	}
	return nil, etcdError("campaign "+e.name, err)
}

// Done is closed when the leadership is lost: its lease expired or could
// not be kept alive for a whole TTL, or it was resigned. A coordinator
// stops acting as leader at once (and should have fenced its store with
// Store.SetFence, so a write that races the loss fails).
func (l *Leadership) Done() <-chan struct{} { return l.session.Done() }

// Value returns the value the leader campaigned with.
func (l *Leadership) Value() string { return l.value }

// Key returns the leader's election key.
func (l *Leadership) Key() string { return l.key }

// Resign gives up the leadership: the key is deleted and the lease
// revoked, so another candidate takes over at once. It is idempotent.
func (l *Leadership) Resign(ctx context.Context) error {
	l.once.Do(func() {
		err := l.election.Resign(ctx)
		if cerr := l.session.Close(); err == nil {
			err = cerr
		}
		l.cancel()
		if err != nil {
			l.err = etcdError("resign "+l.name, err)
		}
	})
	return l.err
}

// Leader returns the current leader's value, or an error of kind
// rpc.NotFound when nobody leads.
func (e *Election) Leader(ctx context.Context) (string, error) {
	v, _, err := e.leader(ctx)
	if err != nil {
		return "", err
	}
	if v == nil {
		return "", rpc.Errorf(rpc.NotFound, "no leader of %s", e.name)
	}
	return *v, nil
}

func (e *Election) leader(ctx context.Context) (*string, int64, error) {
	resp, err := e.cli.Get(ctx, e.pfx+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return nil, 0, etcdError("leader of "+e.name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, nil
	}
	v := string(resp.Kvs[0].Value)
	return &v, resp.Header.Revision, nil
}

// Observe sends the leader's value each time it changes, starting with
// the current one; "" means nobody leads. It keeps watching through etcd
// errors (retrying with backoff) and closes the channel when ctx ends. A
// standby uses it to learn where the leader is, and to know when to
// campaign.
func (e *Election) Observe(ctx context.Context) <-chan string {
	out := make(chan string)
	go func() {
		defer close(out)
		last, sent := "", false
		delay := 50 * time.Millisecond
		for ctx.Err() == nil {
			v, rev, err := e.leader(ctx)
			if err != nil {
				_ = rpc.Sleep(ctx, nil, delay) // the loop ends with ctx
				delay = min(2*delay, 2*time.Second)
				continue
			}
			delay = 50 * time.Millisecond
			cur := ""
			if v != nil {
				cur = *v
			}
			if !sent || cur != last {
				select {
				case out <- cur:
				case <-ctx.Done():
					return
				}
				last, sent = cur, true
			}
			// Wait for any change among the candidates, then look again.
			wctx, cancel := context.WithCancel(ctx)
			wch := e.cli.Watch(clientv3.WithRequireLeader(wctx), e.pfx+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1))
			for wr := range wch {
				if wr.Err() != nil || len(wr.Events) > 0 {
					break
				}
			}
			cancel()
		}
	}()
	return out
}
