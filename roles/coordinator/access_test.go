package coordinator

import (
	"testing"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestAccessRulesComplete: every coordinator method has an access rule (roles/coordinator/access.go),
// without which it is refused with TLS, and no rule names a method that
// does not exist.
func TestAccessRulesComplete(t *testing.T) {
	unruled, unknown := auth.Policy{Rules: accessRules}.Mismatch(&dfspb.Coordinator_ServiceDesc)
	if len(unruled) > 0 || len(unknown) > 0 {
		t.Errorf("roles/coordinator/access.go: methods without a rule %v, rules of no method %v", unruled, unknown)
	}
}
