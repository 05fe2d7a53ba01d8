package roles_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/chunktoken"
	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// tokenCluster starts a secure cluster of nodes datanodes, tuned by opts,
// and returns it with a superuser client putting files of replication 2.
func tokenCluster(t *testing.T, nodes int, opts ...rolestest.Option) (*roles.Cluster, *client.Client) {
	t.Helper()
	c := rolestest.Start(t, nodes, append([]rolestest.Option{rolestest.Secure}, opts...)...)
	return c, rolestest.Client(t, c, func(cfg *client.Config) { cfg.Replication = 2 })
}

// putFile puts size random bytes at path and returns them.
func putFile(t *testing.T, cl *client.Client, path string, size int) []byte {
	t.Helper()
	data := randomBytes(size)
	if _, err := cl.Put(t.Context(), path, bytes.NewReader(data), int64(size), nil); err != nil {
		t.Fatalf("put %s: %v", path, err)
	}
	return data
}

// adminCoord dials the coordinator of a secure cluster as the superuser.
func adminCoord(t *testing.T, c *roles.Cluster) dfspb.CoordinatorClient {
	t.Helper()
	return dfspb.NewCoordinatorClient(secureDial(t, c.Addr(), c.PKI().Files("admin")))
}

// firstChunk returns the first chunk of path's chunk map as the
// coordinator answers cc now, with its read token.
func firstChunk(t *testing.T, cc dfspb.CoordinatorClient, path string) *dfspb.ChunkInfo {
	t.Helper()
	resp, err := cc.DownloadFile(t.Context(), &dfspb.DownloadFileRequest{Path: path})
	if err != nil {
		t.Fatalf("download %s: %v", path, err)
	}
	if len(resp.File.Chunks) == 0 {
		t.Fatalf("download %s: no chunk", path)
	}
	return resp.File.Chunks[0]
}

// anonDatanode dials the datanode at addr without a client certificate:
// a chunk token alone authorizes its data calls.
func anonDatanode(t *testing.T, c *roles.Cluster, addr string) dfspb.DataNodeClient {
	t.Helper()
	return dfspb.NewDataNodeClient(secureDial(t, addr, pki.Files{CA: c.PKI().CA()}))
}

// readWith reads chunk id from dn with tok, to the end, and returns the
// bytes read: with a download stream and with ReadChunks, which must
// agree, in the bytes or the error.
func readWith(ctx context.Context, dn dfspb.DataNodeClient, id string, tok *dfspb.ChunkToken) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	streamed, err := streamWith(ctx, dn, id, tok)
	var read []byte
	resp, rerr := dn.ReadChunks(ctx, &dfspb.ReadChunksRequest{Chunks: []*dfspb.ReadChunk{{ChunkId: id, Token: tok}}})
	if rerr == nil {
		ch := resp.Chunks[0]
		rerr = rpc.FromCode(ch.Code, ch.Message)
		for _, f := range ch.Frames {
			read = append(read, f.Data...)
		}
	}
	// An expired token's message says how long ago it expired.
	ago := regexp.MustCompile(`\([0-9.]+[µmn]?s ago\)`)
	if err != nil && rerr != nil && statusKind(err) == rpc.KindOf(rerr) &&
		ago.ReplaceAllString(rpc.FromStatus(err).Error(), "") == ago.ReplaceAllString(rerr.Error(), "") {
		return nil, err
	}
	if err != nil || rerr != nil || !bytes.Equal(streamed, read) {
		return nil, fmt.Errorf("DownloadChunkStream and ReadChunks disagree: %v (%d bytes); %v (%d bytes)", err, len(streamed), rerr, len(read))
	}
	return streamed, nil
}

// streamWith streams chunk id from dn with tok, to the end, and returns
// the bytes read.
func streamWith(ctx context.Context, dn dfspb.DataNodeClient, id string, tok *dfspb.ChunkToken) ([]byte, error) {
	st, err := dn.DownloadChunkStream(ctx, &dfspb.DownloadChunkStreamRequest{ChunkId: id, Token: tok})
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		f, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, f.Data...)
		if f.IsFinal {
			return out, nil
		}
	}
}

