package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
)

// flagsFirst runs a command line that starts with a flag instead of a
// command: a flag before the command is a usage error, worded by the
// flag package; "--" ends the flags, and the command follows.
func (c *cli) flagsFirst(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("pandadoc-oauth", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.usage(c.stdout)
		return exitOK
	case err != nil:
		fmt.Fprintf(c.stderr, "pandadoc-oauth: flags go after the command: pandadoc-oauth <command> [flags] [arguments]\nRun \"pandadoc-oauth -h\" for usage.\n")
		return exitUsage
	}
	return c.run(ctx, fs.Args())
}
