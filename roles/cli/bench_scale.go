package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/internal/proccpu"
	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/coordinator/meta"
	"github.com/dfs-project/dfs/roles/datanode/datanodesim"
	"github.com/dfs-project/dfs/rpc"
)

// ScaleConfig is what `dfs bench scale` runs.
type ScaleConfig struct {
	Files             int
	FileSize          int64
	SimNodes          int
	HeartbeatInterval time.Duration
	Puts              int
	PutParallel       int
	// Cap bounds each wait for the coordinator (serving, safe mode).
	Cap time.Duration
	// IdleWindow is how long idle CPU is sampled.
	IdleWindow time.Duration
	// Binary is the dfs executable the coordinator runs from.
	Binary string
	// CoordinatorFlags are added to the coordinator's command line.
	CoordinatorFlags []string
	// List runs `dfs ls -r /` over every file after the restart.
	List bool
	// Dir holds the backup, the store and the coordinator's log; "" is a
	// temporary directory, removed afterwards.
	Dir string
}

// ScaleResult is what `dfs bench scale` measures. Durations are seconds
// (-1: did not happen within the cap), latencies milliseconds.
type ScaleResult struct {
	Files    int `json:"files"`
	SimNodes int `json:"sim_nodes"`
	Copies   int `json:"copies"`

	LoaderSeconds float64 `json:"loader_s"`
	BackupBytes   int64   `json:"backup_bytes"`
	// RestoreSeconds is from the coordinator's start to its log saying the
	// backup is loaded; ServingSeconds to its first answer to ListNodes;
	// SafeModeSeconds to a ListNodes saying safe mode is over.
	RestoreSeconds  float64 `json:"restore_s"`
	ServingSeconds  float64 `json:"serving_s"`
	SafeModeSeconds float64 `json:"out_of_safe_mode_s"`
	// SafeModeStatus is the coordinator's safe-mode status at the cap, or
	// how safe mode ended (its log message).
	SafeModeStatus string `json:"safe_mode_status,omitempty"`

	// Latencies of the probes while inventories arrived (from serving to
	// the end of safe mode, or the cap); a probe that timed out (5 s)
	// counts as 5000 ms and in ProbeTimeouts.
	MetricsP99Ms  float64 `json:"metrics_p99_ms"`
	NodesP99Ms    float64 `json:"nodes_p99_ms"`
	StatP99Ms     float64 `json:"stat_p99_ms"`
	ProbeMaxMs    float64 `json:"probe_max_ms"`
	ProbeTimeouts int     `json:"probe_timeouts"`

	// Idle figures, once every node has sent its inventory (or at the
	// cap): resident set now and at its peak, the live heap, the CPU used
	// over the idle window (1.0 = one core), heartbeat round trips.
	RSSBytes       int64   `json:"rss_bytes"`
	PeakRSSBytes   int64   `json:"peak_rss_bytes"`
	RSSAnonBytes   int64   `json:"rss_anon_bytes"` // of RSSBytes: heap, stacks
	RSSFileBytes   int64   `json:"rss_file_bytes"` // of RSSBytes: mapped files (the store)
	HeapInuseBytes int64   `json:"heap_inuse_bytes"`
	IdleCPU        float64 `json:"idle_cpu_cores"`
	HeartbeatP50Ms float64 `json:"heartbeat_p50_ms"`
	HeartbeatP99Ms float64 `json:"heartbeat_p99_ms"`

	// Commits per second of empty files, on an empty store and on this one.
	EmptyStoreCommitsPerSec float64 `json:"empty_store_commits_per_s"`
	LoadedCommitsPerSec     float64 `json:"loaded_commits_per_s"`

	// SIGTERM to exit: idle, and during the inventories after a restart
	// (RestartServingSeconds after the restart's start; Killed: it did not
	// exit within the cap and was killed).
	SigtermIdleSeconds      float64 `json:"sigterm_idle_s"`
	SigtermInventorySeconds float64 `json:"sigterm_inventory_s"`

	// A plain restart on the loaded store (no restore), the fleet
	// registering again and sending every inventory: the same figures as
	// the first start's, and the restarted coordinator's RSS and peak once
	// every inventory is in.
	RestartServingSeconds  float64 `json:"restart_serving_s"`
	RestartSafeModeSeconds float64 `json:"restart_out_of_safe_mode_s"`
	RestartSafeModeStatus  string  `json:"restart_safe_mode_status,omitempty"`
	RestartMetricsP99Ms    float64 `json:"restart_metrics_p99_ms"`
	RestartNodesP99Ms      float64 `json:"restart_nodes_p99_ms"`
	RestartStatP99Ms       float64 `json:"restart_stat_p99_ms"`
	RestartProbeMaxMs      float64 `json:"restart_probe_max_ms"`
	RestartProbeTimeouts   int     `json:"restart_probe_timeouts"`
	RestartRSSBytes        int64   `json:"restart_rss_bytes"`
	RestartPeakRSSBytes    int64   `json:"restart_peak_rss_bytes"`

	// `dfs ls -r /` over every file, after the restart: its time, the
	// client's peak RSS, the coordinator's RSS before and after.
	LsSeconds              float64 `json:"ls_s"`
	LsLines                int64   `json:"ls_lines"`
	LsClientPeakRSSBytes   int64   `json:"ls_client_peak_rss_bytes"`
	LsCoordinatorRSSBefore int64   `json:"ls_coordinator_rss_before_bytes"`
	LsCoordinatorRSSAfter  int64   `json:"ls_coordinator_rss_after_bytes"`
	// SigtermInventoryNodes is how many inventories had been sent whole
	// since the restart when SIGTERM was sent.
	SigtermInventoryNodes int `json:"sigterm_inventories_done"`

	// What the fleet saw from its start to the end of the idle window
	// (the restart is not counted).
	Registrations     int `json:"registrations"`
	Inventories       int `json:"inventories"`
	InventoryRestarts int `json:"inventory_restarts"`
	TurnsRefused      int `json:"inventory_turns_refused"`
	ReportErrors      int `json:"report_errors"`
	HeartbeatErrors   int `json:"heartbeat_errors"`

	Notes []string `json:"notes,omitempty"`
}

