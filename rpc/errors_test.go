package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// kinds lists every defined kind with its gRPC code.
var kinds = []struct {
	kind rpc.Kind
	code codes.Code
	name string
}{
	{rpc.Other, codes.Unknown, "error"},
	{rpc.NotFound, codes.NotFound, "not found"},
	{rpc.Exists, codes.AlreadyExists, "already exists"},
	{rpc.Invalid, codes.InvalidArgument, "invalid argument"},
	{rpc.Unavailable, codes.Unavailable, "unavailable"},
	{rpc.FailedPrecondition, codes.FailedPrecondition, "failed precondition"},
	{rpc.Permission, codes.PermissionDenied, "permission denied"},
	{rpc.Internal, codes.Internal, "internal error"},
	{rpc.ResourceExhausted, codes.ResourceExhausted, "resource exhausted"},
	{rpc.DeadlineExceeded, codes.DeadlineExceeded, "deadline exceeded"},
	{rpc.Canceled, codes.Canceled, "canceled"},
	{rpc.NotEmpty, codes.FailedPrecondition, "directory not empty"},
	{rpc.Unauthenticated, codes.Unauthenticated, "unauthenticated"},
}

func TestKindNames(t *testing.T) {
	is := is.New(t)
	for _, k := range kinds {
		is.Equal(k.kind.Error(), k.name) // kind name
	}
	is.Equal(rpc.Kind(200).Error(), "kind(200)") // unknown kinds still print
}

// TestEveryNamedKindHasACode guards the append-only kind set: a kind that
// has a name must also have a row in the gRPC code table.
func TestEveryNamedKindHasACode(t *testing.T) {
	is := is.New(t)
	named := 0
	for k := range rpc.Kind(255) {
		if strings.HasPrefix(k.Error(), "kind(") {
			continue
		}
		named++
		st := status.Convert(rpc.ToStatus(rpc.Errorf(k, "x")))
		is.True(st.Code() != codes.OK)                    // every named kind maps to an error code
		is.Equal(rpc.KindOf(rpc.FromStatus(st.Err())), k) // and back to itself
	}
	is.Equal(named, len(kinds)) // the test table lists every kind
}

func TestErrorIs(t *testing.T) {
	is := is.New(t)
	err := rpc.Errorf(rpc.NotFound, "file %s not found", "/a")
	is.Equal(err.Error(), "file /a not found") // message is formatted
	is.True(errors.Is(err, rpc.NotFound))      // kind matches
	is.True(!errors.Is(err, rpc.Invalid))      // other kinds do not
	wrapped := fmt.Errorf("coordinator.Stat: %w", err)
	is.True(errors.Is(wrapped, rpc.NotFound))   // through wrapping
	is.Equal(rpc.KindOf(wrapped), rpc.NotFound) // KindOf through wrapping
	var e *rpc.Error
	is.True(errors.As(wrapped, &e))                               // errors.As finds the *Error
	is.Equal(e.Kind, rpc.NotFound)                                // with its kind
	is.True(!errors.Is(io.EOF, rpc.NotFound))                     // plain errors have no kind
	is.True(!errors.Is(rpc.Errorf(rpc.Other, "x"), rpc.NotFound)) // Other is not NotFound
}

func TestNodeError(t *testing.T) {
	is := is.New(t)
	err := rpc.NodeError(rpc.Unavailable, []string{"n1", "n2"}, "replica %d down", 2)
	is.Equal(err.Error(), "replica 2 down")                                       // message
	is.True(errors.Is(err, rpc.Unavailable))                                      // kind
	is.Equal(rpc.FailedNodesOf(fmt.Errorf("put: %w", err)), []string{"n1", "n2"}) // nodes through wrapping
	is.Equal(rpc.FailedNodesOf(errors.New("x")), []string(nil))                   // no nodes on plain errors
	is.Equal(rpc.FailedNodesOf(nil), []string(nil))                               // nor on nil
}

