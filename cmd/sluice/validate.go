package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/plugins/host"
)

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "sluice.yaml", "config file to check")
	print := fs.Bool("print", false, "print the resolved config with secrets masked")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// validate launches the declared plugins only to let them describe and check their configs.
	plugins := host.New(host.Options{Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	defer plugins.Close()
	cfg, err := config.LoadWithPlugins(*file, registry(), plugins.Loader())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *print {
		out, err := cfg.Masked()
		if err != nil {
			fmt.Fprintln(stderr, "sluice: print config:", err)
			return 1
		}
		_, _ = stdout.Write(out)
		return 0
	}
	fmt.Fprintf(stdout, "%s: ok (%d destinations, %d topics)\n", *file, len(cfg.Destinations), len(cfg.Topics))
	return 0
}
