package rpc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
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
	// NotEmpty is a directory that has entries where an empty one is
	// needed (rmdir). It travels as FailedPrecondition with an ErrorKind
	// detail, gRPC having no code of its own for it.
	NotEmpty
	// Unauthenticated is a caller the server could not identify: no
	// client certificate and no valid bearer token where one is needed.
	// Permission is an identified caller who may not do what it asked.
	Unauthenticated
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
	NotEmpty:           "directory not empty",
	Unauthenticated:    "unauthenticated",
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
	NotEmpty:           codes.FailedPrecondition,
	Unauthenticated:    codes.Unauthenticated,
}

var codeKinds = func() map[codes.Code]Kind {
	m := make(map[codes.Code]Kind, len(kindCodes))
	for k, c := range kindCodes {
		if k != NotEmpty { // travels as a detail
			m[c] = k
		}
	}
	m[codes.OutOfRange] = Invalid
	m[codes.Aborted] = Unavailable
	m[codes.Unimplemented] = FailedPrecondition
	m[codes.DataLoss] = Internal
	return m
}()

// Error is an error of a known kind. Op names the operation that failed
// ("coordinator.ConfirmUpload"), if the error says it; Msg is the readable
// message (when set, the whole text after Op, causes included); Err is the
// cause, kept so that errors.Is and errors.As see through it. Nodes lists
// the datanodes the failure is attributed to, if any.
type Error struct {
	Op    string
	Kind  Kind
	Msg   string
	Nodes []string
	Err   error
}

// Error reads "op: message"; without a message it is the cause's text, and
// without either the kind's name.
func (e *Error) Error() string {
	msg := e.Msg
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	if msg == "" {
		msg = e.Kind.Error()
	}
	if e.Op == "" {
		return msg
	}
	return e.Op + ": " + msg
}

// Unwrap returns the cause. A cause of another kind than e comes back
// behind kindless, so that errors.Is(err, kind) answers for the kind err
// has (KindOf's answer), never for a kind it overrode: an Unavailable
// "no replica answered" that wraps one replica's NotFound is no NotFound.
func (e *Error) Unwrap() error {
	if e.Err == nil {
		return nil
	}
	if k := KindOf(e.Err); k != Other && k != e.Kind {
		return kindless{e.Err}
	}
	return e.Err
}

// kindless is a cause whose kind its wrapper overrode. It matches no Kind
// with errors.Is; every other target, and errors.As, see through it.
type kindless struct{ err error }

func (k kindless) Error() string { return k.err.Error() }

func (k kindless) Is(target error) bool {
	if _, ok := target.(Kind); ok {
		return false
	}
	if isFSError(target) {
		// The io/fs error an overridden kind stands for is not matched;
		// the same error as a cause of its own (a local file's) is.
		return holds(k.err, target)
	}
	return errors.Is(k.err, target)
}

// holds reports whether target itself is in err's tree, by identity,
// without asking the errors in it (Kind.Is would answer for kinds).
func holds(err, target error) bool {
	for err != nil {
		if reflect.TypeOf(err).Comparable() && err == target {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if holds(e, target) {
					return true
				}
			}
			return false
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		default:
			return false
		}
	}
	return false
}

func (k kindless) As(target any) bool { return errors.As(k.err, target) }

// Is reports whether target is e's kind, so errors.Is(err, rpc.NotFound)
// works through any wrapping, or the io/fs error of that kind (see
// Kind.Is), so errors.Is(err, fs.ErrNotExist) does too.
func (e *Error) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == e.Kind || e.Kind.Is(target)
}

// Is reports whether target is the standard library's error for kind k:
// fs.ErrNotExist for NotFound, fs.ErrExist for Exists, fs.ErrPermission
// for Permission, fs.ErrInvalid for Invalid. So a caller of the client, or
// of an io/fs adapter over it, tests dfs errors the way it tests a local
// file system's.
func (k Kind) Is(target error) bool {
	fe, ok := fsErrors[k]
	return ok && target == fe
}

// fsErrors are the io/fs errors the kinds stand for.
var fsErrors = map[Kind]error{NotFound: fs.ErrNotExist, Exists: fs.ErrExist, Permission: fs.ErrPermission, Unauthenticated: fs.ErrPermission, Invalid: fs.ErrInvalid}

// isFSError reports whether err is one of fsErrors.
func isFSError(err error) bool {
	for _, fe := range fsErrors {
		if err == fe {
			return true
		}
	}
	return false
}