// refused checks that err is a status of kind k whose message says want.
func refused(t *testing.T, err error, k rpc.Kind, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want a %v error saying %q, got none", k, want)
	}
	if got := statusKind(err); got != k || !strings.Contains(err.Error(), want) {
		t.Fatalf("want a %v error saying %q, got %v: %v", k, want, got, err)
	}
}

// nodeAddr returns the address of the cluster's datanode id.
func nodeAddr(t *testing.T, c *roles.Cluster, id string) string {
	t.Helper()
	return c.Nodes()[nodeIndex(t, c, id)].Node.Addr()
}

func TestChunkTokensRefusedAtDatanode(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	ctx := t.Context()
	// Tokens live three seconds, so one can be seen to expire.
	c, cl := tokenCluster(t, 3, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.ChunkTokenLifetime = 3 * time.Second }))
	data := putFile(t, cl, "/f", 1000)
	putFile(t, cl, "/g", 1000)
	got, err := getBytes(ctx, cl, "/f")
	is.NoErr(err)                   // a get with chunk tokens
	is.True(bytes.Equal(got, data)) // reads what was put

	cc := adminCoord(t, c)
	f := firstChunk(t, cc, "/f")
	is.True(f.Token != nil) // a secure coordinator hands out read tokens
	is.Equal(f.Token.Op, dfspb.ChunkOp_CHUNK_OP_READ)
	holder := f.Replicas[0].NodeId
	dn := anonDatanode(t, c, nodeAddr(t, c, holder))
	b, err := readWith(ctx, dn, f.ChunkId, f.Token)
	is.NoErr(err)                 // the token lets anyone read the chunk
	is.True(bytes.Equal(b, data)) // all of it

	_, err = readWith(ctx, dn, f.ChunkId, nil)
	refused(t, err, rpc.Permission, "no chunk token")
	g := firstChunk(t, cc, "/g")
	_, err = readWith(ctx, dn, f.ChunkId, g.Token)
	refused(t, err, rpc.Permission, "chunk token: for another chunk")
	forged := firstChunk(t, cc, "/f").Token
	forged.Mac[0] ^= 1
	_, err = readWith(ctx, dn, f.ChunkId, forged)
	refused(t, err, rpc.Permission, "chunk token: bad signature")
	widened := firstChunk(t, cc, "/f").Token
	var other string // the node without a copy
	for _, n := range c.Nodes() {
		if id := string(n.Node.ID()); !slices.Contains(widened.NodeIds, id) {
			other = id
		}
	}
	is.True(other != "") // replication 2 on three nodes
	_, err = readWith(ctx, anonDatanode(t, c, nodeAddr(t, c, other)), f.ChunkId, widened)
	refused(t, err, rpc.Permission, "chunk token: not for this node")
	widened.NodeIds = append(widened.NodeIds, other) // names it now, signed without it
	_, err = readWith(ctx, anonDatanode(t, c, nodeAddr(t, c, other)), f.ChunkId, widened)
	refused(t, err, rpc.Permission, "chunk token: bad signature")

	// A write token does not read.
	up, err := cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: "/w", Size: 1000, Replication: 2})
	is.NoErr(err) // open an upload
	plan := up.Chunks[0]
	is.Equal(plan.Token.GetOp(), dfspb.ChunkOp_CHUNK_OP_WRITE) // plans carry write tokens
	_, err = readWith(ctx, anonDatanode(t, c, plan.Primary.Addr), plan.ChunkId, plan.Token)
	refused(t, err, rpc.Permission, "chunk token: a write token does not allow read")
	_, err = cc.AbortUpload(ctx, &dfspb.AbortUploadRequest{SessionId: up.SessionId})
	is.NoErr(err)

	// Malformed tokens.
	bad := firstChunk(t, cc, "/f").Token
	bad.Mac = bad.Mac[:3]
	_, err = readWith(ctx, dn, f.ChunkId, bad)
	refused(t, err, rpc.Invalid, "malformed chunk token: MAC of 3 bytes")
	bad = firstChunk(t, cc, "/f").Token
	bad.NodeIds = []string{"not-a-node"}
	_, err = readWith(ctx, dn, f.ChunkId, bad)
	refused(t, err, rpc.Invalid, "malformed chunk token")
	_, err = dn.PrepareChunkDownload(ctx, &dfspb.PrepareChunkDownloadRequest{ChunkId: f.ChunkId, Token: &dfspb.ChunkToken{}})
	refused(t, err, rpc.Invalid, "malformed chunk token")

	// The first token expires.
	eventually(t, "the first read token refused as expired", func() bool {
		_, err := readWith(ctx, dn, f.ChunkId, f.Token)
		return err != nil && strings.Contains(err.Error(), "chunk token: expired")
	})
	is.Equal(statusKind(func() error { _, err := readWith(ctx, dn, f.ChunkId, f.Token); return err }()), rpc.Permission)
	got, err = getBytes(ctx, cl, "/f")
	is.NoErr(err) // a client asks for new tokens
	is.True(bytes.Equal(got, data))
}

