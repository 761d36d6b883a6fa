// Command sluice is the Sluice event relay gateway: `sluice serve` runs it; the other subcommands validate
// configs, publish test events, receive webhooks locally, replay deliveries and manage secrets.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

const usage = `sluice — an outbound event relay gateway

Usage:
  sluice serve    --config FILE              run the gateway
  sluice validate --config FILE [--print]    check a config (and show it resolved, secrets masked)
  sluice publish  [--server URL] [--key KEY] --topic T (--data JSON | --file F | -)
  sluice listen   [--addr 127.0.0.1:9000] [--secret whsec_…] [--status N]
  sluice replay   [--server URL] [--key KEY] --destination NAME [--since T] [--until T] [--status S]
  sluice sinks    [--config FILE] [--json]   list sink types (built-in and the config's plugins)
  sluice sinks describe TYPE                 a sink's config fields
  sluice migrate  --config FILE [--dry-run]  apply the PostgreSQL store's schema migrations
  sluice secret                              print a new whsec_ signing secret
  sluice version

Run "sluice COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "validate":
		return runValidate(rest, stdout, stderr)
	case "publish":
		return runPublish(ctx, rest, stdin, stdout, stderr)
	case "listen":
		return runListen(ctx, rest, stdout, stderr)
	case "replay":
		return runReplay(ctx, rest, stdout, stderr)
	case "sinks":
		return runSinks(rest, stdout, stderr)
	case "migrate":
		return runMigrate(ctx, rest, stdout, stderr)
	case "secret":
		return runSecret(stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "sluice", buildVersion())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", cmd, usage)
	return 2
}
