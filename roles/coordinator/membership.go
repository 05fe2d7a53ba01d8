package coordinator

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/dfs-project/dfs/gc"
	"github.com/dfs-project/dfs/placement"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/rpc"
)

const (
	// maxReport bounds the chunks of one ReportChunks (checked by the
	// adapter, before it decodes them).
	maxReport = 10000
	// maxReportedNodes bounds the node IDs of one ReportNodeFailure.
	maxReportedNodes = rpc.MaxReplication
	// maxFailureReason bounds the reason kept from a report.
	maxFailureReason = 512
)

// membership is the coordinator's part that knows the datanodes: their
// registrations and heartbeats (the registry), the chunk copies they
// report (the locations), the streams they were seen failing, and copies
// found bad or missing. Its loop ages heartbeats and forgets nodes dead
// for --forget-dead-after.
type membership struct {
	cfg     Config
	log     zerolog.Logger
	clock   clockwork.Clock
	cluster func() string // the cluster ID
	nodes   *registry
	locs    *locations
	refs    *refIndex
	dels    *collector
	commits meta.Committer
	// datanodes is asked whether a node answers at an address, and to
	// verify copies.
	datanodes Datanodes
	events    *events
	// registrations limits RegisterDataNode calls (--register-rate).
	registrations *rate.Limiter
	started       time.Time // when the term began
	// inventories gives full inventories their turns (--max-inventories).
	inventories *inventories
	// beforeApply, when set (by tests), is called before a report is
	// applied, with the report's context.
	beforeApply func(ctx context.Context, node rpc.NodeID)

	// owners holds, with TLS, the name of the certificate each node
	// registered with: only that certificate may heartbeat and report
	// for the node, so one compromised datanode cannot speak for others.
	ownersMu sync.Mutex
	owners   map[rpc.NodeID]string

	// inventoried holds the nodes whose full inventory this term has
	// applied whole (its last page included).
	inventoriedMu sync.Mutex
	inventoried   map[rpc.NodeID]bool
}

// awaitingInventories returns how many live registered datanodes have not
// had a full inventory applied whole in this term: until there are none,
// a chunk short of copies may be short only on this coordinator's record
// (its copies on a node whose inventory waits its turn).
func (m *membership) awaitingInventories() int {
	infos := m.nodes.infos()
	m.inventoriedMu.Lock()
	defer m.inventoriedMu.Unlock()
	n := 0
	for id, info := range infos {
		if info.live() && !m.inventoried[id] {
			n++
		}
	}
	return n
}

// inventoryDone records that node's full inventory was applied whole.
func (m *membership) inventoryDone(node rpc.NodeID) {
	m.inventoriedMu.Lock()
	defer m.inventoriedMu.Unlock()
	if m.inventoried == nil {
		m.inventoried = map[rpc.NodeID]bool{}
	}
	m.inventoried[node] = true
}

// registration is a datanode's RegisterDataNode.
type registration struct {
	node    rpc.NodeID
	addr    string
	cluster string // the cluster the node belongs to; "" for a new node
	usage   usage
	// cert names the certificate the node registered with; "" without
	// TLS.
	cert string
}

// registered answers a registration: the cluster version, the node's new
// incarnation and the cluster ID.
type registered struct {
	version     uint64
	incarnation string
	cluster     string
}

// register adds a datanode to the cluster, or refreshes it, and returns
// its incarnation. A node that belongs to another cluster is refused, and
// so is a node ID registered at another address where the node is alive
// and still answers as itself (see registry.register). Registrations
// beyond --register-rate are refused by admit, which the caller asks
// first.
func (m *membership) register(ctx context.Context, req registration) (registered, error) {
	if err := checkAddr(req.addr); err != nil {
		return registered{}, err
	}
	cluster := m.cluster()
	if req.cluster != "" && req.cluster != cluster {
		return registered{}, rpc.Errorf(rpc.FailedPrecondition,
			"datanode %s belongs to cluster %s, this coordinator serves cluster %s", req.node, req.cluster, cluster)
	}
	gone := ""
	old, alive := m.nodes.claimed(req.node, req.addr, m.clock.Now())
	if alive && !m.answersAs(ctx, req.node, old) {
		gone = old // the node left it: it restarted at req.addr
	}
	if owner := m.owner(req.node); req.cert != "" && owner != "" && owner != req.cert {
		if _, state, ok := m.nodes.lookup(req.node); ok && state == placement.Healthy {
			return registered{}, rpc.Errorf(rpc.Permission, "datanode %s is registered with certificate %q and healthy; certificate %q may take it over only once it is silent for --suspect-after", req.node, owner, req.cert)
		}
	}
	version, incarnation, err := m.nodes.register(req.node, req.addr, gone, req.usage, m.clock.Now())
	if err != nil {
		return registered{}, err
	}
	if req.cert != "" {
		m.ownersMu.Lock()
		if m.owners == nil {
			m.owners = make(map[rpc.NodeID]string)
		}
		m.owners[req.node] = req.cert
		m.ownersMu.Unlock()
	}
	// The logger already has "addr" (this coordinator's): the node's is node_addr.
	m.log.Info().Str("node_id", string(req.node)).Str("node_addr", req.addr).Int64("chunks", req.usage.chunks).Msg("datanode registered")
	return registered{version: version, incarnation: incarnation, cluster: cluster}, nil
}

