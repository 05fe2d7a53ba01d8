package coordinator

import (
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dfs-project/dfs/chunktoken"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// chunkKeys are the keys this coordinator signs chunk tokens with (only
// with TLS; a nil *chunkKeys mints nothing). A key signs for rotation;
// the next one is made handover before that and handed to the datanodes
// with every heartbeat reply meanwhile, so they hold it before it signs.
// A key expires once the last token it signed has, and the datanodes
// drop it then. Rotation is lazy: every heartbeat reply and every mint
// moves it on, so no goroutine is needed and the keys live in the
// Coordinator, across leadership terms.
type chunkKeys struct {
	clock    clockwork.Clock
	rotation time.Duration // how long a key signs
	handover time.Duration // how long before it signs a key is handed out
	lifetime time.Duration // how long a token lives

	mu   sync.Mutex
	keys []signingKey // oldest first
}

// signingKey is a key and when it starts signing.
type signingKey struct {
	chunktoken.Key
	from time.Time
}

// newChunkKeys returns the keys of a coordinator whose tokens live
// lifetime and whose keys sign for rotation each, handed out handover
// before they do; the first key signs at once (the datanodes get it when
// they register, before they serve).
func newChunkKeys(clock clockwork.Clock, rotation, handover, lifetime time.Duration) (*chunkKeys, error) {
	k := &chunkKeys{clock: clock, rotation: rotation, handover: handover, lifetime: lifetime}
	if err := k.add(clock.Now()); err != nil {
		return nil, err
	}
	return k, nil
}

// add makes a key that signs from from.
func (k *chunkKeys) add(from time.Time) error {
	key, err := chunktoken.NewKey(from.Add(k.rotation + k.handover + k.lifetime))
	if err != nil {
		return err
	}
	k.keys = append(k.keys, signingKey{Key: key, from: from})
	return nil
}

// rotateLocked drops the keys expired at now, makes the next key once
// the newest signing one has signed for rotation less handover, and
// returns the key to sign with now: the newest that signs by now and
// outlives a token minted now. When there is none (nothing moved the
// keys on for a long while) a key made now signs at once.
func (k *chunkKeys) rotateLocked(now time.Time) (chunktoken.Key, error) {
	live := k.keys[:0]
	for _, s := range k.keys {
		if now.Before(s.Expires) {
			live = append(live, s)
		}
	}
	k.keys = live
	if n := len(k.keys); n > 0 {
		if newest := k.keys[n-1]; !newest.from.After(now) && !now.Before(newest.from.Add(k.rotation-k.handover)) {
			if err := k.add(now.Add(k.handover)); err != nil {
				return chunktoken.Key{}, err
			}
		}
	}
	for i := len(k.keys) - 1; i >= 0; i-- {
		if s := k.keys[i]; !s.from.After(now) && !now.Add(k.lifetime).After(s.Expires) {
			return s.Key, nil
		}
	}
	if err := k.add(now); err != nil {
		return chunktoken.Key{}, err
	}
	return k.keys[len(k.keys)-1].Key, nil
}

// handout returns the keys still valid, for a datanode's registration or
// heartbeat reply; nil on a nil *chunkKeys.
func (k *chunkKeys) handout() ([]*dfspb.ChunkKey, error) {
	if k == nil {
		return nil, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, err := k.rotateLocked(k.clock.Now()); err != nil {
		return nil, err
	}
	out := make([]*dfspb.ChunkKey, len(k.keys))
	for i, s := range k.keys {
		out[i] = s.PB()
	}
	return out, nil
}

// mint returns a token for op on chunk at nodes, valid for the token
// lifetime; nil on a nil *chunkKeys, or when no key can be made (the
// datanodes then refuse the call, which is logged there).
func (k *chunkKeys) mint(chunk rpc.ChunkID, op chunktoken.Op, nodes ...rpc.NodeID) *dfspb.ChunkToken {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	now := k.clock.Now()
	key, err := k.rotateLocked(now)
	k.mu.Unlock()
	if err != nil {
		return nil
	}
	return chunktoken.Mint(key, chunk, op, nodes, now.Add(k.lifetime)).PB()
}