// E wraps err, the cause, as an error of operation op. A kind of Other
// pulls the kind up from the cause, so that a wrapped NotFound stays one;
// the nodes the cause is attributed to are found through the wrapping too.
// E(op, kind, nil) is an error with no cause.
func E(op string, kind Kind, err error) error {
	if kind == Other {
		kind = KindOf(err)
	}
	return &Error{Op: op, Kind: kind, Err: err}
}

// Errorf returns an error of kind k with a formatted message. A %w verb
// keeps its operand as the cause (its text stays in the message); with a
// cause, a kind of Other is pulled up from it as E does.
func Errorf(k Kind, format string, args ...any) error {
	return build(k, nil, format, args)
}

// NodeError returns an error of kind k attributed to the given nodes,
// formatted as Errorf formats.
func NodeError(k Kind, nodes []string, format string, args ...any) error {
	return build(k, nodes, format, args)
}

func build(k Kind, nodes []string, format string, args []any) error {
	wrapped := fmt.Errorf(format, args...)
	e := &Error{Kind: k, Msg: wrapped.Error(), Nodes: nodes, Err: errors.Unwrap(wrapped)}
	if k == Other && e.Err != nil {
		e.Kind = KindOf(e.Err)
	}
	return e
}

// NotServing says that a coordinator is alive but cannot serve now: a
// standby (Leader names the leader, if known) or one in safe mode.
// RetryAfter says when to try again. Find it with NotServingOf.
type NotServing struct {
	Leader     string
	RetryAfter time.Duration
}

func (n *NotServing) Error() string {
	if n.Leader != "" {
		return "not serving; the leader is " + n.Leader
	}
	return "not serving"
}

// NotServingError returns an Unavailable error from a live coordinator
// that cannot serve now: a standby (leader names the leader, if known) or
// one in safe mode.
func NotServingError(leader string, retryAfter time.Duration, format string, args ...any) error {
	return &Error{Kind: Unavailable, Msg: fmt.Sprintf(format, args...), Err: &NotServing{Leader: leader, RetryAfter: retryAfter}}
}

// NotServingOf returns the not-serving details of err, if it has them.
func NotServingOf(err error) (ns *NotServing, ok bool) {
	if errors.As(err, &ns) {
		return ns, true
	}
	return nil, false
}

// KindOf returns the kind of err: the first kind other than Other among
// the *Errors in its chain, else a context error's kind, else Other.
func KindOf(err error) Kind {
	if err == nil {
		return Other
	}
	for cause := err; cause != nil; {
		var e *Error
		if !errors.As(cause, &e) {
			break
		}
		if e.Kind != Other {
			return e.Kind
		}
		cause = e.Err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return Canceled
	}
	return Other
}

// FailedNodesOf returns the datanodes an error is attributed to: those of
// the first *Error in its chain that names any. Nodes travel with the
// kind: a cause whose kind its wrapper overrode (see Unwrap) gives none,
// so a coordinator's own failure that wraps a datanode's does not blame
// that datanode to the coordinator's caller.
func FailedNodesOf(err error) []string {
	for err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return nil
		}
		if len(e.Nodes) > 0 {
			return e.Nodes
		}
		if e.Err == nil || KindOf(e.Err) != e.Kind {
			return nil
		}
		err = e.Err
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
	if k := KindOf(err); k == NotEmpty {
		if d, derr := st.WithDetails(&dfspb.ErrorKind{Kind: k.Error()}); derr == nil {
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
			out.Err = &NotServing{Leader: d.Leader, RetryAfter: time.Duration(d.RetryAfterMs) * time.Millisecond}
		case *dfspb.ErrorKind:
			if d.Kind == NotEmpty.Error() && st.Code() == kindCodes[NotEmpty] {
				out.Kind = NotEmpty
			}
		}
	}
	return out
}

// CodeOf returns the gRPC status code and message ToStatus gives err, for
// a reply that answers several items each on its own (0 and "" for nil).
func CodeOf(err error) (code uint32, msg string) {
	if err == nil {
		return 0, ""
	}
	st := status.Convert(ToStatus(err))
	return uint32(st.Code()), st.Message()
}

// FromCode is FromStatus of the status an item of such a reply carries:
// nil for code 0.
func FromCode(code uint32, msg string) error {
	if code == uint32(codes.OK) {
		return nil
	}
	return FromStatus(status.Error(codes.Code(code), msg))
}