// admit takes a registration from the --register-rate budget, or refuses
// it with ResourceExhausted and when to retry.
func (m *membership) admit() error {
	now := m.clock.Now()
	res := m.registrations.ReserveN(now, 1)
	if wait := res.DelayFrom(now); wait > 0 {
		res.CancelAt(now)
		return rpc.Errorf(rpc.ResourceExhausted, "too many datanode registrations (--register-rate %g/s, --register-burst %d); retry in %s",
			m.cfg.RegisterRate, m.cfg.RegisterBurst, wait.Round(time.Millisecond))
	}
	return nil
}

// answersAs reports whether the datanode at addr answers as node id, or
// might (it did not answer in time: a slow node is not a gone one). An
// address nothing listens at, or where another node answers, is gone.
func (m *membership) answersAs(ctx context.Context, id rpc.NodeID, addr string) bool {
	cctx, cancel := context.WithTimeout(ctx, min(m.cfg.RPCTimeout, probeTimeout))
	defer cancel()
	got, err := m.datanodes.Identify(cctx, addr)
	switch {
	case err == nil:
		return got == id
	case cctx.Err() != nil:
		return true
	}
	return false
}

// heartbeat records a heartbeat and returns the membership changes the
// node has not seen.
func (m *membership) heartbeat(id rpc.NodeID, incarnation string, u usage, known uint64) (changes, error) {
	return m.nodes.heartbeat(id, incarnation, u, known, m.clock.Now())
}

// chunkReport is a datanode's report of the chunks it stored, removed and
// found corrupt since its last one; with full, added is all it holds (in
// pages: page numbers them from 1, 0 in an incremental report or from a
// datanode that does not number them; last marks the last one).
type chunkReport struct {
	full    bool
	page    uint32
	last    bool
	added   []reportedCopy
	removed []rpc.ChunkID
	corrupt []rpc.ChunkID
}

// inventoryPage says whether r is a page of a full inventory, and which.
// A datanode that does not number its pages sends the first one alone as
// such: its turn ends with it.
func (r chunkReport) inventoryPage() (inventoryPage, bool) {
	return inventoryPage{first: r.full, last: r.last || r.page == 0}, r.full || r.page > 0
}

// reportSlice is how many chunks of a report are applied between two
// checks that its caller still waits for the answer.
const reportSlice = 1000

// known returns NotFound if node id is not registered.
// owner returns the name of the certificate node id registered with, or
// "".
func (m *membership) owner(id rpc.NodeID) string {
	m.ownersMu.Lock()
	defer m.ownersMu.Unlock()
	return m.owners[id]
}

// speaksFor refuses a caller whose certificate (cert; "" without TLS) is
// not the one node id registered with.
func (m *membership) speaksFor(id rpc.NodeID, cert string) error {
	if owner := m.owner(id); cert != "" && owner != "" && owner != cert {
		return rpc.Errorf(rpc.Permission, "certificate %q may not speak for datanode %s, registered with certificate %q", cert, id, owner)
	}
	return nil
}

func (m *membership) known(id rpc.NodeID) error {
	if _, _, ok := m.nodes.lookup(id); !ok {
		return rpc.Errorf(rpc.NotFound, "node %s is not registered", id)
	}
	return nil
}

// report applies a datanode's report of chunks stored and removed. A
// page of a full inventory is applied in the node's turn (see
// inventories): it may wait for one, or be refused with ResourceExhausted
// and when to send it again; incremental reports never wait. A report
// whose caller gave up (ctx ended: its RPC failed on the datanode's side)
// is not applied, or not further: the rest of it is dropped between
// slices of reportSlice chunks. What was applied of it is harmless: every
// copy it lists is on the node, and applying a report again changes
// nothing more (a full inventory forgets the node's copies it did not list
// only at its last page; the node sends its inventory again from the
// start after any failed page).
func (m *membership) report(ctx context.Context, id rpc.NodeID, r chunkReport) error {
	if err := m.known(id); err != nil {
		return err
	}
	for _, a := range r.added {
		if a.size <= 0 || a.size > rpc.MaxChunkSize || len(a.digest) != rpc.DigestSize || rpc.CheckFrameSize(a.frameSize) != nil {
			return rpc.Errorf(rpc.Invalid, "chunk %s: bad size, frame size or digest in report", a.id)
		}
	}
	if p, ok := r.inventoryPage(); ok {
		done, err := m.inventories.admit(ctx, id, p)
		if err != nil {
			return err
		}
		applied := false
		defer func() { done(applied) }()
		err = m.apply(ctx, id, r)
		applied = err == nil
		return err
	}
	return m.apply(ctx, id, r)
}

