// Command wxbroker is the WeChat access-token broker: run "wxbroker help" for
// its subcommands.
package main

import "os"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }
