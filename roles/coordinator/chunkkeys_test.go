package coordinator

import (
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunktoken"
	"github.com/dfs-project/dfs/rpc"
)

func TestChunkKeysRotate(t *testing.T) {
	is := is.New(t)
	clk := clockwork.NewFakeClock()
	const rotation, handover, lifetime = time.Hour, 10 * time.Second, 10 * time.Minute
	k, err := newChunkKeys(clk, rotation, handover, lifetime)
	is.NoErr(err)
	chunk := rpc.NewChunkID("/f", "s", 0, 0)
	node := rpc.NodeID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")

	// handed returns the keys a datanode gets now, in a ring.
	ring := &chunktoken.Keyring{}
	handed := func() int {
		keys, err := k.handout()
		is.NoErr(err)
		for _, pb := range keys {
			key, err := chunktoken.KeyFromPB(pb)
			is.NoErr(err)
			ring.Add(clk.Now(), key)
		}
		return len(keys)
	}
	is.Equal(handed(), 1) // one key at start, signing at once
	first := k.mint(chunk, chunktoken.Read, node)
	is.True(first != nil)
	tok, err := chunktoken.FromPB(first)
	is.NoErr(err)
	is.NoErr(ring.Verify(tok, chunk, chunktoken.Read, node, clk.Now())) // a datanode with the key verifies it
	is.Equal(tok.Expires, time.UnixMilli(clk.Now().Add(lifetime).UnixMilli()))

	// Before the rotation, less the handover, the next key is handed out,
	// but the first one still signs.
	clk.Advance(rotation - handover)
	is.Equal(handed(), 2)                                             // the next key is handed out
	is.Equal(k.mint(chunk, chunktoken.Read, node).KeyId, first.KeyId) // not used yet
	clk.Advance(handover)
	next := k.mint(chunk, chunktoken.Read, node)
	is.True(next.KeyId != first.KeyId) // the next key signs after the handover
	tok, err = chunktoken.FromPB(next)
	is.NoErr(err)
	is.NoErr(ring.Verify(tok, chunk, chunktoken.Read, node, clk.Now())) // the datanode had it already
	is.Equal(handed(), 2)                                               // the first one lives on

	// The first key outlives the last token it signed.
	old, err := chunktoken.FromPB(first)
	is.NoErr(err)
	clk.Advance(lifetime - time.Millisecond)
	tok, _ = chunktoken.FromPB(k.mint(chunk, chunktoken.Read, node))
	is.True(tok.KeyID != old.KeyID) // no longer used
	handed()
	is.True(ring.Len() >= 2) // the datanode keeps it meanwhile

	// Long after, with nothing to move the keys on, a key signs at once.
	clk.Advance(10 * rotation)
	late := k.mint(chunk, chunktoken.Read, node)
	is.True(late != nil)
	is.True(late.KeyId != next.KeyId) // a new key
	is.Equal(handed(), 1)             // the expired ones are gone
}

func TestChunkKeysNilMintsNothing(t *testing.T) {
	is := is.New(t)
	var k *chunkKeys
	is.True(k.mint(rpc.NewChunkID("/f", "s", 0, 0), chunktoken.Read) == nil) // no TLS, no tokens
	keys, err := k.handout()
	is.NoErr(err)
	is.Equal(len(keys), 0) // and no keys
}
