package network

import (
	"net/netip"
	"strconv"

	"github.com/ctnet/ctnet/ipam"
	"github.com/ctnet/ctnet/store"
	"github.com/ctnet/ctnet/usernet/addrs"
)

// UserNetSpec is what run asks of a user-mode network; zero values are
// slirp4netns' defaults (10.0.2.0/24, MTU 65520).
type UserNetSpec struct {
	CIDR              string
	MTU               int
	AllowHostLoopback bool
}

func (s UserNetSpec) isZero() bool {
	return s.CIDR == "" && s.MTU == 0 && !s.AllowHostLoopback
}

const defaultUserNetMTU = 65520

// createRootless records an unprivileged user's container. Its namespaces are made
// by the rootless sandbox when it starts, so there is nothing to change in the
// kernel here.
func (m *Manager) createRootless(o *op, c *store.Container, spec ContainerSpec, dns []netip.AddrPort) error {
	if spec.NetNS != "" {
		return invalid("attach needs root: unprivileged users cannot connect namespaces to networks")
	}
	if spec.IP != "" {
		return invalid("--ip needs a ctnet network, which only root has: a user-mode network gives every container %s", UserNetGuest(addrs.DefaultSubnet()))
	}
	if spec.MAC != "" {
		return invalid("a MAC address needs a ctnet network, which only root has: a user-mode network chooses its own")
	}
	if spec.IP6 != "" {
		return invalid("--ip6 needs a ctnet network, which only root has: a user-mode network chooses its containers' addresses")
	}
	mode := spec.Network
	switch {
	case mode.Kind == "" || mode.Kind == ModeUserNet:
		c.Mode = store.ModeUserNet
		un, err := parseUserNet(spec.UserNet, dns)
		if err != nil {
			return err
		}
		c.UserNet = un
		for _, p := range spec.Ports {
			if p.Proto == "sctp" {
				return badField("Ports", p.String(), "user-mode networks publish tcp and udp only")
			}
		}
		ports, err := m.allocatePorts(o, spec.Ports, UserNetGuest(un.Subnet), netip.Addr{}, c.ID)
		if err != nil {
			return err
		}
		c.Ports = ports
		return nil
	case len(spec.Ports) > 0:
		return invalid("-p needs the user-mode network: it has no effect with --network %s", mode)
	case !spec.UserNet.isZero() || len(spec.DNS) > 0:
		return invalid("--cidr, --mtu, --dns and --allow-host-loopback configure the user-mode network: they have no effect with --network %s", mode)
	case mode.Kind == ModeNone:
		c.Mode = store.ModeNone
	case mode.Kind == ModeHost:
		c.Mode = store.ModeHost
	case mode.Kind == ModeContainer:
		ref := mode.Container
		target, err := o.tx.Container(ref)
		if err != nil {
			return notFound("container", ref, err)
		}
		if target.State == store.StateExited || !isAlive(target) {
			return tagged(ErrConflict, "container %s is not running: --network container:%s needs a running container", target.Name, ref)
		}
		switch target.Mode {
		case store.ModeHost:
			c.Mode = store.ModeHost
		case store.ModeContainer:
			c.Mode, c.SharedWith = store.ModeContainer, target.SharedWith
		default:
			c.Mode, c.SharedWith = store.ModeContainer, target.ID
		}
	default:
		return invalid("unprivileged users have no bridge networks: use --network usernet (the default), none, host or container:NAME, or run ctnet as root")
	}
	return nil
}

func parseUserNet(spec UserNetSpec, dns []netip.AddrPort) (*store.UserNet, error) {
	un := &store.UserNet{Subnet: addrs.DefaultSubnet(), MTU: defaultUserNetMTU, AllowHostLoopback: spec.AllowHostLoopback}
	if spec.CIDR != "" {
		p, err := ipam.ParseSubnet(spec.CIDR)
		if err != nil {
			return nil, &FieldError{Field: "UserNet.CIDR", Value: spec.CIDR, Err: err}
		}
		if p.Bits() > 24 {
			return nil, badField("UserNet.CIDR", spec.CIDR, "use a /24 or larger, for the gateway at .2, DNS at .3 and the container at .100")
		}
		un.Subnet = p
	}
	for _, d := range dns {
		if !d.Addr().Is4() {
			return nil, badField("DNS", d.Addr().String(), "the user-mode forwarder asks IPv4 resolvers")
		}
		if d.Port() == 0 {
			d = netip.AddrPortFrom(d.Addr(), 53)
		}
		un.Resolvers = append(un.Resolvers, d)
	}
	if spec.MTU != 0 {
		if spec.MTU < 1280 || spec.MTU > 65520 {
			return nil, badField("UserNet.MTU", strconv.Itoa(spec.MTU), "use a value from 1280 to 65520")
		}
		un.MTU = spec.MTU
	}
	return un, nil
}

// userNetAddrs are the addresses the user-mode stack derives from a subnet: the
// gateway, the DNS forwarder and the container's. p is checked when the container
// is made, so deriving cannot fail.
func userNetAddrs(p netip.Prefix) addrs.Addrs {
	a, _ := addrs.Of(p)
	return a
}

// UserNetGuest is the container's address in a user-mode subnet.
func UserNetGuest(p netip.Prefix) netip.Addr { return userNetAddrs(p).Guest }

// userNetIPv6 are the addresses of every user-mode network's IPv6 side, fd00::/64.
var userNetIPv6 = addrs.IPv6()
