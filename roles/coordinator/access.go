package coordinator

import (
	"context"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// accessRules says who may call each coordinator method at all, when the
// coordinator runs with TLS. The namespace calls are open to every
// authenticated user: each checks the permissions of the paths it
// touches. A method missing here is refused (TestAccessRulesComplete).
var accessRules = map[string]auth.Rule{
	"UploadFile":        auth.Authenticated,
	"AllocateChunk":     auth.Authenticated,
	"ConfirmUpload":     auth.Authenticated,
	"AbortUpload":       auth.Authenticated,
	"UploadReceipts":    auth.Authenticated,
	"DownloadFile":      auth.Authenticated,
	"StatFile":          auth.Authenticated,
	"DeleteFile":        auth.Authenticated,
	"ListFiles":         auth.Authenticated,
	"Mkdir":             auth.Authenticated,
	"Rename":            auth.Authenticated,
	"CopyFile":          auth.Authenticated,
	"Usage":             auth.Authenticated,
	"SetAttr":           auth.Authenticated,
	"ListNodes":         auth.Authenticated,
	"ReportBadReplica":  auth.Authenticated,
	"ReportNodeFailure": auth.Authenticated,
	"RegisterDataNode":  auth.DatanodeOnly,
	"DataNodeHeartbeat": auth.DatanodeOnly,
	"ReportChunks":      auth.DatanodeOnly,
	"Backup":            auth.SuperuserOnly,
	"Decommission":      auth.SuperuserOnly,
	"Fsck":              auth.SuperuserOnly,
	"CreateToken":       auth.SuperuserOnly,
}

// access is the coordinator's access policy.
func (c *Coordinator) access() auth.Policy {
	return auth.Policy{Service: dfspb.Coordinator_ServiceDesc.ServiceName, Rules: accessRules, Superusers: c.cfg.Superusers}
}

// certName returns the name of the certificate the caller presented, or
// "" for a call without one (no TLS, or an in-process call).
func certName(ctx context.Context) string {
	id, ok := auth.FromContext(ctx)
	if !ok || id.Token || id.Via != "" {
		return ""
	}
	return id.User
}