func TestChunkTokenGuardsOtherFiles(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	ctx := t.Context()
	c, cl := tokenCluster(t, 2)
	putFile(t, cl, "/secret", 1000)
	putFile(t, cl, "/pub", 1000)
	secret := firstChunk(t, adminCoord(t, c), "/secret")

	// bob has a certificate and a token for /pub's chunk, none for
	// /secret's.
	cfg, err := c.UserConfig("bob", "staff")
	is.NoErr(err)
	bob := pki.Files{CA: cfg.TLSCA, Cert: cfg.TLSCert, Key: cfg.TLSKey}
	pub := firstChunk(t, dfspb.NewCoordinatorClient(secureDial(t, c.Addr(), bob)), "/pub")
	dn := dfspb.NewDataNodeClient(secureDial(t, nodeAddr(t, c, secret.Replicas[0].NodeId), bob))
	_, err = readWith(ctx, dn, secret.ChunkId, nil)
	refused(t, err, rpc.Permission, "no chunk token")
	_, err = readWith(ctx, dn, secret.ChunkId, pub.Token)
	refused(t, err, rpc.Permission, "for another chunk")
	_, err = dn.PrepareChunkDownload(ctx, &dfspb.PrepareChunkDownloadRequest{ChunkId: secret.ChunkId, Token: pub.Token})
	refused(t, err, rpc.Permission, "for another chunk")
	// Nor may bob delete or overwrite it with his read token.
	_, err = dn.DeleteChunk(ctx, &dfspb.DeleteChunkRequest{ChunkId: pub.ChunkId, Token: pub.Token})
	refused(t, err, rpc.Permission, "is for the coordinator")
	_, err = dn.PrepareChunkUpload(ctx, &dfspb.PrepareChunkUploadRequest{ChunkId: pub.ChunkId, Size: 1000, FrameSize: 4096, Token: pub.Token})
	refused(t, err, rpc.Permission, "a read token does not allow write")

	// Once /secret is admin's alone, the coordinator hands bob no token
	// for it: DownloadFile is refused, and StatFile (which needs only
	// search permission on /) answers without tokens.
	is.NoErr(cl.Chmod(ctx, "/secret", 0o600))
	bobCoord := dfspb.NewCoordinatorClient(secureDial(t, c.Addr(), bob))
	_, err = bobCoord.DownloadFile(ctx, &dfspb.DownloadFileRequest{Path: "/secret"})
	refused(t, err, rpc.Permission, "may not read")
	st, err := bobCoord.StatFile(ctx, &dfspb.StatFileRequest{Path: "/secret"})
	is.NoErr(err)
	for _, ch := range st.File.Chunks {
		is.True(ch.Token == nil) // no read token without read permission
	}
	st, err = adminCoord(t, c).StatFile(ctx, &dfspb.StatFileRequest{Path: "/secret"})
	is.NoErr(err)
	is.True(st.File.Chunks[0].Token != nil) // the owner's stat carries them
}

// listenRogue listens on a loopback port that counts the connections it
// accepts; it is closed when the test ends.
func listenRogue(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() { lis.Close() })
	return lis.Addr().String(), &accepted
}

