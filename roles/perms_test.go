package roles_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
)

// listNames lists dir (one level) as cl sees it.
func listNames(ctx context.Context, cl *client.Client, dir string) ([]string, error) {
	var out []string
	for e, err := range cl.List(ctx, dir, nil) {
		if err != nil {
			return nil, err
		}
		out = append(out, e.Path)
	}
	return out, nil
}

// permissionDenied reports whether err is a refusal for want of
// permission, as the SDK returns it.
func permissionDenied(err error) bool {
	return errors.Is(err, fs.ErrPermission) && rpc.KindOf(err) == rpc.Permission
}

// TestPermissionsSecureCluster runs issue 14's scenario over TLS: the
// superuser gives alice a 0700 home; alice does everything to her files
// there; bob nothing; a 0644 file in a 0755 directory bob reads and may
// not change; chmod and chown are refused to those who may not.
func TestPermissionsSecureCluster(t *testing.T) {
	is := is.New(t)
	ctx := t.Context()
	c := rolestest.Start(t, 3, rolestest.Secure)
	admin := rolestest.Client(t, c)
	alice := rolestest.UserClient(t, c, "alice", []string{"staff"})
	bob := rolestest.UserClient(t, c, "bob", []string{"staff"})

	is.NoErr(admin.Mkdir(ctx, "/alice"))
	is.NoErr(admin.Chown(ctx, "/alice", "alice", "staff"))
	is.NoErr(admin.Chmod(ctx, "/alice", 0o700))
	fi, err := admin.Stat(ctx, "/alice")
	is.NoErr(err)
	is.Equal(fi.Owner, "alice")                      // chowned
	is.Equal(fi.Group, "staff")                      // with its group
	is.Equal(fi.Mode, fs.ModeDir|fs.FileMode(0o700)) // chmodded

	// alice, at home.
	data := randomBytes(100 << 10)
	_, err = alice.Put(ctx, "/alice/f", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // puts
	fi, err = alice.Stat(ctx, "/alice/f")
	is.NoErr(err) // stats
	is.Equal(fi.Owner, "alice")
	is.Equal(fi.Group, "staff")
	is.Equal(fi.Mode, fs.FileMode(0o644))
	names, err := listNames(ctx, alice, "/alice")
	is.NoErr(err) // lists
	is.Equal(names, []string{"/alice/f"})
	got, err := getBytes(ctx, alice, "/alice/f")
	is.NoErr(err) // reads
	is.True(bytes.Equal(got, data))
	_, err = alice.Put(ctx, "/alice/f", bytes.NewReader(data[:10]), 10, nil)
	is.NoErr(err)                                            // overwrites
	is.NoErr(alice.Rename(ctx, "/alice/f", "/alice/g", nil)) // renames

	// bob, who may not search /alice.
	_, err = bob.Stat(ctx, "/alice/g")
	is.True(permissionDenied(err)) // no stat
	_, err = listNames(ctx, bob, "/alice")
	is.True(permissionDenied(err)) // no listing
	_, err = getBytes(ctx, bob, "/alice/g")
	is.True(permissionDenied(err)) // no read
	_, err = bob.Put(ctx, "/alice/g", bytes.NewReader(data[:10]), 10, nil)
	is.True(permissionDenied(err))                                          // no overwrite
	is.True(permissionDenied(bob.Rename(ctx, "/alice/g", "/alice/h", nil))) // no rename
	is.True(permissionDenied(bob.Remove(ctx, "/alice/g")))                  // no delete
	is.True(permissionDenied(bob.Chmod(ctx, "/alice", 0o777)))              // no chmod of what is not his
	is.True(permissionDenied(alice.Chown(ctx, "/alice/g", "bob", "")))      // only the superuser gives files away

	// A 0644 file of alice in a 0755 directory: bob reads it, no more.
	is.NoErr(alice.Chmod(ctx, "/alice", 0o755))
	got, err = getBytes(ctx, bob, "/alice/g")
	is.NoErr(err) // bob reads it
	is.True(bytes.Equal(got, data[:10]))
	_, err = bob.Put(ctx, "/alice/g", bytes.NewReader(data[:5]), 5, nil)
	is.True(permissionDenied(err))                                          // not overwrite
	is.True(permissionDenied(bob.Rename(ctx, "/alice/g", "/alice/h", nil))) // not rename
	is.True(permissionDenied(bob.Remove(ctx, "/alice/g")))                  // not delete

	is.NoErr(alice.Remove(ctx, "/alice/g")) // alice deletes
	names, err = listNames(ctx, alice, "/alice")
	is.NoErr(err)
	is.Equal(len(names), 0)
}

// TestSuperuserCallsRefusedToUsers: on a secure cluster, bob (a client
// certificate, not a superuser) is refused decommission, a cluster-wide
// fsck and a backup, with a message naming the call and him, and none of
// them happens; the superuser runs fsck.
func TestSuperuserCallsRefusedToUsers(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	ctx := t.Context()
	c := rolestest.Start(t, 3, rolestest.Secure)
	admin := rolestest.Client(t, c)
	bob := rolestest.UserClient(t, c, "bob", []string{"staff"})
	data := randomBytes(1000)
	_, err := admin.Put(ctx, "/f", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err)

	// refused checks that err is the refusal of call to bob.
	refused := func(err error, call string) {
		t.Helper()
		want := call + " is for superusers; bob is not one"
		if !permissionDenied(err) || !strings.Contains(err.Error(), want) {
			t.Fatalf("bob's %s: want a permission error saying %q, got %v", call, want, err)
		}
		t.Logf("bob's %s: %v", call, err)
	}
	node := string(c.Nodes()[0].Node.ID())
	_, err = bob.Decommission(ctx, node, false)
	refused(err, "Decommission")
	st, err := admin.Nodes(ctx)
	is.NoErr(err)
	for _, n := range st.Nodes {
		is.True(!n.Draining) // no node is being decommissioned
	}
	_, _, err = bob.Fsck(ctx, "/")
	refused(err, "Fsck")
	var backup bytes.Buffer
	err = bob.Backup(ctx, &backup)
	refused(err, "Backup")
	is.True(!strings.Contains(err.Error(), "broke off")) // refused before it began
	is.Equal(backup.Len(), 0)                            // not a byte of the metadata

	files, sum, err := admin.Fsck(ctx, "/")
	is.NoErr(err)                 // the superuser checks the cluster
	is.Equal(len(files), 0)       // and finds nothing wrong
	is.Equal(sum.Files, int64(1)) // with the one file
	is.NoErr(admin.Backup(ctx, &backup))
	is.True(backup.Len() > 0) // and backs it up
}
