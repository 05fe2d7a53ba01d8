package cli

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// The printers of the client commands, and the JSON shapes scripts read.

// listJSON is one entry of `ls --json`.
type listJSON struct {
	Path        string    `json:"path"`
	Dir         bool      `json:"dir"`
	Size        int64     `json:"size"`
	Chunks      uint32    `json:"chunks,omitempty"`
	Replication uint32    `json:"replication,omitempty"`
	Modified    time.Time `json:"modified,omitzero"`
	Owner       string    `json:"owner,omitempty"`
	Group       string    `json:"group,omitempty"`
	Mode        string    `json:"mode,omitempty"`
}

// posixMode returns m's permission bits and sticky bit as POSIX numbers
// them (0o1755).
func posixMode(m fs.FileMode) uint32 {
	n := uint32(m.Perm())
	if m&fs.ModeSticky != 0 {
		n |= 0o1000
	}
	return n
}

// octalMode is m as chmod takes it ("0644", "1777"); "" without an
// owner (a coordinator older than permissions).
func octalMode(owner string, m fs.FileMode) string {
	if owner == "" {
		return ""
	}
	return fmt.Sprintf("%04o", posixMode(m))
}

// modeString is m as ls -l prints it ("drwxr-xr-x").
func modeString(m fs.FileMode, dir bool) string { return auth.FormatMode(posixMode(m), dir) }

// listPrinter prints a listing as ls does, a page at a time as the pages
// arrive, so that ls holds one page however long the listing is. Call
// page for each page, then end once.
//
// The output is what printing the whole listing at once would give. -l
// aligns its columns as a tabwriter would (each as wide as its widest
// cell, plus two spaces), but only over the entries printed so far: a
// listing of one page (up to 1,000 entries by default) prints exactly
// what a tabwriter over the whole listing prints; on a later page a wider
// cell (a larger size or chunk count) widens its column from that line
// on. --json writes one indented array, element by element; a listing
// that fails halfway leaves it unterminated (and ls exits non-zero), so
// no script can take a part for the whole.
type listPrinter struct {
	w                   io.Writer
	long, human, asJSON bool

	n      int          // entries printed so far
	widths [6]int       // -l: the widest cell so far of each aligned column
	buf    bytes.Buffer // one page's output, written at once
}

// page prints entries.
func (p *listPrinter) page(entries []client.DirEntry) error {
	p.buf.Reset()
	switch {
	case p.asJSON:
		for _, e := range entries {
			j := listJSON{Path: e.Path, Dir: e.IsDir, Size: e.Size, Chunks: e.Chunks, Replication: e.Replication, Modified: e.Modified,
				Owner: e.Owner, Group: e.Group, Mode: octalMode(e.Owner, e.Mode)}
			b, err := json.MarshalIndent(j, "  ", "  ")
			if err != nil {
				return err
			}
			if p.n == 0 {
				p.buf.WriteString("[\n  ")
			} else {
				p.buf.WriteString(",\n  ")
			}
			p.buf.Write(b)
			p.n++
		}
	case p.long:
		rows := make([][6]string, len(entries))
		for i, e := range entries {
			owner, group := e.Owner, e.Group
			if owner == "" {
				owner, group = "-", "-"
			}
			rows[i] = [6]string{owner, group, "-", "-", "-", "-"}
			if !e.IsDir {
				rows[i] = [6]string{owner, group, size(e.Size, p.human), fmt.Sprintf("%d chunks", e.Chunks), fmt.Sprintf("x%d", e.Replication), e.Modified.Format(time.RFC3339)}
			}
			for c, cell := range rows[i] {
				p.widths[c] = max(p.widths[c], utf8.RuneCountInString(cell))
			}
		}
		for i, e := range entries {
			name := e.Path
			if e.IsDir {
				name += "/"
			}
			p.buf.WriteString(modeString(e.Mode, e.IsDir) + "  ")
			for c, cell := range rows[i] {
				p.buf.WriteString(cell)
				p.buf.WriteString(strings.Repeat(" ", p.widths[c]-utf8.RuneCountInString(cell)+2))
			}
			p.buf.WriteString(name + "\n")
			p.n++
		}
	default:
		for _, e := range entries {
			p.buf.WriteString(e.Path)
			if e.IsDir {
				p.buf.WriteString("/")
			}
			p.buf.WriteString("\n")
			p.n++
		}
	}
	_, err := p.w.Write(p.buf.Bytes())
	return err
}

