// Package netguard is the SSRF guard for every outbound connection Sluice makes to an address a user gave it
// (webhook URLs, per-run subscriptions, plugin sinks that reach the network through the host).
//
// The check runs at connect time, on the address the socket is about to connect to (net.Dialer.ControlContext),
// not on the host name in the URL: a name that resolves to 127.0.0.1, or that resolves differently the second
// time it is asked (DNS rebinding), is judged by the address it actually reaches. Loopback, private, link-local,
// cloud metadata and the other special-purpose ranges are refused unless the operator allows them with
// `delivery.network.allow_cidrs`.
//
// A Dialer adds the operator's proxy (delivery.network.proxy, or a destination's own): the target is resolved
// and judged before the proxy is asked, the proxy itself is reached as configured, and proxy variables from
// the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) are never consulted.
//
// It imports only the standard library and lives in the SDK module so that plugins (through sdk.Dialer) apply
// the very same rules as the gateway; core/netguard re-exports it for the gateway's packages.
//
// May import: nothing of Sluice's.
package netguard
