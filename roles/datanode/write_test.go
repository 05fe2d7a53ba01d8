package datanode

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/internal/grpctest"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore/chunkstoretest"
	"github.com/dfs-project/dfs/roles/datanode/chunkstore/vfs"
	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// toWrite is chunk id of data, in frames of testFrame with their digests,
// to be forwarded to replicas, as a WriteChunks item.
func toWrite(id rpc.ChunkID, data []byte, replicas ...*Node) *dfspb.WriteChunk {
	wc := &dfspb.WriteChunk{Prepare: &dfspb.PrepareChunkUploadRequest{ChunkId: string(id), Size: int64(len(data)), FrameSize: testFrame}}
	for _, r := range replicas {
		wc.Prepare.Replicas = append(wc.Prepare.Replicas, &dfspb.NodeRef{NodeId: string(r.ID()), Addr: r.Addr()})
	}
	wc.Frames, _ = chunkstream.Frames(id, data, testFrame)
	return wc
}

// conn dials a node.
func conn(t *testing.T, n *Node) *grpc.ClientConn {
	t.Helper()
	cc, err := rpc.Dial(n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// answerErr is a WriteChunks answer's failure as an error, with the
// nodes it blames.
func answerErr(w *dfspb.ChunkWritten) error {
	err := rpc.FromCode(w.Code, w.Message)
	if err != nil && len(w.FailedNodes) > 0 {
		err = rpc.NodeError(rpc.Other, w.FailedNodes, "%w", err)
	}
	return err
}

// holds reports whether every node serves chunk id with data.
func holds(t *testing.T, id rpc.ChunkID, data []byte, nodes ...*Node) bool {
	t.Helper()
	digest, _ := chunkstream.DigestOf(data, testFrame)
	for _, n := range nodes {
		got, err := download(t.Context(), client(t, n), chunkstream.Expect{ChunkID: id, Size: int64(len(data)), FrameSize: testFrame, Digest: digest})
		if err != nil || !bytes.Equal(got, data) {
			return false
		}
	}
	return true
}

// TestWriteChunks: a primary stores each good chunk of a call on itself
// and its replicas, and answers with the nodes that hold it, this node
// first; each bad chunk is refused on its own, stored nowhere, and does
// not fail the others. Calls of no chunks, too many, or too many bytes
// are refused whole.
func TestWriteChunks(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	a, b, c := startNode(t, coord), startNode(t, coord), startNode(t, coord) // chunks up to 256 KiB packed
	dn, cc := client(t, a), conn(t, a)
	write := func(chunks ...*dfspb.WriteChunk) []*dfspb.ChunkWritten {
		t.Helper()
		answers, err := chunkstream.WriteChunks(t.Context(), cc, &dfspb.WriteChunksRequest{Chunks: chunks})
		if err != nil {
			t.Fatalf("WriteChunks: %v", err)
		}
		return answers
	}

	small, big, bad, short, again, bare := chunkID(t, 1), chunkID(t, 2), chunkID(t, 3), chunkID(t, 4), chunkID(t, 5), chunkID(t, 6)
	smallData, bigData := chunkData(3*testFrame+100, 1), chunkData(300<<10, 2) // packed, and a file
	upload(t, dn, again, chunkData(1000, 5), testFrame)                        // already on a
	corrupt := toWrite(bad, chunkData(2*testFrame, 3), b, c)
	corrupt.Frames[1].Data = bytes.Clone(corrupt.Frames[1].Data)
	corrupt.Frames[1].Data[7] ^= 1
	cut := toWrite(short, chunkData(2*testFrame, 4), b, c)
	cut.Frames = cut.Frames[:1]
	sid := rpc.NewSessionID()
	toC, alone, twice := rpc.NewChunkID("/mixed", sid, 0, 1), rpc.NewChunkID("/mixed", sid, 0, 2), rpc.NewChunkID("/mixed", sid, 0, 3)
	toCData, aloneData, twiceData := chunkData(2000, 7), chunkData(3000, 8), chunkData(4000, 9)
	got := write(
		toWrite(small, smallData, b, c),
		corrupt,
		toWrite(big, bigData, b, c),
		cut,
		toWrite(again, chunkData(1000, 5), b, c),
		&dfspb.WriteChunk{Frames: toWrite(bare, chunkData(10, 6)).Frames},
		toWrite(toC, toCData, c),
		toWrite(alone, aloneData),
		toWrite(twice, twiceData, b),
		toWrite(twice, twiceData, c),
	)
	is.Equal(got[6].Replicas, []string{string(a.ID()), string(c.ID())}) // each chunk to its own replicas
	is.Equal(got[7].Replicas, []string{string(a.ID())})
	is.True(holds(t, toC, toCData, a, c))
	is.True(!b.Store().Has(toC) && !b.Store().Has(alone) && !c.Store().Has(alone))
	is.Equal(got[8].Code, uint32(0)) // the first of a chunk named twice
	is.True(holds(t, twice, twiceData, a, b))
	is.True(!c.Store().Has(twice)) // the second refused, not forwarded
	is.True(strings.Contains(answerErr(got[9]).Error(), "named twice in one call"))
	is.Equal(rpc.KindOf(answerErr(got[9])), rpc.Invalid)
	is.Equal(got[0].Code, uint32(0)) // stored
	is.Equal(got[0].Replicas, []string{string(a.ID()), string(b.ID()), string(c.ID())})
	is.Equal(got[2].Code, uint32(0)) // stored
	is.Equal(got[2].Replicas, []string{string(a.ID()), string(b.ID()), string(c.ID())})
	is.True(holds(t, small, smallData, a, b, c)) // on every node, as sent
	is.True(holds(t, big, bigData, a, b, c))
	for i, want := range map[int]string{1: "frame checksum mismatch", 3: "without a final frame", 4: "already stored", 5: "without a prepare request"} {
		err := answerErr(got[i])
		is.True(err != nil && strings.Contains(err.Error(), want)) // each refusal says why
		is.Equal(len(got[i].Replicas), 0)
	}
	is.Equal(rpc.KindOf(answerErr(got[1])), rpc.Invalid)
	is.Equal(rpc.KindOf(answerErr(got[4])), rpc.Exists)
	for _, n := range []*Node{a, b, c} {
		is.True(!n.Store().Has(bad) && !n.Store().Has(short)) // a refused chunk is stored nowhere
	}
	is.True(!b.Store().Has(again)) // not forwarded either

	// Whole calls refused.
	refusedCall := func(req *dfspb.WriteChunksRequest, want string) {
		t.Helper()
		_, err := chunkstream.WriteChunks(t.Context(), cc, req)
		err = rpc.FromStatus(err)
		is.Equal(rpc.KindOf(err), rpc.Invalid)
		is.True(strings.Contains(err.Error(), want))
	}
	refusedCall(&dfspb.WriteChunksRequest{}, "carries 0 chunks; send 1 to 64")
	var many []*dfspb.WriteChunk
	for i := range rpc.MaxWriteChunks + 1 {
		many = append(many, toWrite(rpc.NewChunkID("/many", sid, 0, uint32(i)), chunkData(10, byte(i))))
	}
	refusedCall(&dfspb.WriteChunksRequest{Chunks: many}, "carries 65 chunks")
	answers, err := chunkstream.WriteChunks(t.Context(), cc, &dfspb.WriteChunksRequest{Chunks: many[:rpc.MaxWriteChunks]})
	is.NoErr(err) // 64 go
	for _, w := range answers {
		is.NoErr(answerErr(w))
	}
	var heavy []*dfspb.WriteChunk
	for i := range 5 {
		heavy = append(heavy, toWrite(rpc.NewChunkID("/heavy", sid, 0, uint32(i)), chunkData(250<<10, byte(i))))
	}
	refusedCall(&dfspb.WriteChunksRequest{Chunks: heavy}, "at most 1 MiB in one call")
	is.True(!a.Store().Has(rpc.NewChunkID("/heavy", sid, 0, 0))) // nothing of it stored
}

// TestWriteChunksWithinMaxSessions: each chunk of a call counts as an
// upload stream against --max-sessions; one beyond it is refused on its
// own, blaming this node, and once the call is answered nothing of it is
// held: no upload counted, no frame bytes, no space reserved.
func TestWriteChunksWithinMaxSessions(t *testing.T) {
	is := is.New(t)
	n := startNode(t, datanodetest.Start(t), func(cfg *Config) { cfg.MaxSessions = 2; cfg.Capacity = 64 << 20 })
	var chunks []*dfspb.WriteChunk
	sid := rpc.NewSessionID()
	for i := range 3 {
		chunks = append(chunks, toWrite(rpc.NewChunkID("/s", sid, 0, uint32(i)), chunkData(1000, byte(i))))
	}
	got, err := chunkstream.WriteChunks(t.Context(), conn(t, n), &dfspb.WriteChunksRequest{Chunks: chunks})
	is.NoErr(err)
	is.NoErr(answerErr(got[0])) // within the limit
	is.NoErr(answerErr(got[1]))
	err = answerErr(got[2])
	is.Equal(rpc.KindOf(err), rpc.ResourceExhausted)           // beyond it
	is.Equal(rpc.FailedNodesOf(err), []string{string(n.ID())}) // blaming this node
	is.True(strings.Contains(err.Error(), "--max-sessions"))   // saying what to change
	is.True(holdsNothing(n))                                   // after the call
}

// holdsNothing reports whether n holds nothing for uploads: none counted
// against --max-sessions, no frame bytes, no space reserved (its
// Capacity must be set, so that free space is not the disk's).
func holdsNothing(n *Node) bool {
	used, _ := n.frames.usage()
	u := n.store.Usage()
	return n.uploadStreams() == 0 && used == 0 && u.Free == u.Capacity-u.Used
}

// metric is the value of the metric name that reg gathered with labels
// (name, value pairs): a gauge's value, a histogram's count.
func metric(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue series
				}
			}
			return m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}

// TestWriteChunksBlamesFailedReplica: a replica that cannot be reached
// fails the chunks it was to take, each answered with the replica
// blamed, while the call's other chunks are stored.
func TestWriteChunksBlamesFailedReplica(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	fast := func(cfg *Config) { cfg.ProgressTimeout = 300 * time.Millisecond }
	a, b := startNode(t, coord, fast), startNode(t, coord, fast)
	lis, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err)
	deadAddr := lis.Addr().String()
	lis.Close() // nothing answers there
	dead := rpc.NodeID(uuid.NewString())
	coord.AddNode(dead, deadAddr)
	eventually(t, "the primary to learn of the dead node", func() bool { return a.checkPeer(t.Context(), dead, deadAddr) == nil })

	ok, lost := chunkID(t, 1), chunkID(t, 2)
	okData := chunkData(5000, 1)
	toDead := toWrite(lost, chunkData(5000, 2), b)
	toDead.Prepare.Replicas = append(toDead.Prepare.Replicas, &dfspb.NodeRef{NodeId: string(dead), Addr: deadAddr})
	got, err := chunkstream.WriteChunks(t.Context(), conn(t, a), &dfspb.WriteChunksRequest{Chunks: []*dfspb.WriteChunk{toWrite(ok, okData, b), toDead}})
	is.NoErr(err)
	is.Equal(got[0].Code, uint32(0)) // stored
	is.True(holds(t, ok, okData, a, b))
	err = answerErr(got[1])
	is.Equal(rpc.KindOf(err), rpc.Unavailable)                      // failed
	is.Equal(rpc.FailedNodesOf(err), []string{string(dead)})        // blaming the dead replica
	is.True(strings.Contains(err.Error(), "replica "+dead.Short())) // by name
}

// olderNode is a datanode of an earlier release: it has no WriteChunks.
type olderNode struct {
	*Node
	asked atomic.Int32
}

func (o *olderNode) WriteChunks(*dfspb.WriteChunksRequest, dfspb.DataNode_WriteChunksServer) error {
	o.asked.Add(1)
	return status.Error(codes.Unimplemented, "unknown method WriteChunks")
}

// fakeReplica is a datanode whose WriteChunks is write, and that has no
// other call.
type fakeReplica struct {
	dfspb.UnimplementedDataNodeServer
	write func(*dfspb.WriteChunksRequest, dfspb.DataNode_WriteChunksServer) error
}

func (f fakeReplica) WriteChunks(req *dfspb.WriteChunksRequest, st dfspb.DataNode_WriteChunksServer) error {
	return f.write(req, st)
}

// serveReplica serves srv on loopback until the test ends, as a node
// registered with coord under a new ID and known to primary, and returns
// it as a replica to name.
func serveReplica(t *testing.T, coord *datanodetest.Coordinator, primary *Node, srv dfspb.DataNodeServer) *dfspb.NodeRef {
	t.Helper()
	addr := grpctest.Serve(t, func(s *grpc.Server) { dfspb.RegisterDataNodeServer(s, srv) })
	id := rpc.NodeID(uuid.NewString())
	coord.AddNode(id, addr)
	eventually(t, "the primary to learn of the replica", func() bool { return primary.checkPeer(t.Context(), id, addr) == nil })
	return &dfspb.NodeRef{NodeId: string(id), Addr: addr}
}

