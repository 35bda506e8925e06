package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// Exit codes of every subcommand.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and found a problem
	exitUsage   = 2 // bad arguments
)

// command is one subcommand. run gets the arguments after the subcommand's
// name and a context that SIGINT and SIGTERM cancel.
type command struct {
	synopsis string // arguments, e.g. "--config FILE"
	summary  string // one line for the command list
	run      func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// commands is the subcommand table. Add a command with one line here and its
// own file.
func commands() map[string]command {
	return map[string]command{
		"serve":   serveCommand(),
		"dev":     devCommand(),
		"sim":     simCommand(),
		"doctor":  doctorCommand(),
		"explain": explainCommand(),
	}
}

// run is main without the process: it installs the signal handling and
// dispatches.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return dispatch(ctx, args, stdout, stderr)
}

// dispatch runs the subcommand named by args[0]; tests call it with their own
// context instead of signals.
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			if cmd, ok := commands()[rest[0]]; ok {
				return cmd.run(ctx, []string{"-h"}, stdout, stdout)
			}
			fmt.Fprintf(stderr, "wxbroker: unknown command %q\n\n", rest[0])
			usage(stderr)
			return exitUsage
		}
		usage(stdout)
		return exitOK
	}
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(stderr, "wxbroker: unknown command %q\n\n", name)
		usage(stderr)
		return exitUsage
	}
	return cmd.run(ctx, rest, stdout, stderr)
}

func usage(w io.Writer) {
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for name := range cmds {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprint(w, "wxbroker - a central WeChat access-token broker.\n\nUsage: wxbroker COMMAND [flags]\n\nCommands:\n")
	for _, name := range names {
		c := cmds[name]
		fmt.Fprintf(w, "  %s %s\n        %s\n", name, c.synopsis, c.summary)
	}
	fmt.Fprint(w, "  help [COMMAND]\n        this list, or a command's flags\n")
}

// newFlagSet returns a flag set that reports errors to stderr and whose -h
// shows the command's synopsis.
func newFlagSet(name, synopsis, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: wxbroker %s %s\n\n%s\n", name, synopsis, summary)
		if hasFlags(fs) {
			fmt.Fprintln(fs.Output(), "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parseFlags parses args and maps the outcome to an exit code: ok is false
// when the command must return code at once (-h: 0, a bad flag: 2).
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return exitOK, true
	case errors.Is(err, flag.ErrHelp):
		return exitOK, false
	default:
		return exitUsage, false
	}
}
