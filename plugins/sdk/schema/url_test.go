package schema

import (
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestMaskURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"https://h/x", "https://h/x"},
		{"https://u:p@h/x?token=t", "https://****:****@h/x?token=****"},
		{"https://alice-long-name:s3cr3t-password@h:8443/a/b?token=abcdefghijklmn&x=1&flag",
			"https://…name:…word@h:8443/a/b?token=…klmn&x=****&flag"},
		{"https://token-only-user-1234@h/", "https://…1234@h/"},
		{"not a url", "****"},
		{"sealed:v1:AAAABBBBCCCCDDDD", "…DDDD"},
	} {
		if got := MaskURL(tt.in); got != tt.want {
			t.Errorf("MaskURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

type urlCfg struct {
	URL     string            `yaml:"url" secret:"url"`
	Headers map[string]string `yaml:"headers" secret:"true"`
	Name    string            `yaml:"name"`
}

// secret:"url" fields are masked part by part, sealed (walked) only when they hold a secret part, and kept
// when their masked form comes back.
func TestURLSecrets(t *testing.T) {
	s := SecretsOf(reflect.TypeOf(urlCfg{}))
	tree := func(u string) map[string]any {
		return map[string]any{"url": u, "name": "n", "headers": map[string]any{"Authorization": "Bearer abcdefghijkl"}}
	}
	var walked []string
	s.Walk(tree("https://h/x"), func(p, v string) string { walked = append(walked, p); return v })
	if strings.Join(walked, ",") != "headers.Authorization" {
		t.Fatalf("walked %v: a URL without secret parts holds no secret", walked)
	}
	walked = nil
	cur := tree("https://u:p@h/x?token=t")
	s.Walk(cur, func(p, v string) string { walked = append(walked, p); return v })
	if strings.Join(walked, ",") != "url,headers.Authorization" {
		t.Fatalf("walked %v", walked)
	}
	masked := tree("https://u:p@h/x?token=t")
	s.Mask(masked)
	if masked["url"] != "https://****:****@h/x?token=****" || masked["headers"].(map[string]any)["Authorization"] != "…ijkl" || masked["name"] != "n" {
		t.Fatalf("masked %v", masked)
	}
	s.Keep(masked, cur)
	if masked["url"] != "https://u:p@h/x?token=t" || masked["headers"].(map[string]any)["Authorization"] != "Bearer abcdefghijkl" {
		t.Fatalf("kept %v", masked)
	}
	// The same walker on YAML nodes (validate --print).
	var n yaml.Node
	if err := n.Encode(urlCfg{URL: "https://u:p@h/x?token=t", Headers: map[string]string{"X-Key": "k-0123456789ab"}}); err != nil {
		t.Fatal(err)
	}
	s.Mask(&n)
	out, _ := yaml.Marshal(&n)
	if strings.Contains(string(out), "token=t") || strings.Contains(string(out), "k-0123456789ab") || !strings.Contains(string(out), "…89ab") {
		t.Fatalf("masked node:\n%s", out)
	}
}
