package cli

// dfs mount: the cluster as a local directory, through FUSE.

import (
	"context"
	"fmt"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/roles/mount"
	"github.com/dfs-project/dfs/rpc"
)

func (a *app) mountCommand() *cli.Command {
	cfg := client.DefaultConfig()
	mc := mount.DefaultConfig()
	return &cli.Command{
		Name:      "mount",
		Usage:     "serve the cluster as a local directory (FUSE) until unmounted or signalled",
		ArgsUsage: "MOUNTPOINT",
		Category:  "client",
		Description: "Runs in the foreground. SIGINT or SIGTERM unmounts cleanly; so does fusermount3 -u MOUNTPOINT.\n" +
			"A file's new content is committed when it is closed (close-to-open, as NFS); see docs/fuse.md.",
		Flags: clientFlags(&cfg, true,
			&cli.BoolFlag{Name: "read-only", Destination: &mc.ReadOnly, EnvVars: env("MOUNT_READ_ONLY"), Usage: "refuse every change (EROFS)"},
			&cli.DurationFlag{Name: "attr-timeout", Value: mc.AttrTimeout, Destination: &mc.AttrTimeout, EnvVars: env("MOUNT_ATTR_TIMEOUT"), Usage: "how long the kernel trusts a file's attributes"},
			&cli.DurationFlag{Name: "entry-timeout", Value: mc.EntryTimeout, Destination: &mc.EntryTimeout, EnvVars: env("MOUNT_ENTRY_TIMEOUT"), Usage: "how long the kernel trusts a name it looked up (and that a name does not exist)"},
			&cli.StringFlag{Name: "spool-dir", Destination: &mc.SpoolDir, EnvVars: env("MOUNT_SPOOL_DIR"), Usage: "local directory for the copies of files written other than in order (default: the system's temp dir)"},
			&cli.GenericFlag{Name: "read-ahead", Value: byteSize(&mc.ReadAhead), EnvVars: env("MOUNT_READ_AHEAD"), Usage: "most bytes one open file reads ahead of a sequential reader"},
			&cli.BoolFlag{Name: "allow-other", Destination: &mc.AllowOther, EnvVars: env("MOUNT_ALLOW_OTHER"), Usage: "let other users use the mount (needs user_allow_other in /etc/fuse.conf unless root)"},
		),
		Action: a.withClient(&cfg, func(ctx context.Context, c *cli.Context, cl *client.Client) error {
			if c.NArg() != 1 {
				return rpc.Errorf(rpc.Invalid, "mount needs one MOUNTPOINT")
			}
			mc.Mountpoint = c.Args().First()
			mc.NegativeTimeout = mc.EntryTimeout
			return a.runMount(ctx, mc, cl)
		}),
	}
}

// runMount serves cl's cluster at mc.Mountpoint until ctx ends or the
// mount is unmounted.
func (a *app) runMount(ctx context.Context, mc mount.Config, cl *client.Client) error {
	if err := mount.Available(); err != nil {
		return rpc.Errorf(rpc.FailedPrecondition, "mount: %v", err)
	}
	m, err := mount.New(mc, cl, a.log)
	if err != nil {
		return err
	}
	watch, stopWatch := context.WithCancel(ctx) // the reloads end with the mount
	defer stopWatch()
	a.sec.serve(watch, "mount", cl, a.log)
	notified := false
	err = m.Run(ctx, func() {
		fmt.Fprintf(a.stdio.Out, "dfs mount: serving the cluster at %s; unmount with fusermount3 -u %s or Ctrl-C\n", mc.Mountpoint, mc.Mountpoint)
		// Under systemd (Type=notify): ready once the mount answers.
		if sent, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
			a.log.Warn().Err(err).Msg("cannot tell systemd that the mount is ready")
		} else {
			notified = sent
		}
	})
	if notified {
		daemon.SdNotify(false, daemon.SdNotifyStopping)
	}
	return err
}