func TestKindOf(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		err  error
		want rpc.Kind
	}{
		{"nil", nil, rpc.Other},
		{"plain", errors.New("boom"), rpc.Other},
		{"eof", io.EOF, rpc.Other},
		{"kind", rpc.Errorf(rpc.Exists, "x"), rpc.Exists},
		{"deadline", context.DeadlineExceeded, rpc.DeadlineExceeded},
		{"wrapped deadline", fmt.Errorf("op: %w", context.DeadlineExceeded), rpc.DeadlineExceeded},
		{"canceled ctx", ctx.Err(), rpc.Canceled},
		{"wrapped canceled", fmt.Errorf("op: %w", context.Canceled), rpc.Canceled},
		{"rpc error wins over context", fmt.Errorf("%w: %w", rpc.Errorf(rpc.Invalid, "bad"), context.Canceled), rpc.Invalid},
		{"joined", errors.Join(errors.New("a"), rpc.Errorf(rpc.Permission, "p")), rpc.Permission},
		{"raw status", status.Error(codes.NotFound, "x"), rpc.Other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			is.Equal(rpc.KindOf(tt.err), tt.want) // kind
		})
	}
}

func TestStatusRoundTrip(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			is := is.New(t)
			orig := fmt.Errorf("datanode.PutChunk c_1: %w", rpc.Errorf(k.kind, "the %s message", k.name))
			st := rpc.ToStatus(orig)
			s, ok := status.FromError(st)
			is.True(ok)                         // ToStatus returns a gRPC status error
			is.Equal(s.Code(), k.code)          // code from the table
			is.Equal(s.Message(), orig.Error()) // full text, wrapping included
			back := rpc.FromStatus(st)
			is.True(errors.Is(back, k.kind))                 // kind survives the round trip
			is.Equal(rpc.KindOf(back), k.kind)               // KindOf agrees
			is.Equal(back.Error(), orig.Error())             // message survives
			is.Equal(rpc.FailedNodesOf(back), []string(nil)) // no nodes invented
		})
	}
}

func TestStatusRoundTripFailedNodes(t *testing.T) {
	is := is.New(t)
	nodes := []string{"1b4e28ba-2fa1-11d2-883f-0016d3cca427", "node-b"}
	orig := fmt.Errorf("put: %w", rpc.NodeError(rpc.Unavailable, nodes, "replicas failed"))
	st := rpc.ToStatus(orig)
	s := status.Convert(st)
	is.Equal(len(s.Details()), 1) // nodes travel as one detail
	fn, ok := s.Details()[0].(*dfspb.FailedNodes)
	is.True(ok)                 // the detail is FailedNodes
	is.Equal(fn.NodeIds, nodes) // with the nodes
	back := rpc.FromStatus(st)
	is.True(errors.Is(back, rpc.Unavailable))      // kind kept
	is.Equal(rpc.FailedNodesOf(back), nodes)       // nodes kept
	is.Equal(back.Error(), "put: replicas failed") // message kept

	// Several FailedNodes details are merged.
	s2, err := status.New(codes.Unavailable, "x").WithDetails(&dfspb.FailedNodes{NodeIds: []string{"a"}}, &dfspb.FailedNodes{NodeIds: []string{"b", "c"}})
	is.NoErr(err)                                                                  // build status
	is.Equal(rpc.FailedNodesOf(rpc.FromStatus(s2.Err())), []string{"a", "b", "c"}) // all details merged
}

func TestToStatusEdges(t *testing.T) {
	t.Run("nil", func(t *testing.T) {
		is := is.New(t)
		is.NoErr(rpc.ToStatus(nil))   // nil stays nil
		is.NoErr(rpc.FromStatus(nil)) // both ways
	})
	t.Run("plain error", func(t *testing.T) {
		is := is.New(t)
		s := status.Convert(rpc.ToStatus(errors.New("disk on fire")))
		is.Equal(s.Code(), codes.Unknown)     // unclassified errors are Unknown
		is.Equal(s.Message(), "disk on fire") // with their text
	})
	t.Run("context errors", func(t *testing.T) {
		is := is.New(t)
		is.Equal(status.Code(rpc.ToStatus(fmt.Errorf("op: %w", context.DeadlineExceeded))), codes.DeadlineExceeded) // deadline
		is.Equal(status.Code(rpc.ToStatus(context.Canceled)), codes.Canceled)                                       // cancel
	})
	t.Run("status passes through", func(t *testing.T) {
		is := is.New(t)
		in := status.Error(codes.Aborted, "nested call aborted")
		out := rpc.ToStatus(in)
		is.Equal(status.Code(out), codes.Aborted)                      // code kept
		is.Equal(status.Convert(out).Message(), "nested call aborted") // message kept
	})
	t.Run("rpc error inside a status chain wins", func(t *testing.T) {
		is := is.New(t)
		out := rpc.ToStatus(rpc.FromStatus(status.Error(codes.NotFound, "gone")))
		is.Equal(status.Code(out), codes.NotFound) // re-encoding a decoded status keeps its code
	})
}