// end finishes the listing: it closes the JSON array.
func (p *listPrinter) end() error {
	if !p.asJSON {
		return nil
	}
	end := "\n]\n"
	if p.n == 0 {
		end = "[]\n"
	}
	_, err := io.WriteString(p.w, end)
	return err
}

type replicaJSON struct {
	NodeID string `json:"node_id"`
	Addr   string `json:"addr"`
	State  string `json:"state"`
}

type chunkJSON struct {
	Index     uint32        `json:"index"`
	ID        string        `json:"id"`
	Offset    int64         `json:"offset"`
	Size      int64         `json:"size"`
	Digest    string        `json:"digest"`
	FrameSize int64         `json:"frame_size"`
	Replicas  []replicaJSON `json:"replicas"`
}

type statJSON struct {
	Path        string            `json:"path"`
	Size        int64             `json:"size"`
	SHA256      string            `json:"sha256"`
	ChunkSize   int64             `json:"chunk_size"`
	Replication uint32            `json:"replication"`
	Version     uint64            `json:"version"`
	Modified    time.Time         `json:"modified"`
	Owner       string            `json:"owner,omitempty"`
	Group       string            `json:"group,omitempty"`
	Mode        string            `json:"mode,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Chunks      []chunkJSON       `json:"chunks"`
}

// statDirJSON is `stat --json` of a directory.
type statDirJSON struct {
	Path     string    `json:"path"`
	Dir      bool      `json:"dir"`
	Modified time.Time `json:"modified,omitzero"`
	Owner    string    `json:"owner,omitempty"`
	Group    string    `json:"group,omitempty"`
	Mode     string    `json:"mode,omitempty"`
}

// printAttrs prints the owner, group and mode lines of stat.
func printAttrs(w io.Writer, fi *client.FileInfo) {
	if fi.Owner == "" {
		return
	}
	fmt.Fprintf(w, "owner:       %s\n", fi.Owner)
	fmt.Fprintf(w, "group:       %s\n", fi.Group)
	fmt.Fprintf(w, "mode:        %s (%s)\n", octalMode(fi.Owner, fi.Mode), modeString(fi.Mode, fi.IsDir))
}

func printStat(w io.Writer, fi *client.FileInfo, asJSON bool) error {
	if fi.IsDir {
		j := statDirJSON{Path: fi.Path, Dir: true, Modified: fi.Modified, Owner: fi.Owner, Group: fi.Group, Mode: octalMode(fi.Owner, fi.Mode)}
		if asJSON {
			return writeJSON(w, j)
		}
		fmt.Fprintf(w, "path:        %s\n", j.Path)
		fmt.Fprintf(w, "type:        directory\n")
		if !j.Modified.IsZero() {
			fmt.Fprintf(w, "modified:    %s\n", j.Modified.Format(time.RFC3339))
		}
		printAttrs(w, fi)
		return nil
	}
	j := statJSON{
		Path: fi.Path, Size: fi.Size, SHA256: hex.EncodeToString(fi.SHA256), ChunkSize: fi.ChunkSize,
		Replication: fi.Replication, Version: fi.Version, Modified: fi.Modified,
		Owner: fi.Owner, Group: fi.Group, Mode: octalMode(fi.Owner, fi.Mode), Metadata: fi.Metadata, Chunks: []chunkJSON{},
	}
	for _, ch := range fi.Chunks {
		cj := chunkJSON{Index: ch.Index, ID: ch.ID, Offset: ch.Offset, Size: ch.Size, Digest: hex.EncodeToString(ch.Digest), FrameSize: ch.FrameSize, Replicas: []replicaJSON{}}
		for _, r := range ch.Replicas {
			cj.Replicas = append(cj.Replicas, replicaJSON{NodeID: r.Node, Addr: r.Addr, State: string(r.State)})
		}
		j.Chunks = append(j.Chunks, cj)
	}
	if asJSON {
		return writeJSON(w, j)
	}
	fmt.Fprintf(w, "path:        %s\n", j.Path)
	fmt.Fprintf(w, "size:        %d (%s)\n", j.Size, rpc.FormatBytes(j.Size))
	if j.SHA256 == "" {
		j.SHA256 = "none (concatenated: its chunks' digests verify it)"
	}
	fmt.Fprintf(w, "sha256:      %s\n", j.SHA256)
	fmt.Fprintf(w, "chunk size:  %s\n", rpc.FormatBytes(j.ChunkSize))
	fmt.Fprintf(w, "replication: %d\n", j.Replication)
	fmt.Fprintf(w, "version:     %d\n", j.Version)
	fmt.Fprintf(w, "modified:    %s\n", j.Modified.Format(time.RFC3339))
	printAttrs(w, fi)
	for _, k := range slices.Sorted(maps.Keys(j.Metadata)) {
		fmt.Fprintf(w, "metadata:    %s: %s\n", k, j.Metadata[k])
	}
	fmt.Fprintf(w, "chunks:      %d\n", len(j.Chunks))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range j.Chunks {
		var reps []string
		for _, r := range c.Replicas {
			reps = append(reps, fmt.Sprintf("%s@%s(%s)", rpc.NodeID(r.NodeID).Short(), r.Addr, r.State))
		}
		fmt.Fprintf(tw, "  %d\t%s\t%d\t%s\n", c.Index, c.ID, c.Size, strings.Join(reps, " "))
	}
	return tw.Flush()
}

type nodeJSON struct {
	NodeID         string `json:"node_id"`
	Addr           string `json:"addr"`
	State          string `json:"state"`
	Draining       bool   `json:"draining,omitempty"`
	Decommissioned bool   `json:"decommissioned,omitempty"`
	CorruptChunks  int64  `json:"corrupt_chunks,omitempty"`
	// ConflictAddr is another address a registration with this node ID
	// came from lately, refused because the node was alive here.
	ConflictAddr string `json:"conflict_addr,omitempty"`
	// DiskError is why the node takes no new chunks (its disk is not
	// writable); FailingUntil, while set, is when the coordinator stops
	// placing it last after reports of failed streams.
	DiskError     string     `json:"disk_error,omitempty"`
	FailingUntil  *time.Time `json:"failing_until,omitempty"`
	Capacity      int64      `json:"capacity"`
	Used          int64      `json:"used"`
	Free          int64      `json:"free"`
	Chunks        int64      `json:"chunks"`
	LastHeartbeat time.Time  `json:"last_heartbeat"`
}

// nodeStatusJSON is n as `nodes --json` and `admin decommission --json`
// print it.
func nodeStatusJSON(n client.NodeStatus) nodeJSON {
	j := nodeJSON{
		NodeID: n.ID, Addr: n.Addr, State: string(n.State), Draining: n.Draining, Decommissioned: n.Decommissioned,
		CorruptChunks: n.CorruptChunks, ConflictAddr: n.ConflictAddr, DiskError: n.DiskError, Capacity: n.Capacity, Used: n.Used,
		Free: n.Free, Chunks: n.Chunks, LastHeartbeat: n.LastHeartbeat,
	}
	if !n.FailingUntil.IsZero() {
		j.FailingUntil = ptr(n.FailingUntil)
	}
	return j
}

// versionJSON is `version --json`.
type versionJSON struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Go      string `json:"go"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
}