func (a *app) benchScaleCommand() *cli.Command {
	sc := ScaleConfig{Files: 100000, FileSize: 4 << 10, SimNodes: 100, HeartbeatInterval: time.Second, Puts: 2000,
		PutParallel: 16, Cap: 5 * time.Minute, IdleWindow: 10 * time.Second}
	var coordFlags string
	asJSON := false
	return &cli.Command{
		Name:  "scale",
		Usage: "measure a real coordinator process holding N one-chunk files, with simulated datanodes holding every copy",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "files", Value: sc.Files, Destination: &sc.Files, EnvVars: env("BENCH_SCALE_FILES"), Usage: "one-chunk files in the restored namespace"},
			&cli.GenericFlag{Name: "file-size", Value: byteSize(&sc.FileSize), EnvVars: env("BENCH_SCALE_FILE_SIZE"), Usage: "size of each file (its one chunk)"},
			&cli.IntFlag{Name: "sim-nodes", Value: sc.SimNodes, Destination: &sc.SimNodes, EnvVars: env("BENCH_SIM_NODES"), Usage: "simulated datanodes (3 copies of each chunk, round robin)"},
			&cli.DurationFlag{Name: "heartbeat-interval", Value: sc.HeartbeatInterval, Destination: &sc.HeartbeatInterval, EnvVars: env("BENCH_HEARTBEAT_INTERVAL"), Usage: "pause between a simulated datanode's heartbeats"},
			&cli.IntFlag{Name: "puts", Value: sc.Puts, Destination: &sc.Puts, EnvVars: env("BENCH_SCALE_PUTS"), Usage: "empty files committed to time the commit rate, on an empty store and on the loaded one; 0 skips"},
			&cli.IntFlag{Name: "put-parallel", Value: sc.PutParallel, Destination: &sc.PutParallel, EnvVars: env("BENCH_SCALE_PUT_PARALLEL"), Usage: "commits in flight at once"},
			&cli.DurationFlag{Name: "cap", Value: sc.Cap, Destination: &sc.Cap, EnvVars: env("BENCH_SCALE_CAP"), Usage: "longest wait for the coordinator to serve, to leave safe mode, or to exit after SIGTERM"},
			&cli.DurationFlag{Name: "idle-window", Value: sc.IdleWindow, Destination: &sc.IdleWindow, EnvVars: env("BENCH_SCALE_IDLE_WINDOW"), Usage: "how long the idle coordinator's CPU is sampled"},
			&cli.StringFlag{Name: "binary", Value: sc.Binary, Destination: &sc.Binary, EnvVars: env("BENCH_SCALE_BINARY"), Usage: "dfs executable to run the coordinator from (default: this one)"},
			&cli.StringFlag{Name: "coordinator-flags", Value: coordFlags, Destination: &coordFlags, EnvVars: env("BENCH_SCALE_COORDINATOR_FLAGS"), Usage: "extra flags for the coordinator, separated by spaces"},
			&cli.StringFlag{Name: "dir", Value: sc.Dir, Destination: &sc.Dir, EnvVars: env("BENCH_SCALE_DIR"), Usage: "directory for the backup, the store and the coordinator's log, kept afterwards (default: a temp dir, removed)"},
			&cli.BoolFlag{Name: "ls", Value: true, Destination: &sc.List, EnvVars: env("BENCH_SCALE_LS"), Usage: "after the restart, time `dfs ls -r /` over every file and measure its memory"},
			&cli.BoolFlag{Name: "json", Destination: &asJSON, EnvVars: env("JSON"), Usage: "print the figures as one JSON object"},
		},
		Action: func(c *cli.Context) error {
			sc.CoordinatorFlags = strings.Fields(coordFlags)
			if sc.Binary == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				sc.Binary = exe
			}
			say := func(format string, args ...any) { fmt.Fprintf(a.stdio.Err, format+"\n", args...) }
			res, err := RunScale(c.Context, sc, say)
			if res == nil {
				return err
			}
			if asJSON {
				if jerr := json.NewEncoder(a.stdio.Out).Encode(res); jerr != nil {
					return jerr
				}
			} else {
				printScale(a.stdio.Out, res)
			}
			return err
		},
	}
}

