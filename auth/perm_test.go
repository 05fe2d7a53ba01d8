package auth

import (
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/internal/pki"
)

func TestAllowed(t *testing.T) {
	alice := Identity{User: "alice", Groups: []string{"staff"}, Role: pki.Client}
	bob := Identity{User: "bob", Groups: []string{"staff"}, Role: pki.Client}
	eve := Identity{User: "eve", Role: pki.Client}
	for _, tc := range []struct {
		id    Identity
		mode  uint32
		want  Access
		allow bool
	}{
		{alice, 0o700, Read | Write | Exec, true}, // the owner's bits
		{alice, 0o070, Read, false},               // the owner's bits decide, though the group's allow
		{bob, 0o750, Read | Exec, true},           // a member of the group: the group's bits
		{bob, 0o750, Write, false},
		{bob, 0o705, Read, false}, // the group's bits decide, though the others' allow
		{eve, 0o755, Read | Exec, true},
		{eve, 0o750, Exec, false},
		{eve, 0o1777, Write, true}, // the sticky bit grants nothing
		{eve, 0o644, 0, true},      // nothing asked, nothing refused
	} {
		is.New(t).Equal(Allowed(tc.id, "alice", "staff", tc.mode, tc.want), tc.allow) // tc
	}
}

func TestFormatMode(t *testing.T) {
	is := is.New(t)
	is.Equal(FormatMode(0o644, false), "-rw-r--r--")
	is.Equal(FormatMode(0o755, true), "drwxr-xr-x")
	is.Equal(FormatMode(0o1777, true), "drwxrwxrwt")
	is.Equal(FormatMode(0o1770, true), "drwxrwx--T")
	is.Equal(FormatMode(0, false), "----------")
	is.Equal((Read | Exec).String(), "r-x")
}