// apply applies report r of node id a slice at a time, as long as ctx
// lasts.
func (m *membership) apply(ctx context.Context, id rpc.NodeID, r chunkReport) error {
	abandoned := func() error {
		if err := ctx.Err(); err != nil {
			return rpc.Errorf(rpc.Other, "report of datanode %s abandoned by its caller: %w", id.Short(), err)
		}
		return nil
	}
	if err := abandoned(); err != nil {
		return err
	}
	if m.beforeApply != nil {
		m.beforeApply(ctx, id)
	}
	if len(r.corrupt) > 0 {
		m.log.Warn().Str("node_id", string(id)).Int("chunks", len(r.corrupt)).Msg("datanode reports corrupt copies")
		m.events.add("corrupt", "datanode %s reports %d corrupt chunk copies", id.Short(), len(r.corrupt))
	}
	defer m.dels.queue.report(r)() // the health scan looks at these chunks once the report is applied
	queued := m.dels.queuedOn(id)
	p, ok := r.inventoryPage()
	if !ok {
		p = inventoryPage{} // an incremental report
	}
	for added := r.added; ; {
		n := min(len(added), reportSlice)
		slice := inventoryPage{first: p.first, last: p.last && n == len(added)}
		p.first = false
		m.dels.queue.chunks(m.locs.report(id, slice, added[:n], r.removed, r.corrupt, queued)...)
		r.removed, r.corrupt, added = nil, nil, added[n:]
		if len(added) == 0 {
			if slice.last {
				m.inventoryDone(id)
			}
			return nil
		}
		if err := abandoned(); err != nil {
			return err
		}
	}
}

// nodeFailure records that a client or datanode saw the named datanodes
// fail a chunk stream. Each registered node is penalized for
// --failure-penalty (placed after every other node); unknown IDs are
// ignored (the node may be from another term).
func (m *membership) nodeFailure(ids []rpc.NodeID, reason string) error {
	if len(ids) > maxReportedNodes {
		return rpc.Errorf(rpc.Invalid, "%d node ids in one report, at most %d", len(ids), maxReportedNodes)
	}
	reason = boundReason(reason)
	for _, id := range ids {
		addr, _, ok := m.nodes.lookup(id)
		if !ok {
			continue
		}
		if m.nodes.penalties.report(id) {
			m.events.add("node", "datanode %s (%s) failed a chunk stream; placed last for %s: %s", id.Short(), addr, m.cfg.FailurePenalty, reason)
			m.log.Warn().Str("node_id", id.Short()).Str("addr", addr).Str("reason", reason).Dur("penalty", m.cfg.FailurePenalty).
				Msg("datanode reported failing a chunk stream; placing it last")
		} else {
			m.log.Debug().Str("node_id", id.Short()).Str("reason", reason).Msg("datanode reported failing a chunk stream again")
		}
	}
	return nil
}

// boundReason cuts a reason (a failure, a disk error) a party sent to
// what the coordinator keeps and shows: at most maxFailureReason bytes of
// valid UTF-8.
func boundReason(s string) string {
	return strings.ToValidUTF8(s[:min(len(s), maxFailureReason)], "")
}

