package authz_test

import (
	"errors"
	"testing"

	"github.com/sluicehq/sluice/core/api/authz"
)

func TestAuthorize(t *testing.T) {
	cases := []struct {
		role, need string
		ok         bool
	}{
		{authz.Admin, authz.Admin, true}, {authz.Admin, authz.Publisher, true}, {authz.Admin, authz.Reader, true},
		{authz.Publisher, authz.Admin, false}, {authz.Publisher, authz.Publisher, true}, {authz.Publisher, authz.Reader, true},
		{authz.Reader, authz.Admin, false}, {authz.Reader, authz.Publisher, false}, {authz.Reader, authz.Reader, true},
		{"root", authz.Reader, false}, {"", authz.Reader, false},
	}
	for _, c := range cases {
		err := authz.Authorize(authz.Principal{Name: "k", Role: c.role}, c.need)
		if (err == nil) != c.ok {
			t.Errorf("role %q needs %q: %v", c.role, c.need, err)
		}
		if err != nil && !errors.Is(err, authz.ErrForbidden) {
			t.Errorf("refusal %v is not ErrForbidden", err)
		}
	}
}

func TestSees(t *testing.T) {
	all := authz.Principal{Role: authz.Admin}
	acme := authz.Principal{Role: authz.Admin, Tenant: "acme"}
	if !authz.Sees(all, "") || !authz.Sees(all, "acme") || !authz.Sees(acme, "acme") {
		t.Fatal("a principal does not see what it should")
	}
	if authz.Sees(acme, "globex") || authz.Sees(acme, "") {
		t.Fatal("a tenant's principal sees another tenant's, or tenant-less, things")
	}
}