// healthJSON is the cluster's chunk, repair and deletion counts, as
// `nodes --json` gives them.
type healthJSON struct {
	Chunks            int64 `json:"chunks"`
	UnderReplicated   int64 `json:"under_replicated"`
	Missing           int64 `json:"missing"`
	CorruptCopies     int64 `json:"corrupt_copies"`
	RepairsInProgress int64 `json:"repairs_in_progress"`
	RepairsDone       int64 `json:"repairs_done"`
	BytesRepaired     int64 `json:"bytes_repaired"`
	PendingDeletions  int64 `json:"pending_deletions"`
	ChunksDeleted     int64 `json:"chunks_deleted"`
	BytesReclaimed    int64 `json:"bytes_reclaimed"`
	OrphansDeleted    int64 `json:"orphans_deleted"`
}

// nodesJSON is `nodes --json`: what the text prints, the coordinator's
// state (safe mode, refused writes) and the cluster's health included.
type nodesJSON struct {
	// Leader is the address of the coordinator that answered.
	Leader         string      `json:"leader"`
	SafeMode       bool        `json:"safe_mode"`
	SafeModeStatus string      `json:"safe_mode_status,omitempty"`
	WritesRefused  string      `json:"writes_refused,omitempty"`
	Nodes          []nodeJSON  `json:"nodes"`
	Health         *healthJSON `json:"health,omitempty"`
}

