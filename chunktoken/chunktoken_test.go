package chunktoken

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

var (
	now    = time.UnixMilli(1_800_000_000_000)
	chunkA = rpc.NewChunkID("/a", "s", 0, 0)
	chunkB = rpc.NewChunkID("/b", "s", 0, 0)
	nodeA  = rpc.NodeID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
	nodeB  = rpc.NodeID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")
	nodeC  = rpc.NodeID("6ba7b812-9dad-11d1-80b4-00c04fd430c8")
)

func newKey(t *testing.T, expires time.Time) Key {
	t.Helper()
	k, err := NewKey(expires)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestVerify(t *testing.T) {
	key := newKey(t, now.Add(time.Hour))
	other := newKey(t, now.Add(time.Hour))
	ring := &Keyring{}
	ring.Add(now, key)
	good := Mint(key, chunkA, Read, []rpc.NodeID{nodeA, nodeB}, now.Add(time.Minute))
	forged := good
	forged.Nodes = []rpc.NodeID{nodeA, nodeC} // same MAC, another node
	flipped := good
	flipped.MAC = append([]byte(nil), good.MAC...)
	flipped.MAC[0] ^= 1
	for _, tc := range []struct {
		name  string
		tok   Token
		chunk rpc.ChunkID
		op    Op
		node  rpc.NodeID
		at    time.Time
		want  string // "" for valid
	}{
		{"valid", good, chunkA, Read, nodeA, now, ""},
		{"valid at the second node", good, chunkA, Read, nodeB, now, ""},
		{"for another chunk", good, chunkB, Read, nodeA, now, "for another chunk"},
		{"another op", good, chunkA, Write, nodeA, now, "a read token does not allow write"},
		{"another node", good, chunkA, Read, nodeC, now, "not for this node"},
		{"expired", good, chunkA, Read, nodeA, now.Add(time.Minute), "expired"},
		{"forged nodes", forged, chunkA, Read, nodeC, now, "bad signature"},
		{"flipped MAC", flipped, chunkA, Read, nodeA, now, "bad signature"},
		{"unknown key", Mint(other, chunkA, Read, []rpc.NodeID{nodeA}, now.Add(time.Minute)), chunkA, Read, nodeA, now, "unknown key"},
		{"another chunk's token re-aimed", func() Token {
			t := Mint(key, chunkB, Read, []rpc.NodeID{nodeA}, now.Add(time.Minute))
			t.Chunk = chunkA
			return t
		}(),
			chunkA, Read, nodeA, now, "bad signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			err := ring.Verify(tc.tok, tc.chunk, tc.op, tc.node, tc.at)
			if tc.want == "" {
				is.NoErr(err) // the token is valid
				return
			}
			is.True(err != nil)                                      // the token is refused
			is.True(errors.Is(err, rpc.Permission))                  // as a permission error
			is.True(strings.Contains(err.Error(), tc.want))          // saying why
			is.True(strings.HasPrefix(err.Error(), "chunk token: ")) // and what was refused
		})
	}
}

func TestKeyringKeepsKeysUntilTheyExpire(t *testing.T) {
	is := is.New(t)
	old := newKey(t, now.Add(time.Minute))
	fresh := newKey(t, now.Add(time.Hour))
	ring := &Keyring{}
	ring.Add(now, old)
	ring.Add(now, fresh) // a new leader's key: the old one stays
	is.Equal(ring.Len(), 2)
	tok := Mint(old, chunkA, Read, []rpc.NodeID{nodeA}, now.Add(30*time.Second))
	is.NoErr(ring.Verify(tok, chunkA, Read, nodeA, now.Add(10*time.Second))) // the old key still verifies
	ring.Add(now.Add(time.Minute))
	is.Equal(ring.Len(), 1) // the expired key is dropped
	ring.Add(now, old)
	is.Equal(ring.Len(), 2) // added again (merged by ID, not doubled)
	ring.Add(now, old)
	is.Equal(ring.Len(), 2)
}

func TestWire(t *testing.T) {
	is := is.New(t)
	key := newKey(t, now.Add(time.Hour))
	tok := Mint(key, chunkA, Delete, []rpc.NodeID{nodeB}, now.Add(time.Minute))
	pb := tok.PB()
	b, err := proto.Marshal(pb)
	is.NoErr(err)
	var back dfspb.ChunkToken
	is.NoErr(proto.Unmarshal(b, &back))
	got, err := FromPB(&back)
	is.NoErr(err) // a minted token decodes
	ring := &Keyring{}
	kb, err := KeyFromPB(key.PB())
	is.NoErr(err)
	ring.Add(now, kb)
	is.NoErr(ring.Verify(got, chunkA, Delete, nodeB, now)) // and verifies after a round trip
}

