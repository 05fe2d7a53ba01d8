package cli

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/dfs-project/dfs/rpc"
)

// The shell completion scripts. bash and zsh ask dfs itself for the
// candidates (urfave/cli answers `dfs ... --generate-bash-completion` with
// the commands, or a command's flags after a dash); fish gets a static
// script generated from the commands.

// bashCompletion is the bash script: source it, or install it as
// /etc/bash_completion.d/dfs.
const bashCompletion = `# bash completion for dfs: source <(dfs completion bash)
_dfs_complete() {
  local cur opts
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  if [[ "$cur" == "-"* ]]; then
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -F _dfs_complete dfs
`

// zshCompletion is the zsh script: source it, or install it as _dfs in
// a directory of $fpath.
const zshCompletion = `#compdef dfs
# zsh completion for dfs: source <(dfs completion zsh)
_dfs() {
  local -a opts
  local cur
  cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} "${cur}" --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
if [[ "$(basename -- ${(%):-%x})" != "_dfs" ]]; then
  compdef _dfs dfs
fi
`

// completionCommand prints a shell's completion script.
func (a *app) completionCommand() *cli.Command {
	return &cli.Command{
		Name: "completion", Usage: "print the shell completion script for bash, zsh or fish", ArgsUsage: "bash|zsh|fish",
		Description: "bash: source <(dfs completion bash)\n" +
			"zsh:  source <(dfs completion zsh)\n" +
			"fish: dfs completion fish | source",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return rpc.Errorf(rpc.Invalid, "completion needs one shell: bash, zsh or fish")
			}
			switch sh := c.Args().First(); sh {
			case "bash":
				_, err := io.WriteString(a.stdio.Out, bashCompletion)
				return err
			case "zsh":
				_, err := io.WriteString(a.stdio.Out, zshCompletion)
				return err
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return fmt.Errorf("completion fish: %w", err)
				}
				_, err = io.WriteString(a.stdio.Out, s)
				return err
			default:
				return rpc.Errorf(rpc.Invalid, "completion: unknown shell %q: want bash, zsh or fish", sh)
			}
		},
	}
}

// manCommand prints the man page, generated from the commands.
func (a *app) manCommand() *cli.Command {
	return &cli.Command{
		Name: "man", Usage: "print the man page (roff), generated from the commands: dfs man > dfs.1",
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return rpc.Errorf(rpc.Invalid, "man takes no arguments")
			}
			s, err := c.App.ToManWithSection(1)
			if err != nil {
				return fmt.Errorf("man: %w", err)
			}
			_, err = io.WriteString(a.stdio.Out, s)
			return err
		},
	}
}
