// Command natpool plans, renders and applies deterministic source NAT pools.
package main

import (
	"os"

	"github.com/natpool/natpool/cmd"
)

func main() {
	os.Exit(cmd.Execute(os.Args[1:], os.Stdout, os.Stderr))
}
