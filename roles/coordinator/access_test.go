package coordinator

import (
	"testing"

	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestAccessRulesComplete: every coordinator method has an access rule,
// and no rule names a method that does not exist.
func TestAccessRulesComplete(t *testing.T) {
	names := map[string]bool{}
	for _, m := range dfspb.Coordinator_ServiceDesc.Methods {
		names[m.MethodName] = true
	}
	for _, s := range dfspb.Coordinator_ServiceDesc.Streams {
		names[s.StreamName] = true
	}
	for n := range names {
		if _, ok := accessRules[n]; !ok {
			t.Errorf("coordinator method %s has no access rule (roles/coordinator/access.go): with TLS it is refused", n)
		}
	}
	for n := range accessRules {
		if !names[n] {
			t.Errorf("access rule for %s, which the coordinator does not serve", n)
		}
	}
}