func TestPrimaryForwardsOnlyToRegisteredReplicas(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	ctx := t.Context()
	c, _ := tokenCluster(t, 3)
	cc := adminCoord(t, c)
	rogue, accepted := listenRogue(t)
	data := randomBytes(1000)

	up, err := cc.UploadFile(ctx, &dfspb.UploadFileRequest{Path: "/u", Size: int64(len(data)), Replication: 2})
	is.NoErr(err) // open an upload
	plan := up.Chunks[0]
	primary := anonDatanode(t, c, plan.Primary.Addr)
	prepare := func(replicas ...*dfspb.NodeRef) error {
		_, err := primary.PrepareChunkUpload(ctx, &dfspb.PrepareChunkUploadRequest{
			ChunkId: plan.ChunkId, Size: int64(len(data)), FrameSize: 4096, Replicas: replicas, Token: plan.Token})
		return err
	}
	// The replica the token names, at the rogue's address.
	err = prepare(&dfspb.NodeRef{NodeId: plan.Replicas[0].NodeId, Addr: rogue})
	refused(t, err, rpc.FailedPrecondition, "is registered at "+plan.Replicas[0].Addr+", not "+rogue)
	// A node the token does not name.
	stranger := uuid.NewString()
	err = prepare(&dfspb.NodeRef{NodeId: stranger, Addr: rogue})
	refused(t, err, rpc.Permission, "the chunk token does not name replica "+stranger[:8])
	// The same, prepared inline on a stream.
	frames := cutFrames("", plan.ChunkId, data, 4096)
	frames[0].Prepare = &dfspb.PrepareChunkUploadRequest{ChunkId: plan.ChunkId, Size: int64(len(data)), FrameSize: 4096,
		Replicas: []*dfspb.NodeRef{{NodeId: stranger, Addr: rogue}}, Token: plan.Token}
	st, err := primary.UploadChunkStream(ctx)
	is.NoErr(err)
	is.NoErr(st.Send(frames[0]))
	_, err = st.Recv()
	refused(t, err, rpc.Permission, "does not name replica")
	// The same, in a WriteChunks call: each chunk answered on its own.
	wc := func(replicas ...*dfspb.NodeRef) *dfspb.WriteChunk {
		return &dfspb.WriteChunk{
			Prepare: &dfspb.PrepareChunkUploadRequest{ChunkId: plan.ChunkId, Size: int64(len(data)), FrameSize: 4096, Replicas: replicas, Token: plan.Token},
			Frames:  cutFrames("", plan.ChunkId, data, 4096),
		}
	}
	answers, err := chunkstream.WriteChunks(ctx, secureDial(t, plan.Primary.Addr, pki.Files{CA: c.PKI().CA()}), &dfspb.WriteChunksRequest{Chunks: []*dfspb.WriteChunk{
		wc(&dfspb.NodeRef{NodeId: plan.Replicas[0].NodeId, Addr: rogue}),
		wc(&dfspb.NodeRef{NodeId: stranger, Addr: rogue}),
	}})
	is.NoErr(err) // the call; its chunks are refused
	refused(t, rpc.ToStatus(rpc.FromCode(answers[0].Code, answers[0].Message)), rpc.FailedPrecondition, "is registered at "+plan.Replicas[0].Addr+", not "+rogue)
	is.Equal(answers[0].FailedNodes, []string{plan.Replicas[0].NodeId}) // blames the replica
	refused(t, rpc.ToStatus(rpc.FromCode(answers[1].Code, answers[1].Message)), rpc.Permission, "the chunk token does not name replica "+stranger[:8])
	// Without a token at all.
	err = func() error {
		_, err := primary.PrepareChunkUpload(ctx, &dfspb.PrepareChunkUploadRequest{ChunkId: plan.ChunkId, Size: 1000, FrameSize: 4096,
			Replicas: []*dfspb.NodeRef{{NodeId: stranger, Addr: rogue}}})
		return err
	}()
	refused(t, err, rpc.Permission, "no chunk token")
	is.Equal(accepted.Load(), int64(0)) // the primary dialed nothing

	// The plan as the coordinator made it goes through.
	err = prepare(plan.Replicas...)
	is.NoErr(err) // the replicas the token names, at their addresses
	_, err = cc.AbortUpload(ctx, &dfspb.AbortUploadRequest{SessionId: up.SessionId})
	is.NoErr(err)
}

