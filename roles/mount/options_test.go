package mount

import (
	"slices"
	"testing"

	"github.com/matryer/is"
)

// TestAllowOtherChecksPermissions: a mount other local users may use has
// the kernel check their permissions (default_permissions); a private one
// leaves every check to the cluster.
func TestAllowOtherChecksPermissions(t *testing.T) {
	is := is.New(t)
	cfg := DefaultConfig()
	is.True(!slices.Contains(mountOptions(cfg).Options, "default_permissions")) // private: the cluster checks
	cfg.AllowOther = true
	o := mountOptions(cfg)
	is.True(o.AllowOther)
	is.True(slices.Contains(o.Options, "default_permissions")) // shared: the kernel checks each local user
}