// TestWriteChunksToOlderReplica: a primary whose replica has no
// WriteChunks (a rolling upgrade) sends it each chunk in an upload stream.
func TestWriteChunksToOlderReplica(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	a, b := startNode(t, coord), startNode(t, coord)
	old := &olderNode{Node: b}
	replica := serveReplica(t, coord, a, old) // b's store, behind an older server

	var chunks []*dfspb.WriteChunk
	var datas [][]byte
	for i := range 3 {
		datas = append(datas, chunkData(3000+i, byte(i)))
		wc := toWrite(chunkID(t, i), datas[i])
		wc.Prepare.Replicas = []*dfspb.NodeRef{replica}
		chunks = append(chunks, wc)
	}
	got, err := chunkstream.WriteChunks(t.Context(), conn(t, a), &dfspb.WriteChunksRequest{Chunks: chunks})
	is.NoErr(err)
	for i, w := range got {
		is.NoErr(answerErr(w))                                         // stored
		is.Equal(w.Replicas, []string{string(a.ID()), string(b.ID())}) // here and behind the older server
		is.True(holds(t, chunkID(t, i), datas[i], a, b))
	}
	is.Equal(old.asked.Load(), int32(1)) // asked once, then streamed
}

// TestWriteChunksKeepsCallerWaiting: while a call waits on commits that
// take several progress timeouts, the node sends keepalives, so neither
// its caller nor a primary forwarding to it takes it for stalled.
func TestWriteChunksKeepsCallerWaiting(t *testing.T) {
	is := is.New(t)
	const progress = 200 * time.Millisecond
	coord := datanodetest.Start(t)
	// Once armed, every sync takes 4 progress timeouts: a disk that keeps
	// a commit waiting.
	var armed atomic.Bool
	slowSync := func(op, _ string) error {
		if op == "sync" && armed.Load() {
			time.Sleep(4 * progress)
		}
		return nil
	}
	fast := func(cfg *Config) { cfg.ProgressTimeout = progress }
	a := startNodeWith(t, coord, Deps{FS: chunkstoretest.Hooked(vfs.Default, slowSync)}, fast)
	b := startNodeWith(t, coord, Deps{FS: chunkstoretest.Hooked(vfs.Default, slowSync)}, fast)
	armed.Store(true)
	id, data := chunkID(t, 1), chunkData(5000, 1)

	cc, err := rpc.Dial(a.Addr())
	is.NoErr(err)
	defer cc.Close()
	ctx, wd := chunkstream.NewWatchdog(t.Context(), nil, progress, "datanode")
	defer wd.Stop()
	st, err := dfspb.NewDataNodeClient(cc).WriteChunks(ctx, &dfspb.WriteChunksRequest{Chunks: []*dfspb.WriteChunk{toWrite(id, data, b)}})
	is.NoErr(err)
	keepalives := 0
	var answer *dfspb.WriteChunksResponse
	for answer == nil {
		resp, err := st.Recv()
		is.NoErr(err) // no stall: each message comes within the progress timeout
		wd.Kick()
		if len(resp.Chunks) == 0 {
			keepalives++
			continue
		}
		answer = resp
	}
	_, err = st.Recv()
	is.Equal(err, io.EOF)
	is.True(keepalives >= 2)                    // sent while the commits waited
	is.NoErr(answerErr(answer.Chunks[0]))       // stored
	is.Equal(len(answer.Chunks[0].Replicas), 2) // by the primary and, kept waiting too, its replica
	is.True(holds(t, id, data, a, b))
}

// TestWriteChunksGivesUpOnStalledReplica: a replica that takes the call
// and then neither answers nor sends keepalives fails the chunks it was
// to take after the primary's progress timeout, each answered blaming
// it as stalled; the call does not hang, and the primary's other chunks
// are stored.
func TestWriteChunksGivesUpOnStalledReplica(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	a := startNode(t, coord, func(cfg *Config) { cfg.ProgressTimeout = 300 * time.Millisecond })
	stalled := serveReplica(t, coord, a, fakeReplica{write: func(*dfspb.WriteChunksRequest, dfspb.DataNode_WriteChunksServer) error {
		<-t.Context().Done() // until the test ends
		return nil
	}})

	ok, lost := chunkID(t, 1), chunkID(t, 2)
	okData := chunkData(5000, 1)
	toStalled := toWrite(lost, chunkData(5000, 2))
	toStalled.Prepare.Replicas = []*dfspb.NodeRef{stalled}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // a bound on a hang, not a speed
	defer cancel()
	got, err := chunkstream.WriteChunks(ctx, conn(t, a), &dfspb.WriteChunksRequest{Chunks: []*dfspb.WriteChunk{toWrite(ok, okData), toStalled}})
	is.NoErr(err)               // answered: the primary gave up on its replica
	is.NoErr(answerErr(got[0])) // stored
	is.True(holds(t, ok, okData, a))
	err = answerErr(got[1])
	is.Equal(rpc.KindOf(err), rpc.Unavailable)                 // failed
	is.Equal(rpc.FailedNodesOf(err), []string{stalled.NodeId}) // blaming the stalled replica
	is.True(strings.Contains(err.Error(), "stalled"))          // saying why
	is.Equal(len(got[1].Replicas), 0)                          // not told it was stored
}

