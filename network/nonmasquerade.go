package network

import (
	"net/netip"
	"slices"
)

// parseNonMasquerade reads a spec's non-masquerade ranges: IPv4 prefixes, none inside
// another (the firewall holds them as intervals, which must not overlap), on a network
// that masquerades at all.
func parseNonMasquerade(spec NetworkSpec, masquerade bool) ([]netip.Prefix, error) {
	if len(spec.NonMasquerade) == 0 {
		return nil, nil
	}
	if !masquerade {
		return nil, badField("NonMasquerade", spec.NonMasquerade[0], "the network does not masquerade: use non-masquerade ranges only on a network that does")
	}
	var out []netip.Prefix
	for _, s := range spec.NonMasquerade {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return nil, badField("NonMasquerade", s, "use IPv4 CIDRs such as 10.244.0.0/16")
		}
		p = p.Masked()
		for _, q := range out {
			if q.Overlaps(p) {
				return nil, badField("NonMasquerade", s, "it overlaps %s: use ranges that do not overlap", q)
			}
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out, nil
}

// sameNonMasquerade reports whether the ranges asked for are those a network has;
// ranges that do not parse are not.
func sameNonMasquerade(have []netip.Prefix, want []string) bool {
	if len(have) != len(want) {
		return false
	}
	for _, s := range want {
		p, err := netip.ParsePrefix(s)
		if err != nil || !slices.Contains(have, p.Masked()) {
			return false
		}
	}
	return true
}