// RunScale runs the scale benchmark: it writes a backup of sc.Files
// one-chunk files, measures empty-file commits on an empty store, starts
// a coordinator process restored from the backup with sc.SimNodes
// simulated datanodes holding every copy, and measures it while the
// inventories arrive, idle, under commits, and on SIGTERM (idle, and
// during the inventories after a restart). say reports progress. A
// result comes back with whatever was measured even when err is set.
func RunScale(ctx context.Context, sc ScaleConfig, say func(format string, args ...any)) (*ScaleResult, error) {
	const copies = 3
	switch {
	case sc.Files < 0 || sc.SimNodes < copies:
		return nil, rpc.Errorf(rpc.Invalid, "bench scale: --files must be at least 0 and --sim-nodes at least %d", copies)
	case sc.Cap <= 0 || sc.IdleWindow <= 0 || sc.HeartbeatInterval <= 0:
		return nil, rpc.Errorf(rpc.Invalid, "bench scale: --cap, --idle-window and --heartbeat-interval must be positive")
	}
	dir := sc.Dir
	if dir == "" {
		d, release, err := benchDir("dfs-bench-scale-*")
		if err != nil {
			return nil, err
		}
		defer release()
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	res := &ScaleResult{Files: sc.Files, SimNodes: sc.SimNodes, Copies: copies}
	synth, err := meta.NewSynth(sc.Files, sc.FileSize, 8<<20, 1<<20, copies, time.Now())
	if err != nil {
		return nil, err
	}

	say("writing a backup of %d one-chunk files...", sc.Files)
	backup := filepath.Join(dir, "backup.dfs")
	start := time.Now()
	if res.BackupBytes, err = writeSynth(ctx, synth, backup); err != nil {
		return nil, err
	}
	res.LoaderSeconds = time.Since(start).Seconds()

	r := &scaleRun{sc: sc, dir: dir, say: say, res: res}
	if sc.Puts > 0 {
		say("empty store: %d empty-file commits...", sc.Puts)
		rate, err := r.emptyStoreRate(ctx)
		if err != nil {
			return res, fmt.Errorf("bench scale: empty store: %w", err)
		}
		res.EmptyStoreCommitsPerSec = rate
	}
	err = r.loaded(ctx, synth, backup)
	return res, err
}

// writeSynth writes the backup of s to file and returns its size.
func writeSynth(ctx context.Context, s *meta.Synth, file string) (int64, error) {
	f, err := os.Create(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := meta.Backup(ctx, s, f, meta.BackupInfo{ClusterID: uuid.NewString(), Created: time.Now(), Store: "synth"}); err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// scaleRun is one run of the scale benchmark.
type scaleRun struct {
	sc  ScaleConfig
	dir string
	say func(format string, args ...any)
	res *ScaleResult
}

func (r *scaleRun) note(format string, args ...any) {
	r.res.Notes = append(r.res.Notes, fmt.Sprintf(format, args...))
	r.say(format, args...)
}

// emptyStoreRate times sc.Puts empty-file commits on a fresh coordinator
// with a fleet holding nothing.
func (r *scaleRun) emptyStoreRate(ctx context.Context) (float64, error) {
	co, err := r.startCoordinator(filepath.Join(r.dir, "empty"), "")
	if err != nil {
		return 0, err
	}
	defer co.stop(r.sc.Cap)
	stopFleet, _, err := r.startFleet(ctx, co.addr, nil, 0)
	if err != nil {
		return 0, err
	}
	defer stopFleet()
	cl, err := scaleClient(ctx, co.addr)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	if _, err := r.waitServing(ctx, cl, co); err != nil {
		return 0, err
	}
	if err := r.waitRegistered(ctx, cl, co); err != nil {
		return 0, err
	}
	return r.commitRate(ctx, cl, "/bench/empty")
}

// loaded runs the measurements on the restored store.
func (r *scaleRun) loaded(ctx context.Context, synth *meta.Synth, backup string) error {
	res, sc := r.res, r.sc
	store := filepath.Join(r.dir, "store")
	r.say("starting the coordinator on the backup, with %d simulated datanodes...", sc.SimNodes)
	co, err := r.startCoordinator(store, backup)
	if err != nil {
		return err
	}
	defer co.stop(sc.Cap)
	chunk := func(i int) datanodesim.Chunk {
		c := synth.Chunk(i)
		return datanodesim.Chunk{ID: c.ID, Size: c.Size, FrameSize: c.FrameSize, Digest: c.Digest}
	}
	stopFleet, fleet, err := r.startFleet(ctx, co.addr, chunk, sc.Files)
	if err != nil {
		return err
	}
	defer stopFleet()
	cl, err := scaleClient(ctx, co.addr)
	if err != nil {
		return err
	}
	defer cl.Close()

	first, err := r.startup(ctx, cl, co, synth)
	if err != nil {
		return err
	}
	res.ServingSeconds, res.SafeModeSeconds, res.SafeModeStatus = first.serving, first.safeMode, first.status
	res.MetricsP99Ms, res.NodesP99Ms, res.StatP99Ms, res.ProbeMaxMs, res.ProbeTimeouts = first.probes()
	res.RestoreSeconds = co.restoredAfter()

	// Idle: every node's inventory in (bounded), then the window.
	r.waitInventories(fleet)
	r.say("sampling the idle coordinator for %s...", sc.IdleWindow)
	fleet.Reset()
	cpu0, err := proccpu.Of(co.pid())
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := sleepCtx(ctx, sc.IdleWindow); err != nil {
		return err
	}
	cpu1, err := proccpu.Of(co.pid())
	if err != nil {
		return err
	}
	res.IdleCPU = (cpu1 - cpu0).Seconds() / time.Since(t0).Seconds()
	st := fleet.Stats()
	res.HeartbeatP50Ms, res.HeartbeatP99Ms = ms(st.HeartbeatP50), ms(st.HeartbeatP99)
	res.Registrations, res.Inventories, res.InventoryRestarts, res.TurnsRefused = st.Registrations, st.Inventories, st.InventoryRestarts, st.TurnsRefused
	res.ReportErrors, res.HeartbeatErrors = st.ReportErrors, st.HeartbeatErrors
	res.RSSBytes, res.PeakRSSBytes, res.RSSAnonBytes, res.RSSFileBytes = procRSS(co.pid())
	if h, err := heapInuse(ctx, co.admin); err == nil {
		res.HeapInuseBytes = h
	} else {
		r.note("no heap figure: %v", err)
	}

	if sc.Puts > 0 && res.SafeModeSeconds >= 0 {
		r.say("loaded store: %d empty-file commits...", sc.Puts)
		if res.LoadedCommitsPerSec, err = r.commitRate(ctx, cl, "/bench/loaded"); err != nil {
			r.note("commits on the loaded store failed: %v", err)
		}
	}

	r.say("SIGTERM to the idle coordinator...")
	res.SigtermIdleSeconds = co.stop(sigtermLimit(sc))

	if res.SafeModeSeconds < 0 {
		// The restart would repeat what just failed, memory included.
		r.note("no restart: the first start never left safe mode")
		res.RestartServingSeconds, res.RestartSafeModeSeconds, res.SigtermInventorySeconds = -1, -1, -1
		return nil
	}
	// A plain restart: the fleet registers again and sends every
	// inventory; then the listing.
	r.say("restarting the coordinator (no restore)...")
	co2, err := r.startCoordinator(store, "", co)
	if err != nil {
		return err
	}
	defer co2.stop(sc.Cap)
	again, err := r.startup(ctx, cl, co2, synth)
	if err != nil {
		return err
	}
	res.RestartServingSeconds, res.RestartSafeModeSeconds, res.RestartSafeModeStatus = again.serving, again.safeMode, again.status
	res.RestartMetricsP99Ms, res.RestartNodesP99Ms, res.RestartStatP99Ms, res.RestartProbeMaxMs, res.RestartProbeTimeouts = again.probes()
	r.waitInventories(fleet)
	res.RestartRSSBytes, res.RestartPeakRSSBytes, _, _ = procRSS(co2.pid())
	if sc.List {
		r.list(ctx, co2)
	}
	co2.stop(sigtermLimit(sc))

	// Another restart, SIGTERM once half the fleet has registered again:
	// their inventories are arriving.
	r.say("restarting the coordinator; SIGTERM while the inventories arrive...")
	co3, err := r.startCoordinator(store, "", co)
	if err != nil {
		return err
	}
	defer co3.stop(sc.Cap)
	if _, err := r.waitServing(ctx, cl, co3); err != nil {
		return err
	}
	before := fleet.Stats()
	for end := time.Now().Add(sc.Cap); time.Now().Before(end) && fleet.Stats().Registrations-before.Registrations < max(1, sc.SimNodes/2); {
		time.Sleep(20 * time.Millisecond)
	}
	res.SigtermInventoryNodes = fleet.Stats().Inventories - before.Inventories
	res.SigtermInventorySeconds = co3.stop(sigtermLimit(sc))
	if res.SigtermIdleSeconds < 0 || res.SigtermInventorySeconds < 0 {
		r.note("a coordinator did not exit within %s of SIGTERM: its goroutine stacks (SIGQUIT) are in its log in %s", sigtermLimit(sc), r.dir)
	}
	if res.SigtermInventoryNodes >= sc.SimNodes {
		r.note("every inventory was already in when SIGTERM was sent after the restart")
	}
	return nil
}

// startupFigures are what a coordinator's start shows: when it served and
// left safe mode (seconds from its start; -1: not within the cap), how
// safe mode ended, and the probes' latencies while the inventories
// arrived.
type startupFigures struct {
	serving, safeMode float64
	status            string
	pr                *prober
}

func (f startupFigures) probes() (metrics, nodes, stat, maxMs float64, timeouts int) {
	return f.pr.summary()
}

// startup waits for co to serve, then probes it until it leaves safe
// mode (or the cap).
func (r *scaleRun) startup(ctx context.Context, cl *client.Client, co *coordProc, synth *meta.Synth) (startupFigures, error) {
	f := startupFigures{safeMode: -1}
	serving, err := r.waitServing(ctx, cl, co)
	if err != nil {
		return f, err
	}
	f.serving = serving.Sub(co.started).Seconds()
	r.say("serving after %.1fs; probing while the inventories arrive...", f.serving)
	f.pr = newProber(cl, co.admin, synth, r.sc.Files)
	probeCtx, stopProbes := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { f.pr.run(probeCtx) })
	for deadline := co.started.Add(r.sc.Cap); time.Now().Before(deadline) && ctx.Err() == nil; {
		nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := cl.Nodes(nctx)
		cancel()
		if err == nil {
			f.status = resp.SafeModeStatus
			if !resp.SafeMode {
				f.safeMode = time.Since(co.started).Seconds()
				f.status = co.safeModeEnd()
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopProbes()
	wg.Wait()
	if f.safeMode < 0 {
		r.note("still in safe mode %s after the coordinator started (%s)", r.sc.Cap, f.status)
	} else {
		r.say("out of safe mode after %.1fs", f.safeMode)
	}
	return f, nil
}

// waitInventories waits, a minute at most, for every simulated datanode
// to have sent its whole inventory.
func (r *scaleRun) waitInventories(fleet *datanodesim.Fleet) {
	for end := time.Now().Add(min(r.sc.Cap, time.Minute)); time.Now().Before(end) && fleet.Stats().Current < r.sc.SimNodes; {
		time.Sleep(200 * time.Millisecond)
	}
	if cur := fleet.Stats().Current; cur < r.sc.SimNodes {
		r.note("only %d of %d simulated datanodes had sent their whole inventory", cur, r.sc.SimNodes)
	}
}

// list runs `dfs ls -r /` against co as a child process, its output
// counted and dropped, and records its time, its peak RSS and the
// coordinator's RSS before and after.
func (r *scaleRun) list(ctx context.Context, co *coordProc) {
	res := r.res
	r.say("dfs ls -r / ...")
	res.LsCoordinatorRSSBefore, _, _, _ = procRSS(co.pid())
	cmd := exec.CommandContext(ctx, r.sc.Binary, "ls", "--coordinator", co.addr, "-r", "/")
	out, err := cmd.StdoutPipe()
	if err != nil {
		r.note("ls: %v", err)
		return
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		r.note("ls: %v", err)
		return
	}
	// The child's peak is read from its VmHWM while it runs: its rusage
	// would count this process's memory, which the child shares between
	// fork and exec.
	var peak atomic.Int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if _, hwm, _, _ := procRSS(cmd.Process.Pid); hwm > 0 {
				peak.Store(hwm)
			} else {
				return // exited
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		res.LsLines++
	}
	err = cmd.Wait()
	<-sampled
	if err != nil {
		r.note("ls: %v: %s", err, strings.TrimSpace(stderr.String()))
		return
	}
	res.LsSeconds = time.Since(start).Seconds()
	res.LsClientPeakRSSBytes = peak.Load()
	res.LsCoordinatorRSSAfter, _, _, _ = procRSS(co.pid())
}

// sigtermLimit is the longest wait for a coordinator to exit after
// SIGTERM: a minute, or the cap if shorter.
func sigtermLimit(sc ScaleConfig) time.Duration { return min(sc.Cap, time.Minute) }

// startFleet starts n simulated datanodes holding chunks (none if chunk
// is nil) against the coordinator at addr.
func (r *scaleRun) startFleet(ctx context.Context, addr string, chunk func(int) datanodesim.Chunk, chunks int) (func(), *datanodesim.Fleet, error) {
	cfg := datanodesim.DefaultConfig()
	cfg.Coordinator, cfg.Nodes, cfg.Chunks, cfg.Chunk = addr, r.sc.SimNodes, chunks, chunk
	cfg.HeartbeatInterval = r.sc.HeartbeatInterval
	fleet, err := datanodesim.New(cfg, zerolog.Nop())
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := fleet.Run(ctx); err != nil {
			r.note("simulated datanodes: %v", err)
		}
	})
	return func() { cancel(); wg.Wait() }, fleet, nil
}

func scaleClient(ctx context.Context, addr string) (*client.Client, error) {
	return client.New(ctx, client.Config{Coordinators: []string{addr}})
}

// waitServing waits, up to the cap, for the coordinator to answer
// ListNodes, and returns when it did.
func (r *scaleRun) waitServing(ctx context.Context, cl *client.Client, co *coordProc) (time.Time, error) {
	for end := co.started.Add(r.sc.Cap); time.Now().Before(end); {
		nctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cl.Nodes(nctx)
		cancel()
		if err == nil {
			return time.Now(), nil
		}
		if code, exited := co.exited(); exited {
			return time.Time{}, rpc.Errorf(rpc.Unavailable, "bench scale: the coordinator exited (code %d); its log: %s", code, co.logFile)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
	return time.Time{}, rpc.Errorf(rpc.Unavailable, "bench scale: the coordinator did not serve within %s; its log: %s", r.sc.Cap, co.logFile)
}

// waitRegistered waits, up to the cap, for every simulated datanode to
// be registered and healthy.
func (r *scaleRun) waitRegistered(ctx context.Context, cl *client.Client, co *coordProc) error {
	for end := time.Now().Add(r.sc.Cap); time.Now().Before(end); {
		nctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := cl.Nodes(nctx)
		cancel()
		if err == nil {
			healthy := 0
			for _, n := range resp.Nodes {
				if n.State == client.NodeHealthy {
					healthy++
				}
			}
			if healthy >= r.sc.SimNodes {
				return nil
			}
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return rpc.Errorf(rpc.Unavailable, "bench scale: the simulated datanodes did not all register within %s; the coordinator's log: %s", r.sc.Cap, co.logFile)
}

// commitRate commits sc.Puts empty files under prefix and returns the
// commits per second.
func (r *scaleRun) commitRate(ctx context.Context, cl *client.Client, prefix string) (float64, error) {
	elapsed, err := parallel(ctx, r.sc.Puts, r.sc.PutParallel, func(i int) error {
		_, err := cl.Put(ctx, fmt.Sprintf("%s/%07d", prefix, i), bytes.NewReader(nil), 0, nil)
		return err
	})
	if err != nil {
		return 0, err
	}
	return float64(r.sc.Puts) / elapsed.Seconds(), nil
}

// coordProc is a coordinator child process.
type coordProc struct {
	cmd     *exec.Cmd
	addr    string
	admin   string
	logFile string
	started time.Time

	mu          sync.Mutex
	restored    time.Time
	safeModeOff string // the coordinator's log message when safe mode ended
	done        chan struct{}
	code        int
}

// startCoordinator starts a coordinator on the bolt store in dir,
// restoring backup first if it is not "", at the addresses of the one in
// restart if there is one (a restart), else at free ones.
func (r *scaleRun) startCoordinator(dir, backup string, restart ...*coordProc) (*coordProc, error) {
	var addr, admin string
	if len(restart) > 0 {
		addr, admin = restart[0].addr, restart[0].admin
	} else {
		var err error
		if addr, err = freeAddr(); err != nil {
			return nil, err
		}
		if admin, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	args := []string{"--log-level", "info", "--log-format", "json", "coordinator", "--listen", addr, "--admin-listen", admin,
		"--data-dir", dir, "--replication", "3"}
	if backup != "" {
		args = append(args, "--restore", backup)
	}
	args = append(args, r.sc.CoordinatorFlags...)
	co := &coordProc{addr: addr, admin: admin, logFile: filepath.Join(r.dir, fmt.Sprintf("coordinator-%d.log", time.Now().UnixNano())), done: make(chan struct{})}
	logf, err := os.Create(co.logFile)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	co.cmd = exec.Command(r.sc.Binary, args...)
	co.cmd.Stdout, co.cmd.Stderr = logf, pw
	co.started = time.Now()
	if err := co.cmd.Start(); err != nil {
		logf.Close()
		pw.Close()
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			switch {
			case bytes.Contains(line, []byte("metadata restored from backup")):
				co.mu.Lock()
				co.restored = time.Now()
				co.mu.Unlock()
			case bytes.Contains(line, []byte(`"safe mode off`)):
				var m struct{ Message string }
				if json.Unmarshal(line, &m) == nil {
					co.mu.Lock()
					if co.safeModeOff == "" {
						co.safeModeOff = m.Message
					}
					co.mu.Unlock()
				}
			}
			logf.Write(line)
			logf.Write([]byte{'\n'})
		}
		io.Copy(io.Discard, pr)
		logf.Close() // after the process exited: the pipe closes then
	}()
	go func() {
		err := co.cmd.Wait()
		pw.Close()
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
		}
		co.mu.Lock()
		co.code = code
		co.mu.Unlock()
		close(co.done)
	}()
	return co, nil
}

func (co *coordProc) pid() int { return co.cmd.Process.Pid }

// restoredAfter returns the seconds from the start to the restore's end
// (-1: not logged).
func (co *coordProc) restoredAfter() float64 {
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.restored.IsZero() {
		return -1
	}
	return co.restored.Sub(co.started).Seconds()
}

// safeModeEnd returns how the coordinator logged the end of safe mode,
// after a moment for the log line to arrive.
func (co *coordProc) safeModeEnd() string {
	for range 20 {
		co.mu.Lock()
		s := co.safeModeOff
		co.mu.Unlock()
		if s != "" {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
	return ""
}

func (co *coordProc) exited() (int, bool) {
	select {
	case <-co.done:
		co.mu.Lock()
		defer co.mu.Unlock()
		return co.code, true
	default:
		return 0, false
	}
}

// stop sends SIGTERM and returns the seconds until the process exited.
// One still running after limit gets SIGQUIT (the Go runtime writes every
// goroutine's stack to the log: where shutdown is stuck) and then SIGKILL,
// and -1 is returned. Stopping a stopped process returns 0.
func (co *coordProc) stop(limit time.Duration) float64 {
	if _, exited := co.exited(); exited {
		return 0
	}
	start := time.Now()
	co.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-co.done:
		return time.Since(start).Seconds()
	case <-t.C:
	}
	co.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-co.done:
	case <-time.After(5 * time.Second):
		co.cmd.Process.Kill()
		<-co.done
	}
	return -1
}

// prober times /metrics, ListNodes and StatFile, each in its own loop.
type prober struct {
	cl    *client.Client
	admin string
	synth *meta.Synth
	files int

	mu       sync.Mutex
	lat      [3][]time.Duration
	timeouts int
}

const probeTimeout = 5 * time.Second

func newProber(cl *client.Client, admin string, s *meta.Synth, files int) *prober {
	return &prober{cl: cl, admin: admin, synth: s, files: files}
}

func (p *prober) run(ctx context.Context) {
	hc := &http.Client{Timeout: probeTimeout}
	probes := [3]func(ctx context.Context, i int) error{
		func(ctx context.Context, _ int) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/metrics", nil)
			if err != nil {
				return err
			}
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			_, err = io.Copy(io.Discard, resp.Body)
			return err
		},
		func(ctx context.Context, _ int) error { _, err := p.cl.Nodes(ctx); return err },
		func(ctx context.Context, i int) error {
			if p.files == 0 {
				return nil
			}
			_, err := p.cl.Stat(ctx, string(p.synth.Path(i*7919%p.files)))
			return err
		},
	}
	var wg sync.WaitGroup
	for k, probe := range probes {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				pctx, cancel := context.WithTimeout(ctx, probeTimeout)
				start := time.Now()
				err := probe(pctx, i)
				took := time.Since(start)
				timedOut := pctx.Err() != nil && ctx.Err() == nil
				cancel()
				if ctx.Err() != nil {
					return
				}
				p.mu.Lock()
				if timedOut {
					p.timeouts++
					took = probeTimeout
				}
				if err == nil || timedOut {
					p.lat[k] = append(p.lat[k], took)
				}
				p.mu.Unlock()
				sleepCtx(ctx, 50*time.Millisecond)
			}
		})
	}
	wg.Wait()
}

func (p *prober) summary() (metrics, nodes, stat, maxMs float64, timeouts int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var q [3]float64
	for k, l := range p.lat {
		if len(l) == 0 {
			continue
		}
		slices.Sort(l)
		q[k] = ms(l[int(0.99*float64(len(l)-1))])
		maxMs = max(maxMs, ms(l[len(l)-1]))
	}
	return q[0], q[1], q[2], maxMs, p.timeouts
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// procRSS returns VmRSS and VmHWM of process pid, and of VmRSS the
// anonymous pages (the heap, stacks) and the file pages (the metadata
// store's mmap).
func procRSS(pid int) (rss, hwm, anon, file int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		case "RssAnon:":
			anon = kb << 10
		case "RssFile:":
			file = kb << 10
		}
	}
	return rss, hwm, anon, file
}

// heapInuse reads go_memstats_heap_inuse_bytes from the admin endpoint.
func heapInuse(ctx context.Context, admin string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	return 0, rpc.Errorf(rpc.NotFound, "no go_memstats_heap_inuse_bytes in /metrics")
}

func printScale(w io.Writer, r *ScaleResult) {
	secs := func(s float64) string {
		if s < 0 {
			return "did not happen"
		}
		return fmt.Sprintf("%.2f s", s)
	}
	rows := [][2]string{
		{"files (one chunk each, 3 copies)", strconv.Itoa(r.Files)},
		{"simulated datanodes", strconv.Itoa(r.SimNodes)},
		{"backup written", fmt.Sprintf("%s in %.1f s", rpc.FormatBytes(r.BackupBytes), r.LoaderSeconds)},
		{"restore", secs(r.RestoreSeconds)},
		{"serving", secs(r.ServingSeconds)},
		{"out of safe mode", secs(r.SafeModeSeconds) + " (" + r.SafeModeStatus + ")"},
		{"/metrics p99 during inventories", fmt.Sprintf("%.1f ms", r.MetricsP99Ms)},
		{"ListNodes p99 during inventories", fmt.Sprintf("%.1f ms", r.NodesP99Ms)},
		{"StatFile p99 during inventories", fmt.Sprintf("%.1f ms", r.StatP99Ms)},
		{"slowest probe / timeouts (5 s)", fmt.Sprintf("%.1f ms / %d", r.ProbeMaxMs, r.ProbeTimeouts)},
		{"coordinator RSS (peak)", fmt.Sprintf("%s (%s)", rpc.FormatBytes(r.RSSBytes), rpc.FormatBytes(r.PeakRSSBytes))},
		{"of which anonymous / mapped files", fmt.Sprintf("%s / %s", rpc.FormatBytes(r.RSSAnonBytes), rpc.FormatBytes(r.RSSFileBytes))},
		{"coordinator live heap", rpc.FormatBytes(r.HeapInuseBytes)},
		{"idle coordinator CPU", fmt.Sprintf("%.1f%% of a core", 100*r.IdleCPU)},
		{"heartbeat p50 / p99 (idle)", fmt.Sprintf("%.1f / %.1f ms", r.HeartbeatP50Ms, r.HeartbeatP99Ms)},
		{"empty-file commits/s, empty store", fmt.Sprintf("%.0f", r.EmptyStoreCommitsPerSec)},
		{"empty-file commits/s, loaded store", fmt.Sprintf("%.0f", r.LoadedCommitsPerSec)},
		{"SIGTERM to exit, idle", secs(r.SigtermIdleSeconds)},
		{"restart: serving", secs(r.RestartServingSeconds)},
		{"restart: out of safe mode", secs(r.RestartSafeModeSeconds) + " (" + r.RestartSafeModeStatus + ")"},
		{"restart: /metrics, ListNodes, StatFile p99", fmt.Sprintf("%.1f, %.1f, %.1f ms", r.RestartMetricsP99Ms, r.RestartNodesP99Ms, r.RestartStatP99Ms)},
		{"restart: slowest probe / timeouts", fmt.Sprintf("%.1f ms / %d", r.RestartProbeMaxMs, r.RestartProbeTimeouts)},
		{"restart: coordinator RSS (peak)", fmt.Sprintf("%s (%s)", rpc.FormatBytes(r.RestartRSSBytes), rpc.FormatBytes(r.RestartPeakRSSBytes))},
		{"ls -r /: lines, time", fmt.Sprintf("%d in %s", r.LsLines, secs(r.LsSeconds))},
		{"ls -r /: client peak RSS", rpc.FormatBytes(r.LsClientPeakRSSBytes)},
		{"ls -r /: coordinator RSS before / after", fmt.Sprintf("%s / %s", rpc.FormatBytes(r.LsCoordinatorRSSBefore), rpc.FormatBytes(r.LsCoordinatorRSSAfter))},
		{"SIGTERM to exit, during inventories", fmt.Sprintf("%s (%d of %d inventories in)", secs(r.SigtermInventorySeconds), r.SigtermInventoryNodes, r.SimNodes)},
		{"registrations / inventories / restarted / turns refused", fmt.Sprintf("%d / %d / %d / %d", r.Registrations, r.Inventories, r.InventoryRestarts, r.TurnsRefused)},
		{"report / heartbeat errors", fmt.Sprintf("%d / %d", r.ReportErrors, r.HeartbeatErrors)},
	}
	for _, row := range rows {
		fmt.Fprintf(w, "%-42s %s\n", row[0], row[1])
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}
