package cli

import (
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/rpc"
)

// The exit statuses of dfs, by the kind of the error (rpc.KindOf). Scripts
// can tell a missing file from an unreachable cluster without reading the
// message. docs/cli.md and `dfs --help` list them.
const (
	ExitOK                 = 0
	ExitOther              = 1 // any other error (internal, timeout, a local file's)
	ExitInvalid            = 2 // usage: a bad flag, argument or path
	ExitNotFound           = 3
	ExitExists             = 4
	ExitPermission         = 5
	ExitUnavailable        = 6 // the cluster unreachable, or not serving (safe mode) after the retries
	ExitNotEmpty           = 7
	ExitFailedPrecondition = 8 // a precondition (--no-clobber's version check, a file changed under a read), fsck's findings
)

// exitCodes maps the kinds that have a status of their own.
var exitCodes = map[rpc.Kind]int{
	rpc.Invalid:            ExitInvalid,
	rpc.NotFound:           ExitNotFound,
	rpc.Exists:             ExitExists,
	rpc.Permission:         ExitPermission,
	rpc.Unauthenticated:    ExitPermission,
	rpc.Unavailable:        ExitUnavailable,
	rpc.NotEmpty:           ExitNotEmpty,
	rpc.FailedPrecondition: ExitFailedPrecondition,
}

// exitHelp is the list of exit statuses as `dfs --help` shows it.
const exitHelp = `Exit status: 0 ok, 1 other error, 2 invalid usage or argument, 3 not found,
4 already exists, 5 permission denied or unauthenticated, 6 unavailable (cluster unreachable, or
not serving after retries), 7 directory not empty, 8 failed precondition
(fsck found problems, a conditional write's version did not match). dfs health
and dfs admin salvage exit 0 or 1 only.`

// exitCode returns the exit status for err: 0 for nil, 1 for the
// commands that promise 0 or 1 (exitOne), 2 for urfave/cli's own exit
// errors (an unknown command: "No help topic for ..."), else by kind.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var one exitOneError
	if errors.As(err, &one) {
		return one.ExitCode()
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ExitInvalid
	}
	if c, ok := exitCodes[rpc.KindOf(err)]; ok {
		return c
	}
	return ExitOther
}

// exitOneError is an error whose exit status is 1 whatever its kind.
type exitOneError struct{ err error }

func (e exitOneError) Error() string { return e.err.Error() }
func (e exitOneError) Unwrap() error { return e.err }

// ExitCode is 1: the command documents exit 0 or 1.
func (exitOneError) ExitCode() int { return ExitOther }

// exitOne makes err exit with status 1 (nil stays nil), for the commands
// whose callers (a container's HEALTHCHECK) read 0 or 1 only.
func exitOne(err error) error {
	if err == nil {
		return nil
	}
	return exitOneError{err}
}

// exitOneAction wraps a command's action so that it exits 0 or 1 only.
func exitOneAction(fn cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error { return exitOne(fn(c)) }
}
