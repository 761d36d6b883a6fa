// Package authz is the one authorization rule of Sluice's HTTP surface, shared by the /v1 routes and the web
// console: who a caller is (Principal), what its role may do (Authorize), and which tenant's things it may
// see (Sees). core/api and core/api/console both decide through it, so the console never shows or does what
// the same key could not over /v1.
//
// It imports only core/config (for the role names).
//
// May import: core/config, core/event, core/match, core/netguard, sinks, plugins/sdk/....
// Must not import: core/store, core/dispatch, core/destinations, core/intake.
package authz

import (
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/core/config"
)

// Principal is who a request acts as: an API key, or a console session opened with one or with a portal
// link (Name "portal:TENANT").
type Principal struct {
	Name   string
	Role   string
	Tenant string
}

// Role names, as Authorize takes them.
const (
	Reader    = config.RoleReader
	Publisher = config.RolePublisher
	Admin     = config.RoleAdmin
)

// ErrForbidden is what every refusal of Authorize is (errors.Is).
var ErrForbidden = errors.New("forbidden")

// Refusal is Authorize's answer to a principal whose role may not do something; Msg says why.
type Refusal struct{ Msg string }

func (r *Refusal) Error() string        { return r.Msg }
func (r *Refusal) Is(target error) bool { return target == ErrForbidden }

// Can reports whether role may do what need asks: admin may do anything; publisher publishes and reads (a
// publisher checking what became of its events is the common case); reader reads.
func Can(role, need string) bool {
	switch role {
	case Admin:
		return true
	case Publisher:
		return need == Publisher || need == Reader
	case Reader:
		return need == Reader
	}
	return false
}

// Authorize returns nil when p may do what need asks, else an error wrapping ErrForbidden that says why.
func Authorize(p Principal, need string) error {
	if Can(p.Role, need) {
		return nil
	}
	return &Refusal{Msg: fmt.Sprintf("key %s has role %s, which may not do this (needs %s)", p.Name, p.Role, need)}
}

// Sees reports whether p may see something of tenant: a tenant-less principal sees every tenant, a tenant's
// principal only its own.
func Sees(p Principal, tenant string) bool { return p.Tenant == "" || p.Tenant == tenant }
