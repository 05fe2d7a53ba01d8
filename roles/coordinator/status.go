package coordinator

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/dfs-project/dfs/rpc"
)

//go:embed status.html
var statusHTML string

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes": rpc.FormatBytes,
}).Parse(statusHTML))

// statusView is what the status page shows: the snapshot, with its nodes
// and the events rendered for reading (Nodes hides snapshot.Nodes).
type statusView struct {
	snapshot
	// Leader names the leading coordinator on a standby's page.
	Leader  string
	UsedPct int
	Nodes   []nodeView
	Events  []eventView
	Now     string
}

type nodeView struct {
	ID, ShortID, Addr, State string
	Capacity, Used, Chunks   int64
	UsedPct                  int
	LastHeartbeat, Ago       string
	Draining, Decommissioned bool
	Corrupt                  int64
}

type eventView struct {
	Time, Ago, Kind, Message string
}

// StatusHandler serves the coordinator's status page: cluster capacity and
// use, every datanode with its state and usage, file and chunk counts,
// replication health and recent events. A standby's page says so and names
// the leader. The page is plain HTML that reloads itself every 5 seconds.
func (c *Coordinator) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		v := c.statusView(r)
		var buf bytes.Buffer
		if err := statusTemplate.Execute(&buf, v); err != nil {
			http.Error(w, "cannot render the status page: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(buf.Bytes())
	})
}

func (c *Coordinator) statusView(r *http.Request) statusView {
	now := c.clock.Now()
	v := statusView{snapshot: c.snapshot(), Now: now.UTC().Format(time.RFC3339)}
	if v.Started && !v.Leading {
		v.Leader = c.leaderAddr(r.Context())
	}
	v.UsedPct = pct(v.Used, v.Capacity)
	for _, n := range v.snapshot.Nodes {
		last := time.UnixMilli(n.lastHeartbeat.UnixMilli())
		v.Nodes = append(v.Nodes, nodeView{
			ID: string(n.id), ShortID: n.id.Short(), Addr: n.addr, State: n.state.String(),
			Capacity: n.capacity, Used: n.used, Chunks: n.chunks, UsedPct: pct(n.used, n.capacity),
			LastHeartbeat: last.UTC().Format(time.RFC3339), Ago: ago(now.Sub(last)),
			Draining: n.draining, Decommissioned: n.decommissioned, Corrupt: n.corruptChunks,
		})
	}
	for _, e := range c.events.recent() {
		v.Events = append(v.Events, eventView{Time: e.Time.UTC().Format(time.RFC3339), Ago: ago(now.Sub(e.Time)), Kind: e.Kind, Message: e.Message})
	}
	return v
}

// pct is part of whole in whole percent, 0 to 100.
func pct(part, whole int64) int {
	if whole <= 0 || part <= 0 {
		return 0
	}
	return int(min(100, part*100/whole))
}

// ago renders an age the way an operator reads it: "3s ago", "5m ago".
func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}
