package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/sluicehq/sluice/plugins/sdk/schema"
	"github.com/sluicehq/sluice/sinks"
	"gopkg.in/yaml.v3"
)

// Error is one problem in a config file, printed as `FILE:LINE:COL: path.to.field: message`.
type Error struct {
	File string
	Line int
	Col  int
	Path string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteByte(':')
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:%d:", e.Line, e.Col)
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Load reads, expands, decodes and validates a config file. On any problem it returns Errors holding all of
// them; the returned config is then nil. A config that declares plugins needs LoadWithPlugins.
func Load(path string, reg *sinks.Registry) (*Config, error) {
	return LoadWithPlugins(path, reg, nil)
}

// LoadWithPlugins is Load that launches the declared plugins with load, so destinations of their types are
// validated by the plugins themselves.
func LoadWithPlugins(path string, reg *sinks.Registry, load PluginLoader) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("cannot read config: %v", err)}}
	}
	return ParseWithPlugins(path, b, os.LookupEnv, reg, load)
}

// Parse is Load for bytes already read; lookup resolves ${NAME}.
func Parse(file string, src []byte, lookup func(string) (string, bool), reg *sinks.Registry) (*Config, error) {
	return ParseWithPlugins(file, src, lookup, reg, nil)
}

// ParseWithPlugins is LoadWithPlugins for bytes already read.
func ParseWithPlugins(file string, src []byte, lookup func(string) (string, bool), reg *sinks.Registry, load PluginLoader) (*Config, error) {
	l := &loader{file: file, index: map[string]*yaml.Node{}, plugins: load}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		// An empty file is a config of defaults; validation below says what is missing.
		if !errors.Is(err, io.EOF) {
			return nil, Errors{l.yamlError(err, "")}
		}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	l.expand(root, lookup)

	cfg := Defaults()
	cfg.File = file
	if root.Kind != 0 {
		l.check(root, reflect.TypeOf(cfg).Elem(), "")
		if len(l.errs) == 0 {
			if err := root.Decode(cfg); err != nil {
				l.errs = append(l.errs, l.yamlError(err, ""))
			}
		}
	}
	if len(l.errs) == 0 {
		resolvePluginPaths(cfg, file)
		l.validate(cfg, reg)
	}
	if len(l.errs) > 0 {
		sort.SliceStable(l.errs, func(i, j int) bool {
			if l.errs[i].Line != l.errs[j].Line {
				return l.errs[i].Line < l.errs[j].Line
			}
			return l.errs[i].Col < l.errs[j].Col
		})
		return nil, l.errs
	}
	return cfg, nil
}

type loader struct {
	file    string
	plugins PluginLoader
	errs    Errors
	index   map[string]*yaml.Node // path → value node, for pointing semantic errors at a line
}

// yamlError turns a yaml.v3 error into an Error at its line.
func (l *loader) yamlError(err error, path string) *Error {
	msg, line := schema.Message(err)
	e := &Error{File: l.file, Path: path, Line: line, Msg: msg}
	if line > 0 {
		e.Col = 1
	}
	return e
}

// errorf records a problem at path, pointing at the nearest indexed node.
func (l *loader) errorf(path, format string, args ...any) {
	e := &Error{File: l.file, Path: path, Msg: fmt.Sprintf(format, args...)}
	if n := l.nodeFor(path); n != nil {
		e.Line, e.Col = n.Line, n.Column
	}
	l.errs = append(l.errs, e)
}

func (l *loader) errorAt(n *yaml.Node, path, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: l.file, Line: n.Line, Col: n.Column, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (l *loader) nodeFor(path string) *yaml.Node {
	for p := path; ; {
		if n, ok := l.index[p]; ok {
			return n
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			return l.index[""]
		}
		p = p[:i]
	}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}`)

// expand replaces ${NAME} and ${NAME:-default} in every scalar, keeping the node's position.
func (l *loader) expand(n *yaml.Node, lookup func(string) (string, bool)) {
	if n == nil {
		return
	}
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		out := envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			m := envRef.FindStringSubmatch(ref)
			if v, ok := lookup(m[1]); ok && v != "" {
				return v
			}
			if strings.Contains(ref, ":-") {
				return m[2]
			}
			l.errorAt(n, "", "environment variable %s is not set; set it or give a default: ${%s:-value}", m[1], m[1])
			return ""
		})
		n.Value = out
		if n.Style == 0 {
			// Let the expanded text resolve its own type, so `${PORT:-8080}` can fill an integer.
			n.Tag = ""
		}
	}
	for _, c := range n.Content {
		l.expand(c, lookup)
	}
}

// check walks the node tree against the Go type with the one config walker (plugins/sdk/schema) — the same
// that checks sink and plugin config blocks — reporting unknown keys and values of the wrong type at their
// position, and indexes every node by path.
func (l *loader) check(n *yaml.Node, t reflect.Type, path string) {
	schema.Checker{
		Visit: func(p string, n *yaml.Node) { l.index[p] = n },
		Problem: func(n *yaml.Node, p, msg string) {
			l.errs = append(l.errs, &Error{File: l.file, Line: n.Line, Col: n.Column, Path: p, Msg: msg})
		},
	}.Check(n, t, path)
}

func join(path, key string) string { return schema.Join(path, key) }

// resolvePluginPaths makes each relative plugins[].path relative to the config file's directory, not to
// wherever sluice was started from.
func resolvePluginPaths(c *Config, file string) {
	for i := range c.Plugins {
		p := c.Plugins[i].Path
		if p == "" || filepath.IsAbs(p) {
			continue
		}
		p = filepath.Join(filepath.Dir(file), p)
		// Absolute, so that it is never a bare name (which exec would look up in PATH) and it names the same
		// file whatever the working directory is later.
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		c.Plugins[i].Path = p
	}
}
