package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/config"
)

func TestPostgresStore(t *testing.T) {
	cases := []struct {
		name, store string
		want        []string // substrings of reported lines, in order; none = valid
	}{
		{"valid url", `{driver: postgres, dsn: "postgres://sluice:pw-secret-1234@db:5432/sluice", max_conns: 30}`, nil},
		{"valid key=value", `{driver: postgres, dsn: "host=db dbname=sluice password=pw-secret-1234"}`, nil},
		{"dsn missing", `{driver: postgres}`, []string{"store.dsn: is required for the postgres store"}},
		{"not a dsn", `{driver: postgres, dsn: "pw-secret-1234"}`, []string{"store.dsn: must be a postgres:// URL or a key=value"}},
		{"wrong scheme", `{driver: postgres, dsn: "mysql://u:pw-secret-1234@db/x"}`, []string{"store.dsn: must be a postgres:// URL"}},
		{"bad url", `{driver: postgres, dsn: "postgres://u:pw-secret-1234@db:port/x"}`, []string{"store.dsn: is not a valid PostgreSQL URL"}},
		{"max_conns", `{driver: postgres, dsn: "postgres://db/x", max_conns: -1}`, []string{"store.max_conns: must be between 1 and 1000"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse("f.yaml", []byte(base+"store: "+c.store+"\n"), noEnv, reg())
			if len(c.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				out, err := cfg.Masked()
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(out), "pw-secret") || !strings.Contains(string(out), "dsn:") {
					t.Fatalf("--print shows the DSN's password (or no dsn):\n%s", out)
				}
				return
			}
			var es config.Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %v is not config.Errors", err)
			}
			i := 0
			for _, line := range strings.Split(err.Error(), "\n") {
				if i < len(c.want) && strings.Contains(line, c.want[i]) {
					i++
				}
			}
			if i < len(c.want) {
				t.Fatalf("missing %q in:\n%s", c.want[i], err)
			}
			if strings.Contains(err.Error(), "pw-secret") {
				t.Fatalf("an error shows the DSN's password:\n%s", err)
			}
		})
	}
}
