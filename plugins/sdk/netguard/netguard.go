package netguard

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// BlockedError is the refusal of a connection to an address outside what Sluice may reach.
type BlockedError struct {
	Addr   netip.Addr // the address that was refused, as dialled (not unmapped)
	Reason string     // why, phrased to follow "is": "loopback", "private (RFC 1918)", "a cloud metadata endpoint"
	// Host is the name that resolved to Addr, when the dial was by name; it tells the operator which URL
	// led there. Empty for a literal address or a direct Check.
	Host string
	// Setting is the allow list that would let Addr through; empty means delivery.network.allow_cidrs.
	Setting string
}

func (e *BlockedError) Error() string {
	addr := e.Addr.String()
	if e.Host != "" && e.Host != addr {
		addr += " (resolved from " + e.Host + ")"
	}
	setting := e.Setting
	if setting == "" {
		setting = DefaultSetting
	}
	return fmt.Sprintf("address %s is %s; Sluice refuses it to prevent SSRF — add a CIDR such as %s to "+
		"%s to allow it", addr, e.Reason, hostPrefix(e.Addr), setting)
}

// hostPrefix is the narrowest CIDR that allows a, the one an operator should copy into the allow list.
func hostPrefix(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	if !a.IsValid() {
		return "127.0.0.0/8"
	}
	return netip.PrefixFrom(a, a.BitLen()).String()
}

// DefaultSetting is the config key of the destinations' allow list, named in refusals.
const DefaultSetting = "delivery.network.allow_cidrs"

// Guard dials TCP and UDP connections, refusing any whose address is blocked and not allowed.
// A Guard is safe for concurrent use.
type Guard struct {
	allow   []netip.Prefix
	setting string
	dialer  net.Dialer
}

// Named returns a copy of g whose refusals name setting as the allow list to extend (e.g.
// intake.inline_subscriptions.allow_cidrs for per-run subscriptions).
func (g *Guard) Named(setting string) *Guard {
	c := *g
	c.allow = append([]netip.Prefix(nil), g.allow...)
	c.setting = setting
	return &c
}

// New returns a Guard that lets through the addresses inside allow (typically delivery.network.allow_cidrs)
// and refuses every other blocked range. IPv4-mapped IPv6 prefixes (::ffff:10.0.0.0/104) are treated as the
// IPv4 prefix they map.
func New(allow []netip.Prefix) *Guard {
	g := &Guard{
		dialer: net.Dialer{
			// A backstop for callers that pass a context without a deadline; the sink's per-attempt timeout
			// is normally shorter.
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		},
	}
	for _, p := range allow {
		if !p.IsValid() {
			continue
		}
		g.allow = append(g.allow, normalize(p))
	}
	return g
}

func normalize(p netip.Prefix) netip.Prefix {
	a := p.Addr().WithZone("")
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return netip.PrefixFrom(a, p.Bits()).Masked()
}

// Setting returns the config key refusals name as the allow list (DefaultSetting unless Named).
func (g *Guard) Setting() string {
	if g.setting == "" {
		return DefaultSetting
	}
	return g.setting
}

// Allowed returns the allow list in effect (normalised), for logs and `validate --print`.
func (g *Guard) Allowed() []netip.Prefix {
	return append([]netip.Prefix(nil), g.allow...)
}

// Check returns a *BlockedError if Sluice must not connect to ip, nil otherwise.
func (g *Guard) Check(ip netip.Addr) error {
	reason := g.judge(ip)
	if reason == "" {
		return nil
	}
	return &BlockedError{Addr: ip, Reason: reason, Setting: g.setting}
}

// judge returns why ip is refused, or "" when it may be reached.
func (g *Guard) judge(ip netip.Addr) string {
	if !ip.IsValid() {
		return "not a valid address"
	}
	// A zone only picks the interface of a link-local address; it does not change which range it is in.
	ip = ip.WithZone("").Unmap()
	if g.allowed(ip) {
		return ""
	}
	if ip.Is4() {
		return reason4(ip)
	}
	// Tunnelled forms carry an IPv4 destination inside the IPv6 one; the gateway that unwraps them connects
	// to that IPv4, so it is what must be judged (with the allow list applied to it too).
	if v4, kind, ok := embedded4(ip); ok {
		if r := g.judge(v4); r != "" {
			return fmt.Sprintf("a %s address embedding %s, which is %s", kind, v4, r)
		}
		return ""
	}
	return reason6(ip)
}

func (g *Guard) allowed(ip netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// DialContext dials address through the guard; it has the signature of sinks.DialFunc and of
// http.Transport.DialContext. Names are resolved as usual and every address the dialer tries is checked just
// before connect, so only allowed addresses are ever connected. The refusal is a *BlockedError wrapped in a
// *net.OpError; find it with errors.As.
func (g *Guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		// unix sockets and raw IP have no address the guard can judge.
		return nil, &net.OpError{Op: "dial", Net: network,
			Err: fmt.Errorf("netguard: network %q is not allowed; only tcp and udp are", network)}
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	// A literal address is refused before a socket even exists; names are judged in control below.
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := g.Check(ip); err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Addr: dialAddr(address), Err: err}
		}
		host = ""
	}
	d := g.dialer
	d.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
		return g.control(host, address)
	}
	return d.DialContext(ctx, network, address)
}

// control judges the resolved ip:port the socket is about to connect to. It is the check that matters: it
// sees what DNS answered this time, not what it answered when the URL was validated.
func (g *Guard) control(host, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("netguard: cannot judge address %q: %v", address, err)
	}
	if reason := g.judge(ap.Addr()); reason != "" {
		return &BlockedError{Addr: ap.Addr(), Reason: reason, Host: host, Setting: g.setting}
	}
	return nil
}

// dialAddr names the refused destination in the *net.OpError the way the dialer's own errors do.
type dialAddr string

func (a dialAddr) Network() string { return "ip" }
func (a dialAddr) String() string  { return string(a) }
