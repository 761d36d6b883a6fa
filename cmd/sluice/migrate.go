package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/store/postgres"
	"github.com/sluicehq/sluice/plugins/host"
)

// runMigrate applies the store's schema migrations on demand (serve applies them at start too, under the same
// lock, so running both at once is safe).
func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "sluice.yaml", "config file naming the store")
	dry := fs.Bool("dry-run", false, "list the migrations that would be applied, apply none")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	plugins := host.New(host.Options{Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	defer plugins.Close()
	cfg, err := config.LoadWithPlugins(*file, registry(), plugins.Loader())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if cfg.Store.Driver != "postgres" {
		// The embedded store upgrades its single file itself when serve opens it.
		fmt.Fprintf(stdout, "store.driver is %s: nothing to migrate (the embedded store upgrades itself at start)\n", cfg.Store.Driver)
		return 0
	}
	done, err := postgres.Migrate(ctx, postgres.Options{DSN: cfg.Store.DSN, MaxConns: 1}, *dry)
	if err != nil {
		fmt.Fprintln(stderr, "sluice: migrate:", err)
		return 1
	}
	verb := "applied"
	if *dry {
		verb = "would apply"
	}
	if len(done) == 0 {
		fmt.Fprintln(stdout, "schema is up to date")
		return 0
	}
	for _, m := range done {
		fmt.Fprintf(stdout, "%s %s\n", verb, m.Name)
	}
	return 0
}