// checkCopy has node verify its copy of chunk cid (within --rpc-timeout)
// after who found it bad or missing. A corrupt copy is counted corrupt at
// once (the node's own report follows). A copy the node does not hold is
// dropped from the locations, so the repair makes it again, but only
// while a committed file still references the chunk: a chunk whose file
// was removed or replaced is meant to go, and its absence says nothing.
// missing reports a copy the node does not hold although a file needs it
// (dropped now, or before by the node's report).
func (m *membership) checkCopy(ctx context.Context, node rpc.NodeID, cid rpc.ChunkID, who string) (corrupt, missing bool, err error) {
	addr, _, ok := m.nodes.lookup(node)
	if !ok {
		return false, false, rpc.Errorf(rpc.NotFound, "datanode %s is not a member", node)
	}
	// Only a copy listed before the node answers may be dropped for its
	// answer: one counted meanwhile (a repair copy landing there) is new.
	_, listed := m.locs.copies(cid)[node]
	vctx, cancel := context.WithTimeout(ctx, m.cfg.RPCTimeout)
	defer cancel()
	present, corrupt, err := m.datanodes.Verify(vctx, addr, cid)
	if err != nil {
		return false, false, err
	}
	defer m.dels.queue.chunks(cid) // the health scan looks at the chunk once its copy is updated
	switch {
	case corrupt:
		m.locs.report(node, inventoryPage{}, nil, nil, []rpc.ChunkID{cid}, m.dels.queuedOn(node))
		return true, false, nil
	case present || !m.refs.has(cid):
		return false, false, nil
	}
	if listed && m.locs.lost(node, cid) { // else dropped already, by the node's own report
		m.log.Warn().Str("chunk_id", string(cid)).Str("node_id", string(node)).Str("found_by", who).
			Msg("a copy is missing from its datanode; no longer counted, to be made again")
		m.events.add("missing", "datanode %s lost its copy of chunk %s (found by %s)", node.Short(), cid, who)
	}
	return false, true, nil
}

// watch ages heartbeats into suspect and dead states, and forgets nodes
// dead for --forget-dead-after, until ctx ends.
func (m *membership) watch(ctx context.Context, q *gc.Collector) {
	interval := min(m.cfg.SuspectAfter/4, time.Second)
	rpc.Every(ctx, m.clock, max(interval, 10*time.Millisecond), func(ctx context.Context) {
		now := m.clock.Now()
		for _, id := range m.nodes.tick(now) {
			m.log.Warn().Str("node_id", string(id)).Msg("datanode dead: missed heartbeats")
		}
		m.forget(ctx, q, now)
	})
}

// forget removes the nodes dead for --forget-dead-after from the
// registry, and drops their copies from the locations and their pending
// deletions from GC and, durably, from the store. So are the deletions of
// nodes that have not registered in this term once it is that old (their
// deletions were loaded from the store, or recorded for a node forgotten
// before). A forgotten node that comes back registers as new and reports
// its chunks; those no file needs are collected as orphans.
func (m *membership) forget(ctx context.Context, q *gc.Collector, now time.Time) {
	gone := m.nodes.forget(now)
	forgotten := make(map[rpc.NodeID]bool, len(gone))
	for _, id := range gone {
		forgotten[id] = true
	}
	if now.Sub(m.started) >= m.cfg.DeadAfter+m.cfg.ForgetDeadAfter {
		for _, id := range q.Nodes() {
			if _, _, ok := m.nodes.lookup(id); !ok && !forgotten[id] {
				gone = append(gone, id)
				forgotten[id] = true
			}
		}
	}
	held := m.dels.queue.on(forgotten)
	m.locs.dropNodes(forgotten)
	m.dels.queue.chunks(held...) // the health scan looks at the chunks they held
	if len(gone) == 0 {
		return
	}
	var done []meta.Deletion
	for _, id := range gone {
		for _, c := range q.Drop(id) {
			done = append(done, meta.Deletion{Node: id, Chunk: c})
		}
	}
	if len(done) > 0 {
		cctx, cancel := context.WithTimeout(ctx, m.cfg.RPCTimeout)
		err := m.commits.Commit(cctx, &meta.Txn{DoneDeletions: done})
		cancel()
		if err != nil {
			// Queued again, they are dropped at the next pass.
			for _, d := range done {
				q.Enqueue(d.Node, d.Chunk)
			}
			m.log.Warn().Err(err).Int("nodes", len(gone)).Int("deletions", len(done)).Msg("cannot drop the deletions of forgotten datanodes")
			return
		}
	}
	ev := m.log.Info()
	if len(gone) == 1 {
		ev = ev.Str("node_id", string(gone[0]))
	}
	ev.Int("nodes", len(gone)).Int("deletions_dropped", len(done)).Dur("dead_for", m.cfg.ForgetDeadAfter).Msg("forgot datanode")
}

// checkUsage checks the capacity, usage and chunk count a node reports.
func checkUsage(capacity, used, free, chunks int64) (usage, error) {
	if capacity < 0 || used < 0 || free < 0 || chunks < 0 {
		return usage{}, rpc.Errorf(rpc.Invalid, "negative capacity, usage or chunk count")
	}
	return usage{capacity: capacity, used: used, free: free, chunks: chunks}, nil
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" || port == "0" || len(addr) > rpc.MaxAddrLen {
		return rpc.Errorf(rpc.Invalid, "invalid datanode address %q: want host:port of at most %d bytes", addr, rpc.MaxAddrLen)
	}
	return nil
}
