package datanode

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/datanode/datanodetest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestUnknownPeersRefused: repair sources and replicas that are not
// registered datanodes are refused without dialing them, so requests
// naming arbitrary addresses leave no connections behind.
func TestUnknownPeersRefused(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	a, b := startNode(t, coord), startNode(t, coord)
	dnb := client(t, b)
	id := chunkID(t, 1)
	data := chunkData(3*testFrame, 1)
	digest := upload(t, client(t, a), id, data, testFrame)

	const requests, parallel = 500, 50
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	errs := make([]error, requests)
	for i := range requests {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			ghost := &dfspb.NodeRef{NodeId: uuid.NewString(), Addr: fmt.Sprintf("127.0.0.1:%d", 20000+i)}
			var err error
			if i%2 == 0 {
				req := replicateReq(id, data, testFrame, digest, a)
				req.Source = ghost
				_, err = dnb.ReplicateChunk(ctx, req)
			} else {
				_, err = dnb.PrepareChunkUpload(ctx, &dfspb.PrepareChunkUploadRequest{
					ChunkId: string(chunkID(t, 100+i)), Size: 10, FrameSize: testFrame, Replicas: []*dfspb.NodeRef{ghost},
				})
			}
			errs[i] = rpc.FromStatus(err)
			if nodes := rpc.FailedNodesOf(errs[i]); len(nodes) != 1 || nodes[0] != ghost.NodeId {
				errs[i] = fmt.Errorf("not attributed to %s: %w", ghost.NodeId, errs[i])
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		is.True(err != nil)                                        // an unknown peer is refused
		is.Equal(rpc.KindOf(err), rpc.FailedPrecondition)          // as not a member
		is.True(strings.Contains(err.Error(), "not a registered")) // saying why
		if t.Failed() {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	is.True(b.PeerConns() <= 1) // no connection to any of them: the coordinator's only

	// A member at another address than the one it registered is refused
	// too; at its own it is served.
	req := replicateReq(id, data, testFrame, digest, a)
	req.Source.Addr = "127.0.0.1:1"
	_, err := dnb.ReplicateChunk(t.Context(), req)
	is.Equal(rpc.KindOf(rpc.FromStatus(err)), rpc.FailedPrecondition) // a known node at the wrong address
	_, err = dnb.ReplicateChunk(t.Context(), replicateReq(id, data, testFrame, digest, a))
	is.NoErr(err)              // a registered source at its address
	is.Equal(b.PeerConns(), 2) // the coordinator and a
}

// TestNewPeerAccepted: a datanode that registered a moment ago is accepted
// as a replica once the next heartbeat reply lists it.
func TestNewPeerAccepted(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	a := startNode(t, coord, func(c *Config) { c.HeartbeatInterval = 2 * time.Second })
	b := startNode(t, coord)
	if _, known := a.Peers()[b.ID()]; known {
		t.Log("a heard of b before the call (a slow start): the wait is not exercised")
	}
	_, err := client(t, a).PrepareChunkUpload(t.Context(), &dfspb.PrepareChunkUploadRequest{
		ChunkId: string(chunkID(t, 1)), Size: 10, FrameSize: testFrame, Replicas: []*dfspb.NodeRef{{NodeId: string(b.ID()), Addr: b.Addr()}},
	})
	is.NoErr(err) // the new node is accepted after a refresh
}

// TestPeerConnsCloseWhenIdle: connections to peers close once unused.
func TestPeerConnsCloseWhenIdle(t *testing.T) {
	is := is.New(t)
	coord := datanodetest.Start(t)
	a := startNode(t, coord)
	b := startNode(t, coord, func(c *Config) { c.PeerIdleTimeout = 200 * time.Millisecond })
	id := chunkID(t, 1)
	data := chunkData(3*testFrame, 1)
	digest := upload(t, client(t, a), id, data, testFrame)
	_, err := client(t, b).ReplicateChunk(t.Context(), replicateReq(id, data, testFrame, digest, a))
	is.NoErr(err) // b dialed a for the copy
	eventually(t, "b's connection to a closes", func() bool { return b.PeerConns() == 1 })
}
