package webhook

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/plugins/sdk/schema"
)

// The receiver blocks decode from YAML the way the config loader reads them: nested keys checked, sizes with
// units, typos named by path.
func TestDecodeReceiverBlocks(t *testing.T) {
	c, err := schema.Decode[Config]([]byte(`
url: "https://{data.account.region}.partner.example/hooks"
secrets: ["` + secretA + `"]
auth: {oauth2_client_credentials: {token_url: "https://auth.example/token", client_id: sluice, client_secret: s, scopes: [events]}}
tls: {client_cert: /etc/sluice/client.pem, client_key: /etc/sluice/client.key, ca: /etc/sluice/ca.pem}
batch: {max_events: 100, max_bytes: 1MB, max_wait: 200ms}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.OAuth2.ClientID != "sluice" || c.TLS.CA != "/etc/sluice/ca.pem" || c.Batch.MaxBytes != 1<<20 ||
		c.Batch.MaxWait.D() != 200*time.Millisecond || c.Batch.MaxEvents != 100 {
		t.Fatalf("decoded %+v %+v %+v", c.Auth.OAuth2, c.TLS, c.Batch)
	}
	if got := c.Files(); len(got) != 3 {
		t.Fatalf("Files %v", got)
	}
	for src, path := range map[string]string{
		"auth: {basic: {usrname: u}}":     "auth.basic.usrname",
		"tls: {client_crt: x}":            "tls.client_crt",
		"batch: {max_bytes: lots}":        "batch.max_bytes",
		"batch: {max_events: 10, foo: 1}": "batch.foo",
	} {
		_, err := schema.Decode[Config]([]byte("url: https://example.com/\nsigning: none\n" + src))
		if !fieldPaths(err)[path] {
			t.Errorf("%s: %v, want a problem at %s", src, err, path)
		}
	}
}
