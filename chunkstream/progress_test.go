package chunkstream_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/matryer/is"

	"github.com/dfs-project/dfs/chunkstream"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// stall is a progress timeout short enough for a test; a correct
// implementation never fires it early however slowly the test runs,
// because the receivers below either answer at once or never.
const stall = 100 * time.Millisecond

// TestUploadStalledReceiver: a receiver that takes frames and then stops
// answering (a paused process) fails the upload with DeadlineExceeded
// after the progress timeout, not when the stream's context ends.
func TestUploadStalledReceiver(t *testing.T) {
	is := is.New(t)
	p := newPipe()
	t.Cleanup(func() { p.fail(context.Canceled) })
	ctx, wd := chunkstream.NewWatchdog(t.Context(), nil, stall, "datanode x")
	defer wd.Stop()
	done := make(chan error, 1)
	go func() {
		_, _, err := chunkstream.SendChunk(ctx, p.client(), testSession, nil, testID, testData(64), 16, 1<<20)
		done <- err
	}()
	srv := p.server()
	for range 4 {
		nextFrame(t, srv) // every frame arrives; no ack ever comes
	}
	err := await(t, done, "the stalled upload to fail")
	is.Equal(rpc.KindOf(err), rpc.DeadlineExceeded)        // failed as a stall
	is.True(errors.Is(wd.Err(), rpc.DeadlineExceeded))     // the watchdog fired
	is.True(context.Cause(ctx) != nil && ctx.Err() != nil) // and canceled the stream
}

// TestUploadIdleSenderIsNotAStall: with nothing outstanding (every frame
// acknowledged) the sender may pause as long as it likes; the watchdog is
// armed again only by the next frame.
func TestUploadIdleSenderIsNotAStall(t *testing.T) {
	is := is.New(t)
	p := newPipe()
	t.Cleanup(func() { p.fail(context.Canceled) })
	ctx, wd := chunkstream.NewWatchdog(t.Context(), nil, stall, "datanode x")
	defer wd.Stop()
	fs := frames(testData(32), 16)
	u := chunkstream.NewUpload(ctx, p.client(), 1<<20)
	srv := p.server()
	is.NoErr(u.Send(fs[0]))
	nextFrame(t, srv)
	sendAck(t, srv, &dfspb.ChunkDataAck{BytesReceived: 16, ReadyForNext: true})
	waitRecvEntered(t, p, 2) // the ack is applied: nothing outstanding
	time.Sleep(4 * stall)    // an idle sender, as a primary waiting for its client
	is.NoErr(wd.Err())       // no stall while nothing was awaited
	is.NoErr(u.Send(fs[1]))  // the final frame goes out
	nextFrame(t, srv)
	sendAck(t, srv, &dfspb.ChunkDataAck{BytesReceived: 32, IsFinal: true})
	_, err := u.Finish()
	is.NoErr(err) // the upload completes
}

// TestUploadKeepaliveAcks: a receiver that repeats its last ack while it
// waits (on its replicas, on its disk commit) keeps the stream alive for
// longer than the progress timeout.
func TestUploadKeepaliveAcks(t *testing.T) {
	is := is.New(t)
	p := newPipe()
	t.Cleanup(func() { p.fail(context.Canceled) })
	ctx, wd := chunkstream.NewWatchdog(t.Context(), nil, stall, "datanode x")
	defer wd.Stop()
	done := make(chan error, 1)
	go func() {
		_, _, err := chunkstream.SendChunk(ctx, p.client(), testSession, nil, testID, testData(32), 16, 1<<20)
		done <- err
	}()
	srv := p.server()
	nextFrame(t, srv)
	sendAck(t, srv, &dfspb.ChunkDataAck{BytesReceived: 16, ReadyForNext: true})
	nextFrame(t, srv) // the final frame; the receiver now "commits"
	for range 10 {
		time.Sleep(stall / 4)
		sendAck(t, srv, &dfspb.ChunkDataAck{BytesReceived: 16, ReadyForNext: true})
	}
	sendAck(t, srv, &dfspb.ChunkDataAck{BytesReceived: 32, IsFinal: true})
	is.NoErr(await(t, done, "the upload")) // kept alive by the repeated acks
}

// TestWatchdogPeerHeardOnConnection: while the peer is heard from on the
// connection the stream shares (it answers other streams), a stream that
// waits longer than the timeout is slow, not stalled, and the watchdog
// waits on; once the peer falls silent, it fires one timeout later.
func TestWatchdogPeerHeardOnConnection(t *testing.T) {
	is := is.New(t)
	clk := clockwork.NewFakeClock()
	ctx, wd := chunkstream.NewWatchdog(t.Context(), clk, stall, "datanode x")
	defer wd.Stop()
	var mu sync.Mutex
	heard := clk.Now()
	wd.HeardFrom(func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return heard
	})
	wd.Arm()
	for range 10 { // the peer answers other streams, for many timeouts
		clk.Advance(stall / 2)
		mu.Lock()
		heard = clk.Now()
		mu.Unlock()
	}
	is.NoErr(wd.Err()) // alive on its connection: no stall
	// Silent from now on. The watchdog's timers run their callbacks in
	// goroutines of their own, so advance until it fires (boundedly).
	for i := 0; ctx.Err() == nil; i++ {
		if i == 1000 {
			t.Fatal("the watchdog never fired after the peer fell silent")
		}
		clk.Advance(stall)
		time.Sleep(time.Millisecond)
	}
	is.True(errors.Is(wd.Err(), rpc.DeadlineExceeded)) // silent: a stall
}