func TestSecureRepairAndDeletion(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := healingCluster(t, 4, rolestest.Secure)
	cl := rolestest.Client(t, c)
	files := putFiles(t, cl, "/heal", 3*rolestest.ChunkSize, 1000)
	paths := slices.Sorted(mapKeys(files))
	waitHealed(t, c, cl, paths, 3, nil)

	victim := mostLoaded(c, nil)
	is.NoErr(c.StopNode(nodeIndex(t, c, victim)))
	down := nodeSet{victim: true}
	waitHealed(t, c, cl, paths, 3, down) // repairs carry replicate and read tokens
	checkFiles(t, cl, files)
	is.True(health(t, c).Health.RepairsDone > 0) // copies were made

	for _, p := range paths {
		is.NoErr(cl.Remove(t.Context(), p))
	}
	eventually(t, "every live node's chunks deleted", func() bool {
		for _, n := range c.Nodes() {
			if string(n.Node.ID()) != victim && n.Node.Store().Usage().Chunks != 0 {
				return false
			}
		}
		return true
	})
	is.True(health(t, c).Health.ChunksDeleted > 0) // deletions carry delete tokens
}

func TestChunkKeyRotation(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	ctx := t.Context()
	c, cl := tokenCluster(t, 2, rolestest.WithCoordinator(func(cfg *coordinator.Config) {
		cfg.ChunkKeyRotation = 2 * time.Second
		cfg.ChunkTokenLifetime = 8 * time.Second
	}))
	data := putFile(t, cl, "/f", 1000)
	cc := adminCoord(t, c)
	old := firstChunk(t, cc, "/f")
	var fresh *dfspb.ChunkInfo
	eventually(t, "a token signed with a new key", func() bool {
		fresh = firstChunk(t, cc, "/f")
		return fresh.Token.KeyId != old.Token.KeyId
	})
	dn := anonDatanode(t, c, nodeAddr(t, c, old.Replicas[0].NodeId))
	b, err := readWith(ctx, dn, old.ChunkId, old.Token)
	is.NoErr(err) // a token of the old key verifies until it expires
	is.True(bytes.Equal(b, data))
	b, err = readWith(ctx, dn, fresh.ChunkId, fresh.Token)
	is.NoErr(err) // the datanode had the new key before it signed
	is.True(bytes.Equal(b, data))
	got, err := getBytes(ctx, cl, "/f")
	is.NoErr(err)
	is.True(bytes.Equal(got, data))
}

func TestChunkTokensSurviveCoordinatorRestart(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	ctx := t.Context()
	c, cl := tokenCluster(t, 2)
	data := putFile(t, cl, "/f", 1000)
	before := firstChunk(t, adminCoord(t, c), "/f")
	restartCoordinator(t, c)
	cc := adminCoord(t, c)
	var after *dfspb.ChunkInfo
	eventually(t, "the chunk map from the restarted coordinator (out of safe mode)", func() bool {
		resp, err := cc.DownloadFile(ctx, &dfspb.DownloadFileRequest{Path: "/f"})
		if err == nil && len(resp.File.Chunks) > 0 && len(resp.File.Chunks[0].Replicas) > 0 {
			after = resp.File.Chunks[0]
		}
		return after != nil
	})
	is.True(after.Token.KeyId != before.Token.KeyId) // the new coordinator has keys of its own
	_, err := readWith(ctx, anonDatanode(t, c, nodeAddr(t, c, before.Replicas[0].NodeId)), before.ChunkId, before.Token)
	is.NoErr(err) // a token from before the restart still reads
	_, err = readWith(ctx, anonDatanode(t, c, nodeAddr(t, c, after.Replicas[0].NodeId)), after.ChunkId, after.Token)
	is.NoErr(err) // and so does one from after
	got, err := getBytes(ctx, cl, "/f")
	is.NoErr(err)
	is.True(bytes.Equal(got, data))
}

