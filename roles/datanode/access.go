package datanode

import (
	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// accessRules says who may call each datanode method at all, when the
// node runs with TLS. A method missing here is refused
// (TestAccessRulesComplete).
var accessRules = map[string]auth.Rule{
	"PrepareChunkUpload":   auth.Authenticated,
	"UploadChunkStream":    auth.Authenticated,
	"PrepareChunkDownload": auth.Authenticated,
	"DownloadChunkStream":  auth.Authenticated,
	"HealthCheck":          auth.Anyone,
	"StatChunks":           auth.CoordinatorOnly,
	"ReplicateChunk":       auth.CoordinatorOnly,
	"VerifyChunk":          auth.CoordinatorOnly,
	"DeleteChunk":          auth.CoordinatorOnly,
	"BulkDeleteChunk":      auth.CoordinatorOnly,
}

// access is the node's access policy.
func (n *Node) access() auth.Policy {
	return auth.Policy{Service: dfspb.DataNode_ServiceDesc.ServiceName, Rules: accessRules}
}
