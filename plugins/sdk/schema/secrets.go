package schema

import (
	"fmt"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Mask shows a secret as its kind and last four characters: "whsec_…abcd", "…abcd", or "****" when short.
func Mask(secret string) string {
	const keep = 4
	prefix := ""
	if strings.HasPrefix(secret, "whsec_") {
		prefix, secret = "whsec_", strings.TrimPrefix(secret, "whsec_")
	}
	if secret == "" {
		return prefix
	}
	if len(secret) < 3*keep {
		return prefix + "****"
	}
	return prefix + "…" + secret[len(secret)-keep:]
}

// MaskURL shows a URL with its secret parts masked: the userinfo (user and password) and every query value,
// each the way Mask shows a secret ("https://…user:…word@host/x?token=…abcd"). Scheme, host, path and query
// keys stay readable. A value that does not parse as a URL with a scheme is masked whole.
func MaskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return Mask(raw)
	}
	if u.User == nil && u.RawQuery == "" {
		return raw
	}
	var b strings.Builder
	b.WriteString(u.Scheme + "://")
	if u.User != nil {
		b.WriteString(Mask(u.User.Username()))
		if pw, ok := u.User.Password(); ok {
			b.WriteString(":" + Mask(pw))
		}
		b.WriteString("@")
	}
	b.WriteString(u.Host)
	b.WriteString(u.EscapedPath())
	if u.RawQuery != "" {
		b.WriteString("?")
		for i, part := range strings.Split(u.RawQuery, "&") {
			if i > 0 {
				b.WriteString("&")
			}
			k, v, found := strings.Cut(part, "=")
			b.WriteString(k)
			if found {
				uv, err := url.QueryUnescape(v)
				if err != nil {
					uv = v
				}
				b.WriteString("=" + Mask(uv))
			}
		}
	}
	if u.Fragment != "" {
		b.WriteString("#" + u.EscapedFragment())
	}
	return b.String()
}

// urlHasSecrets reports whether a secret:"url" value has secret parts (userinfo, query), or is not a plain
// URL at all (a sealed value, a malformed one): then the whole value is treated as secret.
func urlHasSecrets(raw string) bool {
	u, err := url.Parse(raw)
	return err != nil || u.Scheme == "" || u.Opaque != "" || u.User != nil || u.RawQuery != ""
}

// Secret kinds, as Secrets entries carry them.
const (
	kindWhole = "true"
	kindURL   = "url"
	// urlMark ends a Secrets entry whose value is a URL with secret parts ("url#url").
	urlMark = "#" + kindURL
)

// Secrets says where a config's secrets are: dotted paths relative to the block, "[]" standing for every
// element of a list ("auth.keys[].key"). Everything under a secret path is secret: each element of a secret
// list, each value of a secret map. An entry ending in #url is a URL of which only the userinfo and query
// values are secret: it is sealed and fingerprinted whole, and masked with MaskURL.
type Secrets []string

// maskFor returns how a value found at pattern is shown.
func maskFor(pattern string) func(string) string {
	if strings.HasSuffix(pattern, urlMark) {
		return MaskURL
	}
	return Mask
}

// SecretsOf lists the secret paths of a config struct type from its `secret:"true"` tags, looking into
// nested and inline structs and lists of structs.
func SecretsOf(t reflect.Type) Secrets {
	if t == nil {
		return nil
	}
	var out Secrets
	secretsOf(t, "", &out, 0)
	return out
}

func secretsOf(t reflect.Type, path string, out *Secrets, depth int) {
	t = deref(t)
	if depth > 16 { // a recursive type: its secrets are as deep as anyone writes them
		return
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		secretsOf(t.Elem(), path+"[]", out, depth+1)
	case reflect.Struct:
		if t == timeType || t == nodeType {
			return
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !visible(f) {
				continue
			}
			name, inline := yamlName(f)
			p := Join(path, name)
			if inline {
				p = path
			}
			switch secretKind(f) {
			case kindWhole:
				*out = append(*out, p)
				continue
			case kindURL:
				*out = append(*out, p+urlMark)
				continue
			}
			secretsOf(f.Type, p, out, depth+1)
		}
	}
}

// SecretsIn lists the secret fields of a config description (a plugin's, which has no Go struct here).
func SecretsIn(fields []Field) Secrets {
	var out Secrets
	for _, f := range fields {
		switch {
		case f.Secret:
			out = append(out, f.Name)
		case f.SecretURL:
			out = append(out, f.Name+urlMark)
		}
	}
	return out
}

// Walk calls fn with every secret string in tree, its path ("secrets[1]") and the secret path that made it
// secret ("secrets"); fn's result replaces the value. tree is a *yaml.Node or generic values (map[string]any,
// []any, as YAML and JSON decode them), changed in place.
func (s Secrets) Walk(tree any, fn func(path, value string) string) {
	s.walk(tree, false, func(path, _ string, v string) string { return fn(path, v) })
}

// Mask masks every secret in tree in place: strings and, in a *yaml.Node, any scalar (a secret is secret
// whatever YAML resolved it to).
func (s Secrets) Mask(tree any) {
	s.walk(tree, true, func(_, pattern string, v string) string { return maskFor(pattern)(v) })
}

