package rpc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dfs-project/dfs/rpc/dfspb"
)

// Kind classifies an error so that callers can react to it with errors.Is
// and so that it crosses the gRPC boundary intact. The set is append-only.
type Kind uint8

// The error kinds. Other is anything unclassified.
const (
	Other Kind = iota
	NotFound
	Exists
	Invalid
	Unavailable
	FailedPrecondition
	Permission
	Internal
	ResourceExhausted
	DeadlineExceeded
	Canceled
)

var kindNames = [...]string{
	Other:              "error",
	NotFound:           "not found",
	Exists:             "already exists",
	Invalid:            "invalid argument",
	Unavailable:        "unavailable",
	FailedPrecondition: "failed precondition",
	Permission:         "permission denied",
	Internal:           "internal error",
	ResourceExhausted:  "resource exhausted",
	DeadlineExceeded:   "deadline exceeded",
	Canceled:           "canceled",
}

func (k Kind) Error() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// codes maps each kind to its gRPC code; fromCode is the reverse table.
var kindCodes = map[Kind]codes.Code{
	Other:              codes.Unknown,
	NotFound:           codes.NotFound,
	Exists:             codes.AlreadyExists,
	Invalid:            codes.InvalidArgument,
	Unavailable:        codes.Unavailable,
	FailedPrecondition: codes.FailedPrecondition,
	Permission:         codes.PermissionDenied,
	Internal:           codes.Internal,
	ResourceExhausted:  codes.ResourceExhausted,
	DeadlineExceeded:   codes.DeadlineExceeded,
	Canceled:           codes.Canceled,
}

var codeKinds = func() map[codes.Code]Kind {
	m := make(map[codes.Code]Kind, len(kindCodes))
	for k, c := range kindCodes {
		m[c] = k
	}
	m[codes.OutOfRange] = Invalid
	m[codes.Aborted] = Unavailable
	m[codes.Unimplemented] = FailedPrecondition
	m[codes.DataLoss] = Internal
	m[codes.Unauthenticated] = Permission
	return m
}()

// Error is an error of a known kind with a readable message. Nodes lists
// the datanodes the failure is attributed to, if any. NotServing marks a
// coordinator that is alive but cannot serve now; Leader names the one
// that can, and RetryAfter says when to try again.
type Error struct {
	Kind       Kind
	Msg        string
	Nodes      []string
	NotServing bool
	Leader     string
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Msg }

// Is reports whether target is e's kind, so errors.Is(err, rpc.NotFound)
// works through any wrapping.
func (e *Error) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == e.Kind
}

// Errorf returns an error of kind k with a formatted message.
func Errorf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// NodeError returns an error of kind k attributed to the given nodes.
func NodeError(k Kind, nodes []string, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...), Nodes: nodes}
}

// NotServingError returns an Unavailable error from a live coordinator
// that cannot serve now: a standby (leader names the leader, if known) or
// one in safe mode.
func NotServingError(leader string, retryAfter time.Duration, format string, args ...any) error {
	return &Error{Kind: Unavailable, Msg: fmt.Sprintf(format, args...), NotServing: true, Leader: leader, RetryAfter: retryAfter}
}

// NotServingOf returns the not-serving details of err, if it has them.
func NotServingOf(err error) (e *Error, ok bool) {
	if errors.As(err, &e) && e.NotServing {
		return e, true
	}
	return nil, false
}

// KindOf returns the kind of err: the kind of the first *Error in its
// chain, a context error's kind, or Other.
func KindOf(err error) Kind {
	var e *Error
	switch {
	case err == nil:
		return Other
	case errors.As(err, &e):
		return e.Kind
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return Canceled
	}
	return Other
}

// FailedNodesOf returns the datanodes an error is attributed to.
func FailedNodesOf(err error) []string {
	var e *Error
	if errors.As(err, &e) {
		return e.Nodes
	}
	return nil
}

// ToStatus converts err into a gRPC status error for a server's reply. The
// message is err's full text; failed nodes travel as details.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && KindOf(err) == Other {
		// Already a status (e.g. from a nested call): pass it on.
		return err
	}
	code, ok := kindCodes[KindOf(err)]
	if !ok {
		code = codes.Unknown // never OK: that would turn the error into success
	}
	st := status.New(code, err.Error())
	if nodes := FailedNodesOf(err); len(nodes) > 0 {
		if d, derr := st.WithDetails(&dfspb.FailedNodes{NodeIds: nodes}); derr == nil {
			st = d
		}
	}
	if ns, ok := NotServingOf(err); ok {
		if d, derr := st.WithDetails(&dfspb.NotServing{Leader: ns.Leader, RetryAfterMs: ns.RetryAfter.Milliseconds()}); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// FromStatus converts an error returned by a gRPC call into an *Error whose
// kind matches the status code, keeping the server's message and failed
// nodes. Non-status errors pass through unchanged.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	kind, ok := codeKinds[st.Code()]
	if !ok {
		kind = Other
	}
	out := &Error{Kind: kind, Msg: st.Message()}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *dfspb.FailedNodes:
			out.Nodes = append(out.Nodes, d.NodeIds...)
		case *dfspb.NotServing:
			out.NotServing, out.Leader = true, d.Leader
			out.RetryAfter = time.Duration(d.RetryAfterMs) * time.Millisecond
		}
	}
	return out
}
