package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/plugins/host"
	"github.com/sluicehq/sluice/sinks"
)

const sinksUsage = `Usage:
  sluice sinks [--config FILE] [--json]                  list the sink types
  sluice sinks describe TYPE [--config FILE] [--json]    the config fields of one type

With --config, the plugin sinks that file declares are included (their plugins are launched to describe
themselves).
`

// runSinks lists sink types and describes their config fields, from the same data as docs/sinks.md.
func runSinks(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sinks", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, sinksUsage) }
	file := fs.String("config", "", "also list the plugin sinks this config declares")
	asJSON := fs.Bool("json", false, "print JSON")
	// Flags may come before or after `describe TYPE`.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}

	builtin := registry()
	reg := builtin
	if *file != "" {
		plugins := host.New(host.Options{Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		defer plugins.Close()
		cfg, err := config.LoadWithPlugins(*file, builtin, plugins.Loader())
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if cfg.Registry != nil {
			reg = cfg.Registry
		}
	}

	switch {
	case len(pos) == 0:
		return listSinks(reg, builtin, *asJSON, stdout)
	case pos[0] == "describe" && len(pos) == 2:
		spec, ok := reg.Lookup(pos[1])
		if !ok {
			fmt.Fprintf(stderr, "sluice sinks: no sink type %q; types: %s\n", pos[1], strings.Join(reg.Types(), ", "))
			if *file == "" {
				fmt.Fprintln(stderr, "(a plugin sink is listed with --config FILE naming the config that declares it)")
			}
			return 1
		}
		_, isBuiltin := builtin.Lookup(spec.Type)
		return describeSink(spec, !isBuiltin, *asJSON, stdout)
	}
	fmt.Fprint(stderr, sinksUsage)
	return 2
}

type sinkInfo struct {
	Type   string        `json:"type"`
	Doc    string        `json:"doc"`
	Plugin bool          `json:"plugin,omitempty"`
	Fields []sinks.Field `json:"fields,omitempty"`
}

func listSinks(reg, builtin *sinks.Registry, asJSON bool, w io.Writer) int {
	var out []sinkInfo
	for _, typ := range reg.Types() {
		spec, _ := reg.Lookup(typ)
		_, isBuiltin := builtin.Lookup(typ)
		out = append(out, sinkInfo{Type: typ, Doc: spec.Doc, Plugin: !isBuiltin})
	}
	if asJSON {
		return writeJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tDESCRIPTION")
	for _, s := range out {
		doc := s.Doc
		if s.Plugin {
			doc += " (plugin)"
		}
		fmt.Fprintf(tw, "%s\t%s\n", s.Type, doc)
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "\nRun \"sluice sinks describe TYPE\" for a type's config fields.")
	return 0
}

func describeSink(spec sinks.Spec, plugin, asJSON bool, w io.Writer) int {
	// FieldsOf: a plugin's config has no Go struct here; it describes itself with the plugin's fields.
	fields := sinks.FieldsOf(spec.Config())
	if asJSON {
		return writeJSON(w, sinkInfo{Type: spec.Type, Doc: spec.Doc, Plugin: plugin, Fields: fields})
	}
	doc := spec.Doc
	if plugin {
		doc += " (plugin)"
	}
	fmt.Fprintf(w, "%s: %s\n\nconfig fields:\n", spec.Type, doc)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tTYPE\tDEFAULT\tREQUIRED\tSECRET\tDESCRIPTION")
	for _, f := range fields {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", f.Name, f.Type, orDash(f.Default), yesNo(f.Required), cmp.Or(secretLabel(f), "no"), f.Description)
	}
	_ = tw.Flush()
	return 0
}

func writeJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// sinksDocPath is docs/sinks.md relative to this package (the test's working directory).
const sinksDocPath = "../../docs/sinks.md"

// sinksMarkdown renders docs/sinks.md: every built-in sink type with its fields, from the config structs.
func sinksMarkdown(reg *sinks.Registry) []byte {
	var b bytes.Buffer
	b.WriteString("# Sink types\n\n")
	b.WriteString("<!-- Generated from the sinks' config structs by `go test ./cmd/sluice -run TestSinksDocs -update`; do not edit. -->\n\n")
	b.WriteString("Each destination's `type` picks a sink; its `config:` block takes the fields below. `sluice sinks` lists\n")
	b.WriteString("the types and `sluice sinks describe TYPE` prints the same table (`--config FILE` adds the plugin sinks\n")
	b.WriteString("that file declares). Secret fields are masked by `sluice validate --print`, the API and the logs.\n\n")
	b.WriteString("| Type | What it does |\n|---|---|\n")
	for _, typ := range reg.Types() {
		spec, _ := reg.Lookup(typ)
		fmt.Fprintf(&b, "| [`%s`](#%s) | %s |\n", typ, typ, mdCell(spec.Doc))
	}
	for _, typ := range reg.Types() {
		spec, _ := reg.Lookup(typ)
		fmt.Fprintf(&b, "\n## %s\n\n%s.\n\n", typ, upperFirst(strings.TrimSuffix(spec.Doc, ".")))
		b.WriteString("| Field | Type | Default | Required | Secret | Description |\n|---|---|---|---|---|---|\n")
		for _, f := range sinks.FieldsOf(spec.Config()) {
			def := ""
			if f.Default != "" {
				def = "`" + f.Default + "`"
			}
			req, sec := "", secretLabel(f)
			if f.Required {
				req = "yes"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s |\n", f.Name, f.Type, def, req, sec, mdCell(f.Description))
		}
		// A sink may add prose its fields cannot carry (wire formats, answers it understands).
		if n, ok := spec.Config().(interface{ DocNotes() string }); ok {
			b.WriteString("\n" + strings.TrimSpace(n.DocNotes()) + "\n")
		}
	}
	return b.Bytes()
}

func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// secretLabel says what of a field is secret: "yes" (the whole value), "userinfo, query" (a URL's parts) or "".
func secretLabel(f sinks.Field) string {
	switch {
	case f.Secret:
		return "yes"
	case f.SecretURL:
		return "userinfo, query"
	}
	return ""
}
