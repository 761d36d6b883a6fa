// Package netguard is the gateway's name for the SSRF guard. The one implementation lives in the SDK module
// (plugins/sdk/netguard) so that plugins apply the very same rules through sdk.Dialer; this package only
// re-exports it for core and the built-in sinks.
//
// May import: plugins/sdk/....
package netguard

import (
	"net/netip"
	"net/url"

	sdknet "github.com/sluicehq/sluice/plugins/sdk/netguard"
)

type (
	// BlockedError is the refusal of a connection to an address outside what Sluice may reach.
	BlockedError = sdknet.BlockedError
	// CIDRError is one bad entry of an allow list.
	CIDRError = sdknet.CIDRError
	// Guard dials TCP and UDP connections, refusing any whose address is blocked and not allowed.
	Guard = sdknet.Guard
	// Dialer is a guard with the operator's proxy.
	Dialer = sdknet.Dialer
)

// DefaultSetting is the config key of the destinations' allow list.
const DefaultSetting = sdknet.DefaultSetting

// New returns a Guard that lets through the addresses inside allow.
func New(allow []netip.Prefix) *Guard { return sdknet.New(allow) }

// ParseCIDRs parses an allow list (delivery.network.allow_cidrs).
func ParseCIDRs(list []string) ([]netip.Prefix, []error) { return sdknet.ParseCIDRs(list) }

// ParseProxy parses a proxy setting (http://host:port); "" is no proxy.
func ParseProxy(raw string) (*url.URL, error) { return sdknet.ParseProxy(raw) }

// NewDialer returns a Dialer checking targets with g and reaching them through proxy when set.
func NewDialer(g *Guard, proxy *url.URL) *Dialer { return sdknet.NewDialer(g, proxy) }
