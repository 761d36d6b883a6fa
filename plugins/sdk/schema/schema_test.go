package schema

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type Common struct {
	Name string `yaml:"name" required:"true" desc:"a name"`
}

type testConfig struct {
	Common  `yaml:",inline"`
	Port    uint16            `yaml:"port" default:"8080"`
	Wait    time.Duration     `yaml:"wait" default:"2s"`
	Tags    []string          `yaml:"tags" default:"[a, b]"`
	Token   string            `yaml:"token" secret:"true"`
	Headers map[string]string `yaml:"headers" secret:"true"`
	Users   []struct {
		Login    string `yaml:"login"`
		Password string `yaml:"password" secret:"true"`
	} `yaml:"users"`
	TLS struct {
		CA string `yaml:"ca" default:"/etc/ca.pem"`
	} `yaml:"tls"`
	Free any `yaml:"free"`
}

type problem struct{ path, msg string }

func check(t *testing.T, src string) (problems []problem, visited map[string]int) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	visited = map[string]int{}
	Checker{
		Visit:   func(p string, n *yaml.Node) { visited[p] = n.Line },
		Problem: func(_ *yaml.Node, p, msg string) { problems = append(problems, problem{p, msg}) },
	}.Check(doc.Content[0], reflect.TypeOf(testConfig{}), "")
	return problems, visited
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct{ src, path, want string }{
		{"name: x\nport: 80", "", ""},
		{"name: x\nprot: 80", "prot", `unknown key "prot"; valid keys here: name, port, wait`},
		{"port: -1", "port", `must be an integer, got "-1"`},
		{"port: 70000", "port", `must be an integer, got "70000"`},
		{"wait: soon", "wait", `must be a duration such as 5s, got "soon"`},
		{"tags: a", "tags", "must be a list"},
		{"tls: x", "tls", "must be a mapping of keys (ca)"},
		{"users: [{login: a, pw: b}]", "users[0].pw", `unknown key "pw"`},
		{"headers: {a: [1]}", "headers.a", "must be a string"},
	} {
		problems, _ := check(t, tc.src)
		switch {
		case tc.want == "" && len(problems) > 0:
			t.Errorf("%q: %v", tc.src, problems)
		case tc.want != "" && (len(problems) != 1 || problems[0].path != tc.path || !strings.Contains(problems[0].msg, tc.want)):
			t.Errorf("%q: %v, want %s: %s", tc.src, problems, tc.path, tc.want)
		}
	}
}

func TestCheckVisitsFreeFormValues(t *testing.T) {
	_, visited := check(t, "name: x\nfree:\n  a:\n    - b: 1\n")
	if visited["free.a[0].b"] != 4 || visited["name"] != 1 {
		t.Errorf("visited = %v", visited)
	}
}

func (c *testConfig) Validate() error {
	if c.Name == "bad" {
		return errors.Join(Errorf("name", "is bad"), Errorf("tls.ca", "is bad too"))
	}
	return nil
}

func TestDecode(t *testing.T) {
	c, err := Decode[testConfig]([]byte("name: x\ntls: {}"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 8080 || c.Wait != 2*time.Second || !reflect.DeepEqual(c.Tags, []string{"a", "b"}) || c.TLS.CA != "/etc/ca.pem" {
		t.Errorf("defaults not filled: %+v", c)
	}
	_, err = Decode[testConfig]([]byte("port: 1"))
	if err == nil || err.Error() != "name: is required: a name" {
		t.Errorf("missing required = %v", err)
	}
	_, err = Decode[testConfig]([]byte("name: ''"))
	if err == nil || err.Error() != "name: must not be empty" {
		t.Errorf("empty required = %v", err)
	}
	_, err = Decode[testConfig]([]byte("name: bad"))
	var fe *FieldError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "tls.ca: is bad too") {
		t.Errorf("Validate's problems = %v", err)
	}
}

func TestDescribe(t *testing.T) {
	got := map[string]Field{}
	for _, f := range Describe(testConfig{}) {
		got[f.Name] = f
	}
	for name, typ := range map[string]string{"name": "string", "port": "integer", "wait": "duration",
		"tags": "list of string", "headers": "map of string", "tls.ca": "string"} {
		if got[name].Type != typ {
			t.Errorf("%s: type %q, want %q", name, got[name].Type, typ)
		}
	}
	if !got["name"].Required || !got["token"].Secret || got["port"].Default != "8080" {
		t.Errorf("tags lost: %+v", got)
	}
}

func TestSecretsMaskAndKeep(t *testing.T) {
	s := SecretsOf(reflect.TypeOf(testConfig{}))
	if want := (Secrets{"token", "headers", "users[].password"}); !reflect.DeepEqual(s, want) {
		t.Fatalf("secrets %v, want %v", s, want)
	}
	var n yaml.Node
	src := "name: x\ntoken: tok-1234567890\nheaders: {Authorization: Bearer abcdefghijkl}\nusers: [{login: a, password: 123456789012345}]\n"
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	s.Mask(&n)
	out, _ := yaml.Marshal(&n)
	for _, leak := range []string{"tok-1234567890", "Bearer abcdefghijkl", "123456789012345"} {
		if strings.Contains(string(out), leak) {
			t.Errorf("masked YAML shows %q:\n%s", leak, out)
		}
	}
	if !strings.Contains(string(out), "login: a") || !strings.Contains(string(out), "…7890") {
		t.Errorf("masked YAML:\n%s", out)
	}

	current := map[string]any{"token": "tok-1234567890", "users": []any{map[string]any{"password": "pw-abcdefghijkl"}}}
	patch := map[string]any{"token": Mask("tok-1234567890"), "users": []any{map[string]any{"password": "new-password-1"}}}
	s.Keep(patch, current)
	if patch["token"] != "tok-1234567890" || patch["users"].([]any)[0].(map[string]any)["password"] != "new-password-1" {
		t.Errorf("after Keep: %v", patch)
	}
	var paths []string
	s.Walk(current, func(p, v string) string { paths = append(paths, p); return v })
	if want := []string{"token", "users[0].password"}; !reflect.DeepEqual(paths, want) {
		t.Errorf("walk order %v, want %v", paths, want)
	}
}