// TestToStatusNeverNil pins that an error never turns into success at the
// boundary, even for a kind missing from the code table.
func TestToStatusNeverNil(t *testing.T) {
	is := is.New(t)
	err := rpc.ToStatus(&rpc.Error{Kind: rpc.Kind(200), Msg: "future kind"})
	is.True(err != nil)                   // still an error
	is.True(status.Code(err) != codes.OK) // with a non-OK code
}

func TestFromStatusCodes(t *testing.T) {
	extra := []struct {
		code codes.Code
		want rpc.Kind
	}{
		{codes.OutOfRange, rpc.Invalid},
		{codes.Aborted, rpc.Unavailable},
		{codes.Unimplemented, rpc.FailedPrecondition},
		{codes.DataLoss, rpc.Internal},
		{codes.Unauthenticated, rpc.Unauthenticated},
		{codes.Unknown, rpc.Other},
		{codes.Code(99), rpc.Other},
	}
	for _, k := range kinds {
		if k.kind == rpc.NotEmpty {
			continue // its code alone reads as FailedPrecondition: the kind travels as a detail
		}
		extra = append(extra, struct {
			code codes.Code
			want rpc.Kind
		}{k.code, k.kind})
	}
	for _, tt := range extra {
		t.Run(tt.code.String(), func(t *testing.T) {
			is := is.New(t)
			err := rpc.FromStatus(status.Error(tt.code, "msg"))
			is.Equal(rpc.KindOf(err), tt.want) // code maps to kind
			is.Equal(err.Error(), "msg")       // message is the server's
		})
	}
}

func TestFromStatusPassThrough(t *testing.T) {
	is := is.New(t)
	plain := errors.New("not a status")
	is.Equal(rpc.FromStatus(plain), plain)   // non-status errors pass unchanged
	is.Equal(rpc.FromStatus(io.EOF), io.EOF) // io.EOF too, so stream loops still see it
	ours := rpc.Errorf(rpc.Exists, "x")
	is.Equal(rpc.FromStatus(ours), ours) // *Error passes unchanged
	dl := fmt.Errorf("call: %w", context.DeadlineExceeded)
	is.Equal(rpc.FromStatus(dl), dl)                               // context errors pass unchanged
	is.Equal(rpc.KindOf(rpc.FromStatus(dl)), rpc.DeadlineExceeded) // and keep their kind
}

func TestErrorsKeepTheirCause(t *testing.T) {
	is := is.New(t)
	cause := fs.ErrNotExist
	err := rpc.Errorf(rpc.NotFound, "chunk %s: open: %w", "c1", cause)
	is.Equal(err.Error(), "chunk c1: open: file does not exist") // the cause's text stays in the message once
	is.True(errors.Is(err, fs.ErrNotExist))                      // and the cause itself is kept
	is.True(errors.Is(err, rpc.NotFound))                        // beside the kind

	wrapped := rpc.E("datanode.PutChunk", rpc.Other, err)
	is.Equal(wrapped.Error(), "datanode.PutChunk: chunk c1: open: file does not exist") // op first
	is.Equal(rpc.KindOf(wrapped), rpc.NotFound)                                         // Other pulls the kind up
	is.True(errors.Is(wrapped, fs.ErrNotExist))                                         // through both layers

	forced := rpc.E("coordinator.Verify", rpc.Internal, err)
	is.Equal(rpc.KindOf(forced), rpc.Internal) // a given kind wins over the cause's
	is.True(errors.Is(forced, rpc.Internal))   // errors.Is agrees with KindOf
	is.True(!errors.Is(forced, rpc.NotFound))  // and never answers for the kind overridden
	is.True(errors.Is(forced, fs.ErrNotExist)) // while the cause's own errors are still found
	var inner *rpc.Error
	is.True(errors.As(forced, &inner)) // errors.As finds the outer error first
	is.Equal(inner.Kind, rpc.Internal)
	deep := rpc.Errorf(rpc.Unavailable, "no replica answered: %w", rpc.E("read", rpc.Other, err))
	is.True(!errors.Is(deep, rpc.NotFound))                          // through two layers too
	is.True(errors.Is(fmt.Errorf("get: %w", deep), rpc.Unavailable)) // and under plain wrapping

	up := rpc.Errorf(rpc.Other, "confirm: %w", rpc.NodeError(rpc.Unavailable, []string{"n1"}, "node down"))
	is.Equal(rpc.KindOf(up), rpc.Unavailable)       // Errorf pulls the kind up from a %w cause
	is.Equal(rpc.FailedNodesOf(up), []string{"n1"}) // and the failed nodes are found through it
	is.Equal(rpc.FailedNodesOf(rpc.E("op", rpc.Other, up)), []string{"n1"})
	is.Equal(len(rpc.FailedNodesOf(rpc.Errorf(rpc.Internal, "commit: %w", up))), 0) // an overridden kind takes its nodes with it

	var pathErr *fs.PathError
	is.True(errors.As(rpc.E("op", rpc.Internal, &fs.PathError{Op: "open", Path: "/x", Err: fs.ErrPermission}), &pathErr)) // errors.As sees the cause
	is.Equal(rpc.E("op", rpc.Exists, nil).Error(), "op: already exists")                                                  // no cause: the kind reads
}