func TestFromPBMalformed(t *testing.T) {
	key := newKey(t, now.Add(time.Hour))
	good := func() *dfspb.ChunkToken {
		return Mint(key, chunkA, Read, []rpc.NodeID{nodeA}, now.Add(time.Minute)).PB()
	}
	many := make([]string, MaxNodes+1)
	for i := range many {
		many[i] = string(nodeA)
	}
	for _, tc := range []struct {
		name string
		edit func(*dfspb.ChunkToken)
		kind rpc.Kind
		want string
	}{
		{"bad chunk id", func(p *dfspb.ChunkToken) { p.ChunkId = "../x" }, rpc.Invalid, "invalid chunk id"},
		{"unknown op", func(p *dfspb.ChunkToken) { p.Op = 9 }, rpc.Invalid, "unknown op"},
		{"no op", func(p *dfspb.ChunkToken) { p.Op = 0 }, rpc.Invalid, "unknown op"},
		{"no nodes", func(p *dfspb.ChunkToken) { p.NodeIds = nil }, rpc.Invalid, "0 nodes"},
		{"too many nodes", func(p *dfspb.ChunkToken) { p.NodeIds = many }, rpc.Invalid, "17 nodes"},
		{"bad node id", func(p *dfspb.ChunkToken) { p.NodeIds = []string{"x"} }, rpc.Invalid, "invalid node id"},
		{"no expiry", func(p *dfspb.ChunkToken) { p.ExpiresUnixMs = 0 }, rpc.Invalid, "no expiry"},
		{"short MAC", func(p *dfspb.ChunkToken) { p.Mac = p.Mac[:5] }, rpc.Invalid, "MAC of 5 bytes"},
		{"long MAC", func(p *dfspb.ChunkToken) { p.Mac = make([]byte, 1<<16) }, rpc.Invalid, "MAC of 65536 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			pb := good()
			tc.edit(pb)
			_, err := FromPB(pb)
			is.True(errors.Is(err, tc.kind))                                  // refused with the kind
			is.True(strings.Contains(err.Error(), "malformed chunk token: ")) // saying it is malformed
			is.True(strings.Contains(err.Error(), tc.want))                   // and why
		})
	}
	t.Run("missing", func(t *testing.T) {
		is := is.New(t)
		_, err := FromPB(nil)
		is.True(errors.Is(err, rpc.Permission)) // no token is no permission
		is.True(strings.Contains(err.Error(), "no chunk token"))
	})
}

func TestKeyFromPBMalformed(t *testing.T) {
	is := is.New(t)
	for _, pb := range []*dfspb.ChunkKey{nil, {}, {Id: 1, Secret: make([]byte, 31), ExpiresUnixMs: 1}, {Id: 1, Secret: make([]byte, 32)}} {
		_, err := KeyFromPB(pb)
		is.True(errors.Is(err, rpc.Invalid)) // a malformed key is refused
	}
}

// FuzzFromPB checks that no wire token makes decoding or verifying panic,
// and that only a minted one verifies.
func FuzzFromPB(f *testing.F) {
	key := Key{ID: 7, Expires: now.Add(time.Hour)}
	copy(key.Secret[:], "a fixed secret for the fuzz test")
	ring := &Keyring{}
	ring.Add(now, key)
	seed, _ := proto.Marshal(Mint(key, chunkA, Read, []rpc.NodeID{nodeA}, now.Add(time.Minute)).PB())
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var pb dfspb.ChunkToken
		if proto.Unmarshal(b, &pb) != nil {
			return
		}
		tok, err := FromPB(&pb)
		if err != nil {
			return
		}
		if ring.Verify(tok, tok.Chunk, tok.Op, tok.Nodes[0], now) == nil && !tokenMinted(key, tok) {
			t.Fatalf("a token not minted with the key verifies: %+v", tok)
		}
	})
}

// tokenMinted reports whether tok is what Mint returns for its fields.
func tokenMinted(k Key, tok Token) bool {
	m := Mint(k, tok.Chunk, tok.Op, tok.Nodes, tok.Expires)
	return string(m.MAC) == string(tok.MAC)
}
