// Package chunktoken mints and checks chunk access tokens: the
// coordinator's leave to read, write, replicate or delete one chunk at
// the datanodes a token names, until it expires, signed with a cluster
// key the coordinator shares with the datanodes (as HDFS block tokens).
// It decides; it does no I/O.
package chunktoken

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Op is what a token allows.
type Op uint8

// The operations.
const (
	// Read allows PrepareChunkDownload and DownloadChunkStream.
	Read Op = iota + 1
	// Write allows PrepareChunkUpload and UploadChunkStream, and a
	// primary to forward the chunk to the replicas the token names.
	Write
	// Replicate allows ReplicateChunk: the coordinator's repair copy.
	Replicate
	// Delete allows DeleteChunk and BulkDeleteChunk.
	Delete
)

var opNames = [...]string{Read: "read", Write: "write", Replicate: "replicate", Delete: "delete"}

func (o Op) String() string {
	if o >= Read && int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// SecretSize is the size of a key's secret.
const SecretSize = 32

// MACSize is the size of a token's MAC (HMAC-SHA256).
const MACSize = sha256.Size

// Key is a cluster key: tokens name it by ID, and it signs them until it
// expires. A datanode that holds it can check them.
type Key struct {
	ID      uint64
	Secret  [SecretSize]byte
	Expires time.Time
}

// NewKey returns a key with a random ID and secret that expires then.
func NewKey(expires time.Time) (Key, error) {
	var b [8]byte
	k := Key{Expires: expires}
	for k.ID == 0 {
		if _, err := rand.Read(b[:]); err != nil {
			return Key{}, rpc.Errorf(rpc.Internal, "chunk token key: %w", err)
		}
		k.ID = binary.BigEndian.Uint64(b[:])
	}
	if _, err := rand.Read(k.Secret[:]); err != nil {
		return Key{}, rpc.Errorf(rpc.Internal, "chunk token key: %w", err)
	}
	return k, nil
}

// Token allows Op on Chunk at Nodes until Expires (to the millisecond),
// signed by the key KeyID names.
type Token struct {
	Chunk   rpc.ChunkID
	Op      Op
	Nodes   []rpc.NodeID
	Expires time.Time
	KeyID   uint64
	MAC     []byte
}

// Mint returns a token for op on chunk at nodes until expires, signed
// with k.
func Mint(k Key, chunk rpc.ChunkID, op Op, nodes []rpc.NodeID, expires time.Time) Token {
	t := Token{Chunk: chunk, Op: op, Nodes: slices.Clone(nodes), Expires: time.UnixMilli(expires.UnixMilli()), KeyID: k.ID}
	t.MAC = t.sum(k)
	return t
}

// sum returns the MAC of t's fields under k: HMAC-SHA256 over an
// encoding in which no two tokens' fields read the same (a version tag,
// then each field, strings with their lengths).
func (t Token) sum(k Key) []byte {
	b := make([]byte, 0, 128)
	b = append(b, "dfs chunk token v1\x00"...)
	b = appendString(b, string(t.Chunk))
	b = append(b, byte(t.Op))
	b = binary.AppendUvarint(b, uint64(len(t.Nodes)))
	for _, n := range t.Nodes {
		b = appendString(b, string(n))
	}
	b = binary.BigEndian.AppendUint64(b, uint64(t.Expires.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, t.KeyID)
	m := hmac.New(sha256.New, k.Secret[:])
	m.Write(b)
	return m.Sum(nil)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// Names reports whether t is valid at node.
func (t Token) Names(node rpc.NodeID) bool { return slices.Contains(t.Nodes, node) }

// Keyring holds the keys a datanode was given and checks tokens with
// them. It is safe for concurrent use; the zero Keyring holds no key.
type Keyring struct {
	mu   sync.Mutex
	keys map[uint64]Key
}

// Add merges keys into the ring by ID (a key given again replaces the
// one held), and drops those expired at now. Keys from several
// coordinators (a new leader's, a restarted one's) live side by side, so
// tokens in flight stay valid until they expire.
func (r *Keyring) Add(now time.Time, keys ...Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.keys == nil {
		r.keys = make(map[uint64]Key)
	}
	for _, k := range keys {
		r.keys[k.ID] = k
	}
	for id, k := range r.keys {
		if !now.Before(k.Expires) {
			delete(r.keys, id)
		}
	}
}

// Len returns how many keys the ring holds.
func (r *Keyring) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.keys)
}

// Verify returns nil if t allows op on chunk at node self at now: signed
// by a key the ring holds, unexpired, for that chunk and operation, and
// naming self. Otherwise the error, of kind rpc.Permission, says why
// ("chunk token: expired", "... for another chunk", "... not for this
// node", "... unknown key", "... bad signature").
func (r *Keyring) Verify(t Token, chunk rpc.ChunkID, op Op, self rpc.NodeID, now time.Time) error {
	if !now.Before(t.Expires) {
		return rpc.Errorf(rpc.Permission, "chunk token: expired at %s (%s ago): ask the coordinator for a new one",
			t.Expires.UTC().Format(time.RFC3339), now.Sub(t.Expires).Round(time.Millisecond))
	}
	r.mu.Lock()
	k, ok := r.keys[t.KeyID]
	r.mu.Unlock()
	if !ok || !now.Before(k.Expires) {
		return rpc.Errorf(rpc.Permission, "chunk token: unknown key %016x (not from this cluster's coordinator, or not received yet)", t.KeyID)
	}
	if !hmac.Equal(t.MAC, t.sum(k)) {
		return rpc.Errorf(rpc.Permission, "chunk token: bad signature")
	}
	switch {
	case t.Chunk != chunk:
		return rpc.Errorf(rpc.Permission, "chunk token: for another chunk (%s, not %s)", t.Chunk, chunk)
	case t.Op != op:
		return rpc.Errorf(rpc.Permission, "chunk token: a %s token does not allow %s", t.Op, op)
	case !t.Names(self):
		return rpc.Errorf(rpc.Permission, "chunk token: not for this node (%s)", self.Short())
	}
	return nil
}

// MaxNodes bounds the nodes a token names.
const MaxNodes = rpc.MaxReplication

// FromPB decodes a token from the wire. A missing token is
// rpc.Permission ("no chunk token"); a malformed one (a bad chunk or node
// ID, an unknown op, too many nodes, a MAC of the wrong size) is
// rpc.Invalid, saying what is wrong.
func FromPB(pb *dfspb.ChunkToken) (Token, error) {
	if pb == nil {
		return Token{}, rpc.Errorf(rpc.Permission, "no chunk token: this datanode needs one from the coordinator for every chunk call")
	}
	chunk, err := rpc.ParseChunkID(pb.ChunkId)
	if err != nil {
		return Token{}, rpc.Errorf(rpc.Invalid, "malformed chunk token: %w", err)
	}
	op := Op(pb.Op)
	if pb.Op < dfspb.ChunkOp_CHUNK_OP_READ || pb.Op > dfspb.ChunkOp_CHUNK_OP_DELETE {
		return Token{}, rpc.Errorf(rpc.Invalid, "malformed chunk token: unknown op %d", pb.Op)
	}
	if len(pb.NodeIds) == 0 || len(pb.NodeIds) > MaxNodes {
		return Token{}, rpc.Errorf(rpc.Invalid, "malformed chunk token: %d nodes, want 1 to %d", len(pb.NodeIds), MaxNodes)
	}
	nodes := make([]rpc.NodeID, len(pb.NodeIds))
	for i, s := range pb.NodeIds {
		if nodes[i], err = rpc.ParseNodeID(s); err != nil {
			return Token{}, rpc.Errorf(rpc.Invalid, "malformed chunk token: %w", err)
		}
	}
	if pb.ExpiresUnixMs <= 0 {
		return Token{}, rpc.Errorf(rpc.Invalid, "malformed chunk token: no expiry")
	}
	if len(pb.Mac) != MACSize {
		return Token{}, rpc.Errorf(rpc.Invalid, "malformed chunk token: MAC of %d bytes, want %d", len(pb.Mac), MACSize)
	}
	return Token{Chunk: chunk, Op: op, Nodes: nodes, Expires: time.UnixMilli(pb.ExpiresUnixMs), KeyID: pb.KeyId, MAC: pb.Mac}, nil
}

// PB encodes t for the wire.
func (t Token) PB() *dfspb.ChunkToken {
	pb := &dfspb.ChunkToken{ChunkId: string(t.Chunk), Op: dfspb.ChunkOp(t.Op), ExpiresUnixMs: t.Expires.UnixMilli(), KeyId: t.KeyID, Mac: t.MAC,
		NodeIds: make([]string, len(t.Nodes))}
	for i, n := range t.Nodes {
		pb.NodeIds[i] = string(n)
	}
	return pb
}

// KeyFromPB decodes a key from the wire; a malformed one is rpc.Invalid.
func KeyFromPB(pb *dfspb.ChunkKey) (Key, error) {
	if pb.GetId() == 0 || len(pb.GetSecret()) != SecretSize || pb.GetExpiresUnixMs() <= 0 {
		return Key{}, rpc.Errorf(rpc.Invalid, "malformed chunk token key: want an ID, a %d-byte secret and an expiry", SecretSize)
	}
	k := Key{ID: pb.Id, Expires: time.UnixMilli(pb.ExpiresUnixMs)}
	copy(k.Secret[:], pb.Secret)
	return k, nil
}

// PB encodes k for the wire.
func (k Key) PB() *dfspb.ChunkKey {
	return &dfspb.ChunkKey{Id: k.ID, Secret: k.Secret[:], ExpiresUnixMs: k.Expires.UnixMilli()}
}