// Keep puts current's secrets back wherever patch holds one of them in its masked form (a client that sends a
// masked value back unchanged keeps the stored secret). Both are generic values of the same config.
func (s Secrets) Keep(patch, current any) {
	olds := map[string][]string{}
	s.walk(current, false, func(_, pattern string, v string) string {
		olds[pattern] = append(olds[pattern], v)
		return v
	})
	s.walk(patch, false, func(_, pattern string, v string) string {
		mask := maskFor(pattern)
		for _, o := range olds[pattern] {
			if o != "" && v == mask(o) && v != o {
				return o
			}
		}
		return v
	})
}

// walk visits secret scalars. pattern is the secret path matched, for Keep.
func (s Secrets) walk(tree any, all bool, fn func(path, pattern, value string) string) {
	if len(s) == 0 {
		return
	}
	set := make(map[string]string, len(s))
	for _, p := range s {
		set[strings.TrimSuffix(p, urlMark)] = p
	}
	if !all {
		// A URL without userinfo or query holds no secret: it is neither sealed nor fingerprinted, and a
		// destination with only such a URL needs no encryption key. Sealed values (not URLs) are visited.
		inner := fn
		fn = func(path, pattern, v string) string {
			if strings.HasSuffix(pattern, urlMark) && !urlHasSecrets(v) {
				return v
			}
			return inner(path, pattern, v)
		}
	}
	w := walker{set: set, all: all, fn: fn}
	switch t := tree.(type) {
	case *yaml.Node:
		w.node(t, "", "", "")
	default:
		w.generic(tree, s)
	}
}

type walker struct {
	set map[string]string // normalised path → the Secrets entry (with its kind mark)
	all bool
	fn  func(path, pattern, value string) string
}

// match returns the secret path in force at norm (the path with list indexes as []), or "".
func (w walker) match(norm, inherited string) string {
	if inherited != "" {
		return inherited
	}
	return w.set[norm]
}

func (w walker) node(n *yaml.Node, path, norm, pattern string) {
	if n == nil {
		return
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			w.node(c, path, norm, pattern)
		}
	case yaml.AliasNode:
		w.node(n.Alias, path, norm, pattern)
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			w.node(n.Content[i+1], Join(path, k), Join(norm, k), w.match(Join(norm, k), pattern))
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			w.node(c, path+"["+strconv.Itoa(i)+"]", norm+"[]", w.match(norm+"[]", pattern))
		}
	case yaml.ScalarNode:
		if pattern == "" || n.ShortTag() == "!!null" || (!w.all && n.ShortTag() != "!!str") {
			return
		}
		if v := w.fn(path, pattern, n.Value); v != n.Value || n.ShortTag() != "!!str" {
			n.Value, n.Tag, n.Style = v, "!!str", 0
		}
	}
}

// generic walks a tree of generic values pattern by pattern, so secrets are visited in the order the config
// declares them (maps under a secret in key order): sealing and fingerprints come out the same each time.
func (w walker) generic(tree any, patterns Secrets) {
	for _, p := range patterns {
		w.follow(tree, splitPattern(strings.TrimSuffix(p, urlMark)), "", p, nil)
	}
}

// splitPattern turns "auth.keys[].key" into auth, keys, [], key.
func splitPattern(p string) []string {
	var out []string
	for _, part := range strings.Split(p, ".") {
		n := 0
		for strings.HasSuffix(part, "[]") {
			part = strings.TrimSuffix(part, "[]")
			n++
		}
		out = append(out, part)
		for ; n > 0; n-- {
			out = append(out, "[]")
		}
	}
	return out
}

func (w walker) follow(v any, segs []string, path, pattern string, set func(any)) {
	if len(segs) == 0 {
		w.under(v, path, pattern, set)
		return
	}
	seg, rest := segs[0], segs[1:]
	if seg == "[]" {
		switch x := v.(type) {
		case []any:
			for i, e := range x {
				w.follow(e, rest, path+"["+strconv.Itoa(i)+"]", pattern, func(nv any) { x[i] = nv })
			}
		case []string:
			for i, e := range x {
				w.follow(e, rest, path+"["+strconv.Itoa(i)+"]", pattern, func(nv any) { x[i] = nv.(string) })
			}
		}
		return
	}
	switch x := v.(type) {
	case map[string]any:
		if e, ok := x[seg]; ok {
			w.follow(e, rest, Join(path, seg), pattern, func(nv any) { x[seg] = nv })
		}
	case map[string]string:
		if e, ok := x[seg]; ok {
			w.follow(e, rest, Join(path, seg), pattern, func(nv any) { x[seg] = nv.(string) })
		}
	}
}

// under visits every scalar of a secret value.
func (w walker) under(v any, path, pattern string, set func(any)) {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(x) {
			w.under(x[k], Join(path, k), pattern, func(nv any) { x[k] = nv })
		}
	case map[string]string:
		for _, k := range sortedKeys(x) {
			x[k] = w.fn(Join(path, k), pattern, x[k])
		}
	case []any:
		for i, e := range x {
			w.under(e, path+"["+strconv.Itoa(i)+"]", pattern, func(nv any) { x[i] = nv })
		}
	case []string:
		for i, e := range x {
			x[i] = w.fn(path+"["+strconv.Itoa(i)+"]", pattern, e)
		}
	case nil:
	case string:
		if set != nil {
			set(w.fn(path, pattern, x))
		}
	default:
		if w.all && set != nil {
			set(w.fn(path, pattern, fmt.Sprint(x)))
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