// writerFunc is an io.Writer made of a function.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestLongTransfersRenewChunkTokens: a put, a get and a Reader that last
// longer than a chunk token lives ask the coordinator for new tokens and
// go on.
func TestLongTransfersRenewChunkTokens(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	ctx := t.Context()
	const lifetime = 2 * time.Second
	c, _ := tokenCluster(t, 2, rolestest.WithCoordinator(func(cfg *coordinator.Config) { cfg.ChunkTokenLifetime = lifetime }))
	// One chunk at a time, so later chunks use tokens from the start.
	cl := rolestest.Client(t, c, func(cfg *client.Config) { cfg.Replication, cfg.Parallel = 2, 1 })
	outlive := func() { time.Sleep(lifetime + 200*time.Millisecond) } // a precondition: the tokens in hand expire

	// A put whose input stalls after the first chunk: the next plans,
	// from UploadFile, carry expired write tokens.
	data := randomBytes(3 * rolestest.ChunkSize)
	in := &hookReader{r: bytes.NewReader(data), at: rolestest.ChunkSize + 1, hook: outlive}
	_, err := cl.Put(ctx, "/long", in, int64(len(data)), nil)
	is.NoErr(err) // the put asked for new plans

	// A get whose output stalls after the first chunk: the page's read
	// tokens expire before the next chunks are fetched.
	var out bytes.Buffer
	first := true
	_, err = cl.Get(ctx, "/long", writerFunc(func(p []byte) (int, error) {
		if first {
			first = false
			outlive()
		}
		return out.Write(p)
	}), nil)
	is.NoErr(err) // the get asked for new tokens
	is.True(bytes.Equal(out.Bytes(), data))

	// A Reader kept open past its page's tokens.
	r, err := cl.Open(ctx, "/long")
	is.NoErr(err)
	defer r.Close()
	buf := make([]byte, 100)
	_, err = r.ReadAt(buf, 0)
	is.NoErr(err)
	outlive()
	_, err = r.ReadAt(buf, 2*rolestest.ChunkSize+5)
	is.NoErr(err) // the reader read the page again for new tokens
	is.True(bytes.Equal(buf, data[2*rolestest.ChunkSize+5:][:100]))
}