// TestWriteChunksCallerCancels: a caller that goes away while the
// primary waits on a replica leaves nothing held on the primary (no
// upload counted, no frame bytes, no space reserved, no stream in
// dfs_datanode_streams), and no replica is blamed: the primary logs no
// warning that the upload failed.
func TestWriteChunksCallerCancels(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	var warned atomic.Int32 // "upload failed" at warn: a failure blamed on a node
	log := zerolog.New(nil).Hook(zerolog.HookFunc(func(_ *zerolog.Event, level zerolog.Level, msg string) {
		if level == zerolog.WarnLevel && msg == "upload failed" {
			warned.Add(1)
		}
	}))
	reg := prometheus.NewRegistry()
	a := startNodeWith(t, coord, Deps{Log: log, Metrics: reg}, func(cfg *Config) { cfg.Capacity = 64 << 20 })
	asked := make(chan struct{}, 1)
	slow := serveReplica(t, coord, a, fakeReplica{write: func(*dfspb.WriteChunksRequest, dfspb.DataNode_WriteChunksServer) error {
		select {
		case asked <- struct{}{}:
		default:
		}
		<-t.Context().Done() // slower than the caller's patience
		return nil
	}})

	var chunks []*dfspb.WriteChunk
	for i := range 2 {
		wc := toWrite(chunkID(t, i), chunkData(5000, byte(i)))
		wc.Prepare.Replicas = []*dfspb.NodeRef{slow}
		chunks = append(chunks, wc)
	}
	cc := conn(t, a)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := chunkstream.WriteChunks(ctx, cc, &dfspb.WriteChunksRequest{Chunks: chunks})
		done <- err
	}()
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the primary did not forward the chunks")
	}
	is.Equal(metric(t, reg, "dfs_datanode_streams", "op", "upload"), 2.0) // each chunk counted while the call runs
	cancel()
	is.Equal(status.Code(<-done), codes.Canceled)
	eventually(t, "the primary to let go of the call", func() bool {
		return holdsNothing(a) && metric(t, reg, "dfs_datanode_streams", "op", "upload") == 0
	})
	is.Equal(warned.Load(), int32(0)) // no node blamed for the caller's going away
}

// TestWriteChunksLocalCommitFails: a primary whose disk fails the commit
// answers the chunk failed, Internal, blaming itself alone (its replica
// stored its copy), and neither stores nor serves it; while the slow
// commit holds the call, its chunk counts as an upload running in
// dfs_datanode_streams, and no longer once answered.
func TestWriteChunksLocalCommitFails(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	var armed atomic.Bool
	release := make(chan struct{})
	free := sync.OnceFunc(func() { close(release) })
	failing := func(op, _ string) error {
		if op == "sync" && armed.Load() {
			<-release // a slow disk, that then fails
			return syscall.EIO
		}
		return nil
	}
	reg := prometheus.NewRegistry()
	a := startNodeWith(t, coord, Deps{FS: chunkstoretest.Hooked(vfs.Default, failing), Metrics: reg})
	b := startNode(t, coord)
	t.Cleanup(free) // before the nodes stop
	armed.Store(true)

	id, data := chunkID(t, 1), chunkData(5000, 1)
	cc := conn(t, a)
	type answer struct {
		got []*dfspb.ChunkWritten
		err error
	}
	done := make(chan answer, 1)
	go func() {
		got, err := chunkstream.WriteChunks(t.Context(), cc, &dfspb.WriteChunksRequest{Chunks: []*dfspb.WriteChunk{toWrite(id, data, b)}})
		done <- answer{got, err}
	}()
	eventually(t, "the chunk to count as an upload running", func() bool {
		return metric(t, reg, "dfs_datanode_streams", "op", "upload") == 1
	})
	free()
	ans := <-done
	armed.Store(false)
	is.NoErr(ans.err)
	err := answerErr(ans.got[0])
	is.Equal(rpc.KindOf(err), rpc.Internal)                               // failed
	is.Equal(rpc.FailedNodesOf(err), []string{string(a.ID())})            // blaming the primary alone
	is.True(strings.Contains(err.Error(), syscall.EIO.Error()))           // saying why
	is.Equal(len(ans.got[0].Replicas), 0)                                 // not told it was stored
	is.True(!a.Store().Has(id) && !holds(t, id, data, a))                 // neither stored nor served
	is.Equal(metric(t, reg, "dfs_datanode_streams", "op", "upload"), 0.0) // no longer running
}

