package datanode

import (
	"testing"

	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestAccessRulesComplete: every datanode method has an access rule,
// and no rule names a method that does not exist.
func TestAccessRulesComplete(t *testing.T) {
	names := map[string]bool{}
	for _, m := range dfspb.DataNode_ServiceDesc.Methods {
		names[m.MethodName] = true
	}
	for _, s := range dfspb.DataNode_ServiceDesc.Streams {
		names[s.StreamName] = true
	}
	for n := range names {
		if _, ok := accessRules[n]; !ok {
			t.Errorf("datanode method %s has no access rule (roles/datanode/access.go): with TLS it is refused", n)
		}
	}
	for n := range accessRules {
		if !names[n] {
			t.Errorf("access rule for %s, which the datanode does not serve", n)
		}
	}
}
