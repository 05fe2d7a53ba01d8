package datanode

import (
	"bytes"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dfs-project/dfs/chunkstream"
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
	is.Equal(n.uploadStreams(), 0)                             // nothing counted after the call
	used, _ := n.frames.usage()
	is.Equal(used, int64(0)) // nor held
	u := n.store.Usage()
	is.Equal(u.Free, u.Capacity-u.Used) // no space reserved
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

// TestWriteChunksToOlderReplica: a primary whose replica has no
// WriteChunks (a rolling upgrade) sends it each chunk in an upload stream.
func TestWriteChunksToOlderReplica(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	a, b := startNode(t, coord), startNode(t, coord)
	old := &olderNode{Node: b}
	srv := grpc.NewServer(rpc.ServerOptions(zerolog.Nop())...)
	dfspb.RegisterDataNodeServer(srv, old)
	lis, err := rpc.Listen("127.0.0.1:0")
	is.NoErr(err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	oldID := rpc.NodeID(uuid.NewString()) // b's store, behind an older server
	coord.AddNode(oldID, lis.Addr().String())
	eventually(t, "the primary to learn of the older node", func() bool { return a.checkPeer(t.Context(), oldID, lis.Addr().String()) == nil })

	var chunks []*dfspb.WriteChunk
	var datas [][]byte
	for i := range 3 {
		datas = append(datas, chunkData(3000+i, byte(i)))
		wc := toWrite(chunkID(t, i), datas[i])
		wc.Prepare.Replicas = []*dfspb.NodeRef{{NodeId: string(oldID), Addr: lis.Addr().String()}}
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
