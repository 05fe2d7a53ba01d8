package datanode

import (
	"github.com/dfs-project/dfs/chunktoken"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// authorize returns nil when the node runs in plain text (--insecure),
// and otherwise checks that pb is a valid chunk token for op on chunk id
// at this node, signed with a key the coordinator handed out: every
// chunk call (read, write, replicate, delete) needs one with TLS, whoever
// makes it. It returns the token decoded (the zero Token in plain text).
// A missing or refused token is rpc.Permission, a malformed one
// rpc.Invalid; the message says why.
func (n *Node) authorize(pb *dfspb.ChunkToken, id rpc.ChunkID, op chunktoken.Op) (chunktoken.Token, error) {
	if n.keys == nil {
		return chunktoken.Token{}, nil
	}
	t, err := chunktoken.FromPB(pb)
	if err != nil {
		return chunktoken.Token{}, rpc.Errorf(rpc.Other, "chunk %s: %w", id, err)
	}
	if err := n.keys.Verify(t, id, op, n.id, n.clock.Now()); err != nil {
		return chunktoken.Token{}, rpc.Errorf(rpc.Other, "chunk %s: %w", id, err)
	}
	return t, nil
}

// keysFromPB decodes the chunk token keys of a coordinator's reply,
// leaving out malformed ones (a coordinator bug, or a newer
// coordinator's message).
func keysFromPB(pbs []*dfspb.ChunkKey) []chunktoken.Key {
	keys := make([]chunktoken.Key, 0, len(pbs))
	for _, pb := range pbs {
		if k, err := chunktoken.KeyFromPB(pb); err == nil {
			keys = append(keys, k)
		}
	}
	return keys
}

// learnKeys keeps the chunk token keys the coordinator sent, with every
// key held before until it expires (see chunktoken.Keyring.Add).
func (n *Node) learnKeys(keys []chunktoken.Key) {
	if n.keys != nil {
		n.keys.Add(n.clock.Now(), keys...)
	}
}