// clusterKeys returns the chunk token keys the coordinator of c hands its
// datanodes, as a holder of the datanode certificate learns them: by
// registering a node of its own (at an address where nothing serves).
func clusterKeys(t *testing.T, c *roles.Cluster) []chunktoken.Key {
	t.Helper()
	cc := dfspb.NewCoordinatorClient(secureDial(t, c.Addr(), c.PKI().Files("datanode")))
	resp, err := cc.RegisterDataNode(t.Context(), &dfspb.RegisterDataNodeRequest{
		NodeId: uuid.NewString(), Addr: rolestest.FreeAddr(t), Capacity: 1 << 30, Free: 1 << 30})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	var keys []chunktoken.Key
	for _, pb := range resp.ChunkKeys {
		k, err := chunktoken.KeyFromPB(pb)
		if err != nil {
			t.Fatalf("chunk key: %v", err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		t.Fatal("a secure coordinator handed out no chunk key")
	}
	return keys
}

// TestCoordinatorChunkCallsNeedTokens: ReplicateChunk, DeleteChunk and
// BulkDeleteChunk made with the coordinator's own certificate are still
// refused without the right token: none, one signed with another key, one
// edited after signing, an expired one, one for another chunk, node or
// operation. Nothing is copied or deleted; the same calls with good
// tokens go through.
func TestCoordinatorChunkCallsNeedTokens(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	ctx := t.Context()
	c, cl := tokenCluster(t, 3)
	data := putFile(t, cl, "/f", 1000)
	putFile(t, cl, "/g", 1000)
	cc := adminCoord(t, c)
	f, g := firstChunk(t, cc, "/f"), firstChunk(t, cc, "/g")
	key := clusterKeys(t, c)[0]
	attacker, err := chunktoken.NewKey(time.Now().Add(time.Hour))
	is.NoErr(err)

	holder := f.Replicas[0]
	var target string // the node without a copy of f's chunk
	for _, n := range c.Nodes() {
		if id := string(n.Node.ID()); !slices.ContainsFunc(f.Replicas, func(r *dfspb.ReplicaInfo) bool { return r.NodeId == id }) {
			target = id
		}
	}
	is.True(target != "") // replication 2 on three nodes
	asCoordinator := func(addr string) dfspb.DataNodeClient {
		return dfspb.NewDataNodeClient(secureDial(t, addr, c.PKI().Files("coordinator")))
	}
	atHolder, atTarget := asCoordinator(holder.Addr), asCoordinator(nodeAddr(t, c, target))
	targetConn := secureDial(t, nodeAddr(t, c, target), c.PKI().Files("coordinator"))
	stored := func(node, chunk string) bool {
		return c.Nodes()[nodeIndex(t, c, node)].Node.Store().Has(rpc.ChunkID(chunk))
	}
	later, earlier := time.Now().Add(time.Minute), time.Now().Add(-time.Minute)
	mint := func(k chunktoken.Key, chunk string, op chunktoken.Op, node string, expires time.Time) *dfspb.ChunkToken {
		return chunktoken.Mint(k, rpc.ChunkID(chunk), op, []rpc.NodeID{rpc.NodeID(node)}, expires).PB()
	}
	// edited is f's read token with its operation changed, not signed again.
	edited := func(op dfspb.ChunkOp) *dfspb.ChunkToken {
		tok := proto.Clone(f.Token).(*dfspb.ChunkToken)
		tok.Op = op
		return tok
	}
	// badTokens are the tokens that must not allow op on f's chunk at node.
	type badToken struct {
		name string
		tok  *dfspb.ChunkToken
		want string
	}
	badTokens := func(op chunktoken.Op, pbOp dfspb.ChunkOp, node, elsewhere string) []badToken {
		bad := []badToken{
			{"no token", nil, "no chunk token"},
			{"signed with another key", mint(attacker, f.ChunkId, op, node, later), "chunk token: unknown key"},
			{"a read token edited", edited(pbOp), "chunk token: bad signature"},
			{"expired", mint(key, f.ChunkId, op, node, earlier), "chunk token: expired"},
			{"for another chunk", mint(key, g.ChunkId, op, node, later), "chunk token: for another chunk"},
			{"for another node", mint(key, f.ChunkId, op, elsewhere, later), "chunk token: not for this node"},
		}
		for _, wrong := range []chunktoken.Op{chunktoken.Read, chunktoken.Write, chunktoken.Replicate, chunktoken.Delete} {
			if wrong != op {
				bad = append(bad, badToken{"a " + wrong.String() + " token", mint(key, f.ChunkId, wrong, node, later),
					"chunk token: a " + wrong.String() + " token does not allow " + op.String()})
			}
		}
		return bad
	}

	deleteWith := func(tok *dfspb.ChunkToken) error {
		_, err := atHolder.DeleteChunk(ctx, &dfspb.DeleteChunkRequest{ChunkId: f.ChunkId, Token: tok})
		return err
	}
	bulkDeleteWith := func(tok *dfspb.ChunkToken) error {
		req := &dfspb.BulkDeleteChunkRequest{ChunkIds: []string{f.ChunkId}, NodeId: holder.NodeId}
		if tok != nil {
			req.Tokens = []*dfspb.ChunkToken{tok}
		}
		_, err := atHolder.BulkDeleteChunk(ctx, req)
		return err
	}
	replicateWith := func(tok *dfspb.ChunkToken) error {
		_, err := atTarget.ReplicateChunk(ctx, &dfspb.ReplicateChunkRequest{
			ChunkId: f.ChunkId, Size: f.Size, FrameSize: f.FrameSize, Digest: f.Digest,
			Source: &dfspb.NodeRef{NodeId: holder.NodeId, Addr: holder.Addr}, Token: tok, SourceToken: f.Token})
		return err
	}
	// writeWith stores f's chunk anew on the target with WriteChunks, and
	// returns the chunk's answer as a call's error.
	writeWith := func(tok *dfspb.ChunkToken) error {
		answers, err := chunkstream.WriteChunks(ctx, targetConn, &dfspb.WriteChunksRequest{Chunks: []*dfspb.WriteChunk{{
			Prepare: &dfspb.PrepareChunkUploadRequest{ChunkId: f.ChunkId, Size: f.Size, FrameSize: f.FrameSize, Token: tok},
			Frames:  cutFrames("", f.ChunkId, data, int(f.FrameSize)),
		}}})
		if err != nil {
			return err
		}
		return rpc.ToStatus(rpc.FromCode(answers[0].Code, answers[0].Message))
	}
	for _, call := range []struct {
		name string
		do   func(*dfspb.ChunkToken) error
		bad  []badToken
	}{
		{"WriteChunks", writeWith, badTokens(chunktoken.Write, dfspb.ChunkOp_CHUNK_OP_WRITE, target, holder.NodeId)},
		{"DeleteChunk", deleteWith, badTokens(chunktoken.Delete, dfspb.ChunkOp_CHUNK_OP_DELETE, holder.NodeId, target)},
		{"BulkDeleteChunk", bulkDeleteWith, badTokens(chunktoken.Delete, dfspb.ChunkOp_CHUNK_OP_DELETE, holder.NodeId, target)},
		{"ReplicateChunk", replicateWith, badTokens(chunktoken.Replicate, dfspb.ChunkOp_CHUNK_OP_REPLICATE, target, holder.NodeId)},
	} {
		for _, b := range call.bad {
			err := call.do(b.tok)
			if call.name == "BulkDeleteChunk" && b.tok == nil {
				refused(t, err, rpc.Invalid, "1 chunk ids with 0 delete tokens")
				continue
			}
			if err == nil || statusKind(err) != rpc.Permission || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("%s with %s: want a permission error saying %q, got %v", call.name, b.name, b.want, err)
			}
		}
	}
	// A bulk delete with a good token for g's chunk and a bad one for f's
	// deletes neither.
	gHolder := g.Replicas[0]
	_, err = asCoordinator(gHolder.Addr).BulkDeleteChunk(ctx, &dfspb.BulkDeleteChunkRequest{
		ChunkIds: []string{g.ChunkId, f.ChunkId}, NodeId: gHolder.NodeId,
		Tokens: []*dfspb.ChunkToken{mint(key, g.ChunkId, chunktoken.Delete, gHolder.NodeId, later), mint(attacker, f.ChunkId, chunktoken.Delete, gHolder.NodeId, later)}})
	refused(t, err, rpc.Permission, "chunk token: unknown key")
	is.True(stored(gHolder.NodeId, g.ChunkId)) // the chunk with the good token stays too

	// Nothing was copied or deleted.
	for _, r := range f.Replicas {
		is.True(stored(r.NodeId, f.ChunkId)) // every copy of f's chunk is there
	}
	is.True(!stored(target, f.ChunkId)) // and no new one
	b, err := readWith(ctx, anonDatanode(t, c, holder.Addr), f.ChunkId, firstChunk(t, cc, "/f").Token)
	is.NoErr(err)                 // the holder still serves it
	is.True(bytes.Equal(b, data)) // whole
	got, err := getBytes(ctx, cl, "/f")
	is.NoErr(err) // and the file reads
	is.True(bytes.Equal(got, data))

	// The same calls with good tokens of the same key go through: the
	// refusals above were for the tokens alone.
	is.NoErr(replicateWith(mint(key, f.ChunkId, chunktoken.Replicate, target, later))) // a replicate token copies
	is.True(stored(target, f.ChunkId))
	_, err = atTarget.DeleteChunk(ctx, &dfspb.DeleteChunkRequest{ChunkId: f.ChunkId, Token: mint(key, f.ChunkId, chunktoken.Delete, target, later)})
	is.NoErr(err) // a delete token deletes
	is.True(!stored(target, f.ChunkId))
	is.NoErr(writeWith(mint(key, f.ChunkId, chunktoken.Write, target, later))) // a write token writes
	is.True(stored(target, f.ChunkId))
}
