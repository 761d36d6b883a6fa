package netguard

import (
	"fmt"
	"net/netip"
	"strings"
)

// CIDRError is one bad entry of an allow list. Index lets the config loader point at the YAML line;
// Error() names the entry as allow_cidrs[Index].
type CIDRError struct {
	Index int
	Entry string
	Msg   string
}

func (e *CIDRError) Error() string {
	return fmt.Sprintf("allow_cidrs[%d]: %s", e.Index, e.Msg)
}

// ParseCIDRs parses delivery.network.allow_cidrs. Entries are CIDRs ("10.0.0.0/8", "fd00::/8"); a single
// address without a length is taken as that one address (/32 or /128), since that is what anyone writing one
// means. An entry with bits set past its length ("10.1.2.3/8") is refused rather than widened: it usually
// means the length is a typo, and silently allowing a whole /8 is the wrong way to find out. The result holds
// the good entries; the errors (one per bad entry) say what to write instead.
func ParseCIDRs(list []string) ([]netip.Prefix, []error) {
	var out []netip.Prefix
	var errs []error
	for i, raw := range list {
		p, msg := parseCIDR(raw)
		if msg != "" {
			errs = append(errs, &CIDRError{Index: i, Entry: raw, Msg: msg})
			continue
		}
		out = append(out, p)
	}
	return out, errs
}

func parseCIDR(raw string) (netip.Prefix, string) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return netip.Prefix{}, "empty entry; write a CIDR like 10.0.0.0/8 or remove the entry"
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Sprintf("%q is not an IP address or CIDR; write it like 10.0.0.0/8, "+
				"192.168.1.5 or fd00::/8", raw)
		}
		return normalize(netip.PrefixFrom(a, a.BitLen())), ""
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Sprintf("%q is not a CIDR; write it like 10.0.0.0/8 or fd00::/8 "+
			"(the length is at most 32 for IPv4 and 128 for IPv6)", raw)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Sprintf("%q has bits set past its /%d; write %s for the whole range or "+
			"%s for that one address", raw, p.Bits(), m, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
	}
	return normalize(p), ""
}
