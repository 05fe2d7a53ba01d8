package cli

import (
	"fmt"
	"sort"

	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/roles/coordinator/meta/boltstore"
	"github.com/dfs-project/dfs/rpc"
)

// salvageCommand returns `dfs admin salvage`: offline, on files, it copies
// every readable record of a damaged bolt metadata file into a new one and
// prints what was lost, one line per record (or run of records behind a
// damaged page), then a summary. It exits 0 when everything was copied,
// 1 when the new file was written but records were lost (or when it could
// not be written; the last line says which).
func (a *app) salvageCommand() *cli.Command {
	var from, to, clusterID string
	return &cli.Command{
		Name:  "salvage",
		Usage: "offline: copy every readable record of a damaged metadata.db into a new file, listing what is lost (the coordinator must be stopped)",
		Description: "Run it when the coordinator stops with \"damaged metadata file\". Then move the damaged file away,\n" +
			"put the new one in its place as metadata.db and start the coordinator. See docs/operations.md.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Required: true, Destination: &from, EnvVars: env("SALVAGE_FROM"), Usage: "the damaged metadata file (only read)"},
			&cli.StringFlag{Name: "to", Required: true, Destination: &to, EnvVars: env("SALVAGE_TO"), Usage: "the new metadata file to write (must not exist)"},
			&cli.StringFlag{Name: "cluster-id", Destination: &clusterID, EnvVars: env("SALVAGE_CLUSTER_ID"), Usage: "the cluster's ID, when the damaged file's is unreadable (every datanode's data dir has it in cluster-id)"},
		},
		Action: exitOneAction(func(c *cli.Context) error {
			if c.NArg() > 0 {
				return rpc.Errorf(rpc.Invalid, "admin salvage takes no arguments, got %q (use --from and --to)", c.Args().First())
			}
			rep, err := boltstore.Salvage(c.Context, from, to, boltstore.SalvageOptions{
				ClusterID: clusterID,
				Lost:      func(l boltstore.Lost) { fmt.Fprintln(a.stdio.Out, l) },
			})
			if err != nil {
				return err
			}
			copied, lost := 0, 0
			buckets := make([]string, 0, len(rep.Copied)+len(rep.Lost))
			for b, n := range rep.Copied {
				copied += n
				buckets = append(buckets, b)
			}
			for b, n := range rep.Lost {
				lost += n
				if rep.Copied[b] == 0 {
					buckets = append(buckets, b)
				}
			}
			sort.Strings(buckets)
			for _, b := range buckets {
				fmt.Fprintf(a.stdio.Out, "%s: %d copied, %d lost\n", b, rep.Copied[b], rep.Lost[b])
			}
			fmt.Fprintf(a.stdio.Out, "salvaged %d records of cluster %s into %s\n", copied, rep.Cluster, to)
			if lost > 0 {
				return rpc.Errorf(rpc.Internal, "admin salvage: wrote %s, but %d records or runs of records were lost (listed above)", to, lost)
			}
			return nil
		}),
	}
}
