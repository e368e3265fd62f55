package gateway

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// Resolver looks names up. net.DefaultResolver is one; tests pass their own
// to map a name to a loopback server (Options.Resolver), which still goes
// through every address check.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// addrPolicy decides which resolved addresses the sandbox may reach.
type addrPolicy struct {
	// allowCIDRs are internal ranges the operator opened (a registry on
	// 10.1.2.3, say); they lift the internal-range refusal only.
	allowCIDRs []netip.Prefix
	// self are agentbot's own addresses (its listeners, and every address
	// of the host it runs on): refused even inside allowCIDRs.
	self []netip.AddrPort
}

// internalRanges are refused unless an allowed CIDR covers the address:
// cloud metadata lives at 169.254.169.254, and the host's and its
// network's services live on the rest.
var internalRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT, often a cluster's
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"), // NAT64 reaches IPv4 internals
}

// check says why the sandbox may not reach ap, or nil.
func (p addrPolicy) check(ap netip.AddrPort) error {
	a := ap.Addr().Unmap()
	for _, s := range p.self {
		sa := s.Addr().Unmap()
		if (sa == a || sa.IsUnspecified()) && (s.Port() == 0 || s.Port() == ap.Port()) {
			return fmt.Errorf("%s is agentbot itself", ap)
		}
	}
	if !internal(a) {
		return nil
	}
	for _, c := range p.allowCIDRs {
		if c.Contains(a) {
			return nil
		}
	}
	return fmt.Errorf("%s is an internal address (loopback, link-local, private or reserved)", a)
}

func internal(a netip.Addr) bool {
	if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsPrivate() ||
		a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast() || !a.IsValid() {
		return true
	}
	for _, r := range internalRanges {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// hostAddrs lists every address of the machine's interfaces, any port: a
// sandbox reaching the host's own public address reaches its services.
func hostAddrs() ([]netip.AddrPort, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("gateway: list interface addresses: %w", err)
	}
	var out []netip.AddrPort
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(n.IP); ok {
			out = append(out, netip.AddrPortFrom(ip.Unmap(), 0))
		}
	}
	return out, nil
}

// resolve looks host up and returns the addresses the sandbox may reach,
// in the resolver's order, or an error naming why none may be reached. A
// name whose addresses are partly internal is refused as a whole: a
// rebinding answer must not win by ordering.
func (p addrPolicy) resolve(ctx context.Context, r Resolver, host string, port int) ([]netip.AddrPort, error) {
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		found, err := r.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		addrs = found
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	out := make([]netip.AddrPort, 0, len(addrs))
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
		if err := p.check(ap); err != nil {
			return nil, &blockedError{fmt.Sprintf("%s resolves to %v", host, err)}
		}
		out = append(out, ap)
	}
	return out, nil
}