// TestWriteChunksReplicaMiscounts: a replica whose answer has not one
// entry per chunk it was sent fails them all, blaming it, rather than
// having any taken as stored there.
func TestWriteChunksReplicaMiscounts(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	a := startNode(t, coord)
	wrong := serveReplica(t, coord, a, fakeReplica{write: func(req *dfspb.WriteChunksRequest, st dfspb.DataNode_WriteChunksServer) error {
		resp := &dfspb.WriteChunksResponse{}
		for range len(req.Chunks) + 1 { // one answer too many, each "stored"
			resp.Chunks = append(resp.Chunks, &dfspb.ChunkWritten{Replicas: []string{"somewhere"}})
		}
		return st.Send(resp)
	}})

	var chunks []*dfspb.WriteChunk
	for i := range 2 {
		wc := toWrite(chunkID(t, i), chunkData(5000, byte(i)))
		wc.Prepare.Replicas = []*dfspb.NodeRef{wrong}
		chunks = append(chunks, wc)
	}
	got, err := chunkstream.WriteChunks(t.Context(), conn(t, a), &dfspb.WriteChunksRequest{Chunks: chunks})
	is.NoErr(err)
	for _, w := range got {
		err := answerErr(w)
		is.Equal(rpc.KindOf(err), rpc.Unavailable)                       // failed
		is.Equal(rpc.FailedNodesOf(err), []string{wrong.NodeId})         // blaming the replica
		is.True(strings.Contains(err.Error(), "answered 3 of 2 chunks")) // saying why
		is.Equal(len(w.Replicas), 0)                                     // not told it was stored
	}
}

// TestWriteChunksFrameBudgetFull: while the node's frame budget is held
// (by streams whose frames wait on its disk), a call waits
// --session-timeout for it, then has each chunk refused,
// ResourceExhausted, naming --frame-budget and blaming the node, counted
// as a failed upload, and stored nowhere; once the budget is free the
// same call goes.
func TestWriteChunksFrameBudgetFull(t *testing.T) {
	is := is.New(t)
	const budget = 2 * rpc.MaxFrameSize // the least it may be
	reg := prometheus.NewRegistry()
	a := startNodeWith(t, datanodetest.Start(t), Deps{Metrics: reg}, func(cfg *Config) {
		cfg.FrameBudget = budget
		cfg.SessionTimeout = 200 * time.Millisecond
	})
	is.NoErr(a.frames.acquire(t.Context(), budget, budget, time.Second)) // all of it held
	var chunks []*dfspb.WriteChunk
	for i := range 2 {
		chunks = append(chunks, toWrite(chunkID(t, i), chunkData(5000, byte(i))))
	}
	req := &dfspb.WriteChunksRequest{Chunks: chunks}
	cc := conn(t, a)

	got, err := chunkstream.WriteChunks(t.Context(), cc, req)
	is.NoErr(err)
	for i, w := range got {
		err := answerErr(w)
		is.Equal(rpc.KindOf(err), rpc.ResourceExhausted)           // refused
		is.Equal(rpc.FailedNodesOf(err), []string{string(a.ID())}) // blaming the node, so the client tries another
		is.True(strings.Contains(err.Error(), "--frame-budget"))   // saying what to change
		is.True(!a.Store().Has(chunkID(t, i)))                     // stored nowhere
	}
	is.Equal(metric(t, reg, "dfs_datanode_chunk_op_duration_seconds", "op", "upload", "result", "error"), 2.0) // counted
	a.frames.release(budget)
	got, err = chunkstream.WriteChunks(t.Context(), cc, req)
	is.NoErr(err)
	for _, w := range got {
		is.NoErr(answerErr(w)) // stored once the budget is free
	}
}