func TestSentinelCarriesItsKind(t *testing.T) {
	is := is.New(t)
	sentinel := &rpc.Error{Kind: rpc.FailedPrecondition, Msg: "version conflict"}
	err := rpc.Errorf(rpc.Other, "file /a is at version 2, expected 1 (%w)", sentinel)
	is.True(errors.Is(err, sentinel))               // the sentinel is found
	is.True(errors.Is(err, rpc.FailedPrecondition)) // and so is its kind
	other := rpc.Errorf(rpc.FailedPrecondition, "store closed")
	is.True(!errors.Is(other, sentinel)) // the same kind is not the same sentinel
}

func TestNotServingTravels(t *testing.T) {
	is := is.New(t)
	err := rpc.NotServingError("10.0.0.1:7000", 250*time.Millisecond, "coordinator %s is a standby", "c2")
	is.Equal(err.Error(), "coordinator c2 is a standby") // the message, not the detail's text
	is.True(errors.Is(err, rpc.Unavailable))             // of kind Unavailable
	back := rpc.FromStatus(rpc.ToStatus(err))
	ns, ok := rpc.NotServingOf(back)
	is.True(ok)                                           // the detail crosses the wire
	is.Equal(ns.Leader, "10.0.0.1:7000")                  // with the leader
	is.Equal(ns.RetryAfter, 250*time.Millisecond)         // and when to retry
	is.Equal(back.Error(), "coordinator c2 is a standby") // and the same text
	_, ok = rpc.NotServingOf(rpc.Errorf(rpc.Unavailable, "down"))
	is.True(!ok) // plain unavailability is not "not serving"
	var found *rpc.NotServing
	is.True(errors.As(rpc.E("client.Put", rpc.Other, back), &found)) // found with errors.As through wrapping
}

// TestErrorsMatchIOFS: an error of kind NotFound, Exists, Permission or
// Invalid is the io/fs error of that kind to errors.Is, through wrapping
// and over the wire, so callers test dfs errors as they test a local
// file system's; a kind a wrapper overrode is not.
func TestErrorsMatchIOFS(t *testing.T) {
	is := is.New(t)
	for kind, want := range map[rpc.Kind]error{rpc.NotFound: fs.ErrNotExist, rpc.Exists: fs.ErrExist, rpc.Permission: fs.ErrPermission, rpc.Invalid: fs.ErrInvalid} {
		err := rpc.Errorf(kind, "stat /a: %s", kind)
		is.True(errors.Is(err, want))                                        // the error itself
		is.True(errors.Is(fmt.Errorf("get: %w", err), want))                 // wrapped
		is.True(errors.Is(rpc.FromStatus(rpc.ToStatus(err)), want))          // over the wire
		is.True(!errors.Is(rpc.Errorf(rpc.Unavailable, "x: %w", err), want)) // overridden: no longer that kind
		is.True(errors.Is(err, kind))                                        // the kind still matches
	}
	is.True(!errors.Is(rpc.Errorf(rpc.Unavailable, "down"), fs.ErrNotExist)) // other kinds match none
	is.True(!errors.Is(rpc.Errorf(rpc.NotFound, "gone"), fs.ErrExist))       // nor another kind's
}
