package netguard

import "net/netip"

// rule is one refused range. Rules are checked in order, so a narrow range (the metadata address) comes
// before the wider one that holds it (link-local) and names it better.
type rule struct {
	prefix netip.Prefix
	reason string
}

func rules(list ...string) []rule {
	out := make([]rule, 0, len(list)/2)
	for i := 0; i < len(list); i += 2 {
		out = append(out, rule{netip.MustParsePrefix(list[i]), list[i+1]})
	}
	return out
}

const metadata = "a cloud metadata endpoint"

// v4Rules follow the IANA IPv4 special-purpose registry, keeping the ranges that are not globally reachable or
// that reach something other than the host one meant (AS112 and AMT anycast are global, so they pass).
var v4Rules = rules(
	"169.254.169.254/32", metadata, // AWS, GCP, Azure, Oracle, OpenStack
	"100.100.100.200/32", metadata, // Alibaba Cloud
	"168.63.129.16/32", metadata+" (azure wireserver)", // a public address only Azure VMs reach, to the host
	"255.255.255.255/32", "broadcast",
	"0.0.0.0/8", "unspecified (this network, RFC 1122)",
	"10.0.0.0/8", "private (RFC 1918)",
	"100.64.0.0/10", "shared address space (CGNAT, RFC 6598)",
	"127.0.0.0/8", "loopback",
	"169.254.0.0/16", "link-local",
	"172.16.0.0/12", "private (RFC 1918)",
	"192.0.0.0/24", "reserved for IETF protocol assignments (RFC 6890)",
	"192.0.2.0/24", "documentation (TEST-NET-1, RFC 5737)",
	"192.88.99.0/24", "reserved (deprecated 6to4 relay anycast, RFC 7526)",
	"192.168.0.0/16", "private (RFC 1918)",
	"198.18.0.0/15", "reserved for benchmarking (RFC 2544)",
	"198.51.100.0/24", "documentation (TEST-NET-2, RFC 5737)",
	"203.0.113.0/24", "documentation (TEST-NET-3, RFC 5737)",
	"224.0.0.0/4", "multicast",
	"240.0.0.0/4", "reserved (RFC 1112)",
)

// v6Rules follow the IANA IPv6 special-purpose registry. IPv4-mapped addresses never get here (they are
// unmapped first) and NAT64/6to4 are judged by the IPv4 address they carry (see embedded4).
var v6Rules = rules(
	"fd00:ec2::254/128", metadata, // AWS IMDS over IPv6
	"::/128", "unspecified",
	"::1/128", "loopback",
	"::/96", "a deprecated IPv4-compatible address (RFC 4291)",
	"::ffff:0:0:0/96", "an IPv4-translated address (RFC 2765)",
	"64:ff9b:1::/48", "a local-use NAT64 address (RFC 8215)",
	"100::/64", "discard-only (RFC 6666)",
	"2001::/32", "a Teredo tunnel address (RFC 4380)",
	"2001:2::/48", "reserved for benchmarking (RFC 5180)",
	"2001:db8::/32", "documentation (RFC 3849)",
	"3fff::/20", "documentation (RFC 9637)",
	"fc00::/7", "unique local (RFC 4193)",
	"fe80::/10", "link-local",
	"fec0::/10", "site-local (deprecated, RFC 3879)",
	"ff00::/8", "multicast",
)

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

func reason4(ip netip.Addr) string {
	return match(v4Rules, ip)
}

func reason6(ip netip.Addr) string {
	return match(v6Rules, ip)
}

func match(rs []rule, ip netip.Addr) string {
	for _, r := range rs {
		if r.prefix.Contains(ip) {
			return r.reason
		}
	}
	return ""
}

// embedded4 extracts the IPv4 destination of a NAT64 (RFC 6052, well-known prefix) or 6to4 (RFC 3056)
// address.
func embedded4(ip netip.Addr) (netip.Addr, string, bool) {
	b := ip.As16()
	switch {
	case nat64.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), "NAT64", true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), "6to4", true
	}
	return netip.Addr{}, "", false
}