func printNodes(w io.Writer, resp *client.ClusterStatus, asJSON bool) error {
	out := make([]nodeJSON, 0, len(resp.Nodes))
	for _, n := range resp.Nodes {
		out = append(out, nodeStatusJSON(n))
	}
	if asJSON {
		j := nodesJSON{Leader: resp.Leader, SafeMode: resp.SafeMode, SafeModeStatus: resp.SafeModeStatus, WritesRefused: resp.WritesRefused, Nodes: out}
		if h := resp.Health; h != nil {
			j.Health = &healthJSON{Chunks: h.Chunks, UnderReplicated: h.UnderReplicated, Missing: h.Missing, CorruptCopies: h.CorruptCopies,
				RepairsInProgress: h.RepairsInProgress, RepairsDone: h.RepairsDone, BytesRepaired: h.BytesRepaired,
				PendingDeletions: h.PendingDeletions, ChunksDeleted: h.ChunksDeleted, BytesReclaimed: h.BytesReclaimed, OrphansDeleted: h.OrphansDeleted}
		}
		return writeJSON(w, j)
	}
	if resp.SafeMode {
		fmt.Fprintf(w, "coordinator %s in safe mode: %s\n", resp.Leader, resp.SafeModeStatus)
	} else if resp.WritesRefused != "" {
		fmt.Fprintf(w, "writes refused: %s\n", resp.WritesRefused)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tSTATE\tUSED/CAPACITY\tCHUNKS\tLAST HEARTBEAT")
	for _, n := range out {
		state := n.State
		switch {
		case n.Decommissioned:
			state += ", decommissioned (safe to remove)"
		case n.Draining:
			state += ", draining"
		}
		if n.CorruptChunks > 0 {
			state += fmt.Sprintf(", %d corrupt", n.CorruptChunks)
		}
		if n.ConflictAddr != "" {
			state += fmt.Sprintf(", ID also claimed from %s (refused)", n.ConflictAddr)
		}
		if n.DiskError != "" {
			state += ", disk not writable (no new chunks)"
		}
		if n.FailingUntil != nil {
			state += fmt.Sprintf(", failing streams (placed last for %s)", time.Until(*n.FailingUntil).Round(time.Second))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s / %s\t%d\t%s ago\n", n.NodeID, n.Addr, state,
			rpc.FormatBytes(n.Used), rpc.FormatBytes(n.Capacity), n.Chunks, time.Since(n.LastHeartbeat).Round(100*time.Millisecond))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range out {
		if n.DiskError != "" {
			fmt.Fprintf(w, "datanode %s: %s\n", rpc.NodeID(n.NodeID).Short(), n.DiskError)
		}
	}
	if h := resp.Health; h != nil {
		fmt.Fprintf(w, "\nchunks: %d, under-replicated: %d (no live copy: %d), corrupt copies: %d\n", h.Chunks, h.UnderReplicated, h.Missing, h.CorruptCopies)
		fmt.Fprintf(w, "repairs: %d in progress, %d done (%s copied)\n", h.RepairsInProgress, h.RepairsDone, rpc.FormatBytes(h.BytesRepaired))
		fmt.Fprintf(w, "deletions: %d pending, %d chunks deleted (%s reclaimed), %d orphans collected\n", h.PendingDeletions, h.ChunksDeleted, rpc.FormatBytes(h.BytesReclaimed), h.OrphansDeleted)
	}
	return nil
}

type fsckChunkJSON struct {
	Index        uint32   `json:"index"`
	ID           string   `json:"id"`
	Replication  uint32   `json:"replication"`
	Live         uint32   `json:"live"`
	CorruptNodes []string `json:"corrupt_nodes,omitempty"`
	DeadNodes    []string `json:"dead_nodes,omitempty"`
	Repairing    bool     `json:"repairing,omitempty"`
}

type fsckFileJSON struct {
	Path       string          `json:"path"`
	Size       int64           `json:"size"`
	Unreadable bool            `json:"unreadable"`
	Chunks     []fsckChunkJSON `json:"chunks"`
}

type fsckJSON struct {
	Files                []fsckFileJSON `json:"files"`
	FilesChecked         int64          `json:"files_checked"`
	ChunksChecked        int64          `json:"chunks_checked"`
	Healthy              int64          `json:"healthy_files"`
	UnderReplicatedFiles int64          `json:"under_replicated_files"`
	UnreadableFiles      int64          `json:"unreadable_files"`
	UnderReplicated      int64          `json:"under_replicated_chunks"`
	CorruptCopies        int64          `json:"corrupt_copies"`
	RepairsInProgress    int64          `json:"repairs_in_progress"`
	BytesReclaimed       int64          `json:"bytes_reclaimed"`
}

func printFsck(w io.Writer, files []client.FsckFile, sum *client.FsckSummary, asJSON bool) error {
	j := fsckJSON{Files: []fsckFileJSON{}, FilesChecked: sum.Files, ChunksChecked: sum.Chunks, Healthy: sum.HealthyFiles,
		UnderReplicatedFiles: sum.UnderReplicatedFiles, UnreadableFiles: sum.UnreadableFiles}
	if h := sum.Health; h != nil {
		j.UnderReplicated, j.CorruptCopies, j.RepairsInProgress, j.BytesReclaimed = h.UnderReplicated, h.CorruptCopies, h.RepairsInProgress, h.BytesReclaimed
	}
	for _, f := range files {
		fj := fsckFileJSON{Path: f.Path, Size: f.Size, Unreadable: f.Unreadable, Chunks: []fsckChunkJSON{}}
		for _, c := range f.Chunks {
			fj.Chunks = append(fj.Chunks, fsckChunkJSON{Index: c.Index, ID: c.ID, Replication: c.Replication, Live: c.Live,
				CorruptNodes: c.CorruptNodes, DeadNodes: c.DeadNodes, Repairing: c.Repairing})
		}
		j.Files = append(j.Files, fj)
	}
	if asJSON {
		return writeJSON(w, j)
	}
	for _, f := range j.Files {
		what := "under-replicated"
		if f.Unreadable {
			what = "UNREADABLE"
		}
		fmt.Fprintf(w, "%s: %s\n", client.ShowPath(f.Path), what)
		for _, c := range f.Chunks {
			fmt.Fprintf(w, "  chunk %d %s: %d of %d live copies", c.Index, c.ID, c.Live, c.Replication)
			if len(c.CorruptNodes) > 0 {
				fmt.Fprintf(w, ", corrupt on %d", len(c.CorruptNodes))
			}
			if len(c.DeadNodes) > 0 {
				fmt.Fprintf(w, ", on %d dead nodes", len(c.DeadNodes))
			}
			if c.Repairing {
				fmt.Fprint(w, ", repairing")
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintf(w, "%d files, %d chunks: %d healthy, %d under-replicated, %d unreadable; %d repairs in progress\n",
		j.FilesChecked, j.ChunksChecked, j.Healthy, j.UnderReplicatedFiles, j.UnreadableFiles, j.RepairsInProgress)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
