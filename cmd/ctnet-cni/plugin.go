package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/ctnet/ctnet/internal/linkreaper"
	"github.com/ctnet/ctnet/network"
)

// netConf is the network configuration a runtime passes on stdin. The network is
// created on the first ADD with these settings; later ADDs must agree with them.
type netConf struct {
	types.PluginConf
	Subnet   string `json:"subnet,omitempty"`  // default: a free one from ctnet's pools
	Gateway  string `json:"gateway,omitempty"` // default: the subnet's first address
	Bridge   string `json:"bridge,omitempty"`  // default: ct-<network id>
	MTU      int    `json:"mtu,omitempty"`     // default: that of the host's default route
	Internal bool   `json:"internal,omitempty"`
	IPMasq   *bool  `json:"ipMasq,omitempty"` // default true
	// NonMasqueradeCIDRs are destinations reached with the pod's own address
	// (ip-masq-agent's key: the cluster's pod range), whose hosts reach pods by routing.
	NonMasqueradeCIDRs []string `json:"nonMasqueradeCIDRs,omitempty"`
	// IPv6 gives the network IPv6 too: subnet6, or a unique-local /64 from ctnet's
	// pool, with gateway6 or its first address.
	IPv6     bool   `json:"ipv6,omitempty"`
	Subnet6  string `json:"subnet6,omitempty"`
	Gateway6 string `json:"gateway6,omitempty"`
	// Root is the ctnet root; by default the CLI's (/var/lib/ctnet and /run/ctnet), so
	// `ctnet ps` lists what the runtime attached.
	Root          string `json:"root,omitempty"`
	RuntimeConfig struct {
		PortMappings []portMapping `json:"portMappings,omitempty"`
		// IPs is the ips capability: the address to give (Podman's --ip), with or
		// without a prefix length.
		IPs []string `json:"ips,omitempty"`
		// MAC is the mac capability: the interface's MAC address.
		MAC string `json:"mac,omitempty"`
		// Bandwidth is the bandwidth capability, as the bandwidth plugin takes it:
		// Kubernetes' kubernetes.io/ingress-bandwidth and egress-bandwidth annotations
		// arrive through it.
		Bandwidth *bandwidthLimits `json:"bandwidth,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// bandwidthLimits is the bandwidth capability's entry: rates in bits per second,
// bursts in bits, from the container's side (ingress into it).
type bandwidthLimits struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// limits are the bandwidth capability's limits, none without it; the library
// checks them.
func (c *netConf) limits() network.Bandwidth {
	b := c.RuntimeConfig.Bandwidth
	if b == nil {
		return network.Bandwidth{}
	}
	return network.Bandwidth{IngressRate: b.IngressRate, IngressBurst: b.IngressBurst, EgressRate: b.EgressRate, EgressBurst: b.EgressBurst}
}

// portMapping is the portMappings capability's entry, as the portmap plugin takes it.
type portMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

func parseConf(stdin []byte) (*netConf, error) {
	conf := &netConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode network configuration", err.Error())
	}
	return conf, nil // skel has checked that it has a name
}

// portSpecs turns port mappings into ctnet's, through the parser of -p so that both
// accept and refuse the same. Mappings on an IPv6 host address are skipped, as the
// portmap plugin skips those of the other family than the container's: one without an
// address already publishes on both families of a dual-stack network.
func (c *netConf) portSpecs() ([]network.PortSpec, error) {
	var out []network.PortSpec
	for _, pm := range c.RuntimeConfig.PortMappings {
		if ip, err := netip.ParseAddr(pm.HostIP); err == nil && ip.Is6() && !ip.Is4In6() {
			continue
		}
		proto := strings.ToLower(pm.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		s := fmt.Sprintf("%d:%d/%s", pm.HostPort, pm.ContainerPort, proto)
		if pm.HostIP != "" {
			s = pm.HostIP + ":" + s
		}
		p, err := network.ParsePort(s)
		if err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("port mapping %s: %s", s, confText(err)), "")
		}
		out = append(out, p)
	}
	return out, nil
}

// requestedIP is the IPv4 and IPv6 address the ips capability asks for, each "" for
// the next free one.
func (c *netConf) requestedIP() (string, string, error) {
	var v4, v6 []string
	for _, s := range c.RuntimeConfig.IPs {
		addr, _, _ := strings.Cut(s, "/")
		ip, err := netip.ParseAddr(addr)
		if err != nil {
			return "", "", types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("bad address %q in runtimeConfig.ips: use an IPv4 address such as 10.88.0.5/16, or an IPv6 one", s), "")
		}
		// Podman 4.3's network reload repeats a container's --ip.
		switch is4 := ip.Is4() || ip.Is4In6(); {
		case is4 && !slices.Contains(v4, ip.Unmap().String()):
			v4 = append(v4, ip.Unmap().String())
		case !is4 && !slices.Contains(v6, ip.String()):
			v6 = append(v6, ip.String())
		}
	}
	if len(v4) > 1 || len(v6) > 1 {
		return "", "", types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("runtimeConfig.ips asks for %d IPv4 and %d IPv6 addresses: a container has one of each family per network", len(v4), len(v6)), "")
	}
	first := func(list []string) string {
		if len(list) == 0 {
			return ""
		}
		return list[0]
	}
	return first(v4), first(v6), nil
}

// containerName is the ctnet container standing for a CNI container ID: "cni-" and the
// ID. An ID that would make the name longer than ctnet's 64 characters keeps its start
// and a hash of the whole, and one with characters a name cannot hold is hashed.
func containerName(id string) string {
	const prefix, maxLen = "cni-", 64
	sum := sha256.Sum256([]byte(id))
	hash := hex.EncodeToString(sum[:])
	valid := id != "" && strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == ""
	switch {
	case !valid:
		return prefix + hash[:32]
	case len(prefix)+len(id) <= maxLen:
		return prefix + id
	default:
		return prefix + id[:maxLen-len(prefix)-13] + "-" + hash[:12]
	}
}

// withManager parses the configuration and runs fn with a manager of its root.
func withManager(args *skel.CmdArgs, fn func(conf *netConf, m *network.Manager) error) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	// The runtime holds the host ports it asks to publish (rootful Podman keeps them
	// open in conmon), as the portmap plugin expects.
	m, err := network.New(network.Options{Root: conf.Root, CallerReservesHostPorts: true, DeleteRetired: linkreaper.Start})
	if err != nil {
		return err
	}
	defer m.Close()
	err = fn(conf, m)
	var fe *network.FieldError
	if errors.As(err, &fe) {
		code := uint(types.ErrInvalidNetworkConfig)
		if fe.Field == "NetNS" || fe.Field == "IfName" {
			code = types.ErrInvalidEnvironmentVariables
		}
		return types.NewError(code, confText(err), "")
	}
	return err
}

// confTerm names the library's spec fields as the runtime gives them: keys of the
// network configuration, or the plugin's environment.
var confTerm = map[string]string{
	"IP": "runtimeConfig.ips", "MAC": "runtimeConfig.mac", "Ports": "runtimeConfig.portMappings", "NetNS": "CNI_NETNS", "IfName": "CNI_IFNAME",
	"Subnet": "subnet", "Gateway": "gateway", "Bridge": "bridge", "MTU": "mtu", "Network": "name",
	"NonMasquerade":         "nonMasqueradeCIDRs",
	"Bandwidth.IngressRate": "runtimeConfig.bandwidth.ingressRate", "Bandwidth.IngressBurst": "runtimeConfig.bandwidth.ingressBurst",
	"Bandwidth.EgressRate": "runtimeConfig.bandwidth.egressRate", "Bandwidth.EgressBurst": "runtimeConfig.bandwidth.egressBurst",
	"IP6": "runtimeConfig.ips", "Subnet6": "subnet6", "Gateway6": "gateway6",
}

// confText is err's message with the spec field it names written in CNI's terms.
func confText(err error) string {
	var fe *network.FieldError
	if !errors.As(err, &fe) {
		return err.Error()
	}
	return strings.Replace(err.Error(), fe.Error(), fe.Render(func(field string) string {
		if t, ok := confTerm[field]; ok {
			return t
		}
		return field
	}), 1)
}

// ensureNetwork returns the configuration's network, creating it on first use.
func ensureNetwork(m *network.Manager, conf *netConf) (*network.Network, error) {
	n, err := m.EnsureNetwork(context.Background(), network.NetworkSpec{
		Name: conf.Name, Subnet: conf.Subnet, Gateway: conf.Gateway, Bridge: conf.Bridge,
		MTU: conf.MTU, Internal: conf.Internal, Masquerade: conf.IPMasq, NonMasquerade: conf.NonMasqueradeCIDRs,
		IPv6: conf.IPv6, Subnet6: conf.Subnet6, Gateway6: conf.Gateway6,
	})
	if errors.Is(err, network.ErrConflict) {
		// It differs, its subnet overlaps another's or a host route, or another root
		// owns this host: each says so.
		return nil, types.NewError(types.ErrInvalidNetworkConfig, confText(err), "")
	}
	return n, err
}

// findContainer returns the container standing for a CNI container ID, or nil.
func findContainer(m *network.Manager, id string) (*network.Container, error) {
	c, err := m.Container(containerName(id))
	if errors.Is(err, network.ErrNotFound) {
		return nil, nil
	}
	return c, err
}

func attachmentOn(c *network.Container, networkName string) *network.Attachment {
	for i := range c.Attachments {
		if c.Attachments[i].Network == networkName {
			return &c.Attachments[i]
		}
	}
	return nil
}

func cmdAdd(args *skel.CmdArgs) error {
	return withManager(args, func(conf *netConf, m *network.Manager) error { return add(args, conf, m) })
}

func add(args *skel.CmdArgs, conf *netConf, m *network.Manager) (err error) {
	ports, err := conf.portSpecs()
	if err != nil {
		return err
	}
	ip, ip6, mac, err := requestedAddresses(conf, args.Args)
	if err != nil {
		return err
	}
	c, err := replaceReleased(args, conf, m)
	if err != nil {
		return err
	}
	if conf.delegatesIPAM() && (c == nil || attachmentOn(c, conf.Name) == nil) {
		// A new attachment: its address is the IPAM plugin's, given back if ADD fails.
		var lease *ipamLease
		if lease, err = ipamAdd(conf, args.StdinData); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				err = withIPAMError(err, ipamDel(conf, args.StdinData))
			}
		}()
		lease.fillNetwork(conf)
		ip = lease.addr.Addr().String()
		if lease.addr6.IsValid() {
			ip6 = lease.addr6.Addr().String()
		}
	}
	n, err := ensureNetwork(m, conf)
	if err != nil {
		return err
	}
	var att *network.Attachment
	switch {
	case c == nil:
		c, err = m.Create(context.Background(), network.ContainerSpec{
			Name: containerName(args.ContainerID), Network: network.OnNetwork(n.Name), NetNS: args.Netns, IfName: args.IfName, IP: ip, IP6: ip6, MAC: mac, Ports: ports,
			Bandwidth: conf.limits(),
		})
		if err != nil {
			return err
		}
		att = &c.Attachments[0]
	case !sameFile(c.NetNS, args.Netns):
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("container %s is attached with namespace %s, not %s: DEL it first", args.ContainerID, c.NetNS, args.Netns), "")
	case attachmentOn(c, n.Name) != nil:
		// A repeated ADD: the attachment it asks for exists.
		if att = attachmentOn(c, n.Name); att.IfName != args.IfName {
			return types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("container %s is already on network %s as %s", args.ContainerID, n.Name, att.IfName), "")
		}
	default:
		// Podman gives every network of a container its port mappings: those the
		// first network published are already there.
		if len(ports) > 0 && !publishes(c, ports) {
			return types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("port mappings go with a container's first network: %s is on %s already, with other ports", args.ContainerID, c.Attachments[0].Network), "")
		}
		if att, err = m.Connect(context.Background(), n.Name, c.Name, network.ConnectOptions{IP: ip, IP6: ip6, MAC: mac, IfName: args.IfName, Bandwidth: conf.limits()}); err != nil {
			return err
		}
	}
	res := result(conf, n, att, args.Netns)
	host, err := m.HostLink(att.HostVeth)
	if err != nil {
		return err
	}
	res.Interfaces[0].Mac = host.MAC
	return types.PrintResult(res, conf.CNIVersion)
}

// replaceReleased returns the container standing for the CNI container ID, or nil;
// a record that is no longer attached is removed first. ctnet gc releases an
// attachment whose namespace went away, and a runtime that never sends DEL (ctr 1.6,
// for detached containers) then reuses the ID: the stale record must not block it,
// nor the IPAM plugin's stale address for it.
func replaceReleased(args *skel.CmdArgs, conf *netConf, m *network.Manager) (*network.Container, error) {
	c, err := findContainer(m, args.ContainerID)
	if err != nil || c == nil || c.State != network.StateExited {
		return c, err
	}
	if err := m.Remove(context.Background(), c.Name, false); err != nil && !errors.Is(err, network.ErrNotFound) {
		return nil, err
	}
	return nil, ipamDel(conf, args.StdinData)
}

// result describes an attachment as the spec's ADD result: the host veth, the
// interface in the sandbox with its address of each family, and the default routes
// on eth0.
func result(conf *netConf, n *network.Network, att *network.Attachment, netns string) *types100.Result {
	r := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: att.HostVeth},
			{Name: att.IfName, Mac: att.MAC, Mtu: n.MTU, Sandbox: netns},
		},
		DNS: conf.DNS,
	}
	for _, family := range []struct {
		ip, gateway netip.Addr
		bits        int
	}{{att.IP, att.Gateway, att.PrefixLen}, {att.IP6, att.Gateway6, att.PrefixLen6}} {
		if !family.ip.IsValid() {
			continue
		}
		r.IPs = append(r.IPs, &types100.IPConfig{
			Interface: types100.Int(1),
			Address:   net.IPNet{IP: family.ip.AsSlice(), Mask: net.CIDRMask(family.bits, family.ip.BitLen())},
			Gateway:   family.gateway.AsSlice(),
		})
		if att.IfName == "eth0" && !n.Internal {
			r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: make(net.IP, family.ip.BitLen()/8), Mask: net.CIDRMask(0, family.ip.BitLen())}, GW: family.gateway.AsSlice()})
		}
	}
	return r
}

func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// cmdDel releases the container's attachment on the network: the container itself
// when it was its last, leaving the namespace to the runtime. What is already gone
// is not an error, as the spec asks, and the namespace may be gone too.
func cmdDel(args *skel.CmdArgs) error {
	return withManager(args, func(conf *netConf, m *network.Manager) error {
		c, err := findContainer(m, args.ContainerID)
		if err == nil && c != nil {
			err = release(m, c, conf.Name)
		}
		// The IPAM plugin's address is freed also when ctnet's part is already gone.
		return withIPAMError(err, ipamDel(conf, args.StdinData))
	})
}

func release(m *network.Manager, c *network.Container, networkName string) error {
	if attachmentOn(c, networkName) == nil {
		return nil
	}
	if len(c.Attachments) == 1 {
		return m.Remove(context.Background(), c.Name, false)
	}
	return m.Disconnect(context.Background(), networkName, c.Name)
}

// cmdCheck confirms that the attachment holds what ADD's result promised, in the
// store and in the kernel (check.go), and that the IPAM plugin still holds its address.
func cmdCheck(args *skel.CmdArgs) error {
	return withManager(args, func(conf *netConf, m *network.Manager) error { return check(args, conf, m) })
}

func check(args *skel.CmdArgs, conf *netConf, m *network.Manager) error {
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "decode prevResult", err.Error())
	}
	c, err := findContainer(m, args.ContainerID)
	if err != nil {
		return err
	}
	var att *network.Attachment
	if c != nil {
		att = attachmentOn(c, conf.Name)
	}
	if att == nil || att.IfName != args.IfName {
		return fmt.Errorf("container %s has no interface %s on network %s", args.ContainerID, args.IfName, conf.Name)
	}
	n, err := m.Network(conf.Name)
	if err != nil {
		return err
	}
	promised := result(conf, n, att, args.Netns)
	if conf.PrevResult != nil {
		if promised, err = types100.NewResultFromResult(conf.PrevResult); err != nil {
			return types.NewError(types.ErrDecodingFailure, "decode prevResult", err.Error())
		}
	}
	if err := verify(m, args.ContainerID, c, n, att, promised); err != nil {
		return err
	}
	return ipamCheck(conf, args.StdinData)
}

// cmdGC releases this network's attachments that the runtime no longer lists as
// valid. Only the plugin's own containers (named cni-…) are considered.
func cmdGC(args *skel.CmdArgs) error {
	return withManager(args, func(conf *netConf, m *network.Manager) error {
		return withIPAMError(collect(conf, m), ipamGC(conf, args.StdinData))
	})
}

func collect(conf *netConf, m *network.Manager) error {
	valid := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[containerName(a.ContainerID)+" "+a.IfName] = true
	}
	containers, err := m.Containers(true)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range containers {
		att := attachmentOn(c, conf.Name)
		if !strings.HasPrefix(c.Name, "cni-") || !c.Attached || att == nil || valid[c.Name+" "+att.IfName] {
			continue
		}
		if err := release(m, c, conf.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cmdStatus says whether ADD can work: the root's state can be read, and the IPAM
// plugin, if any, says it can give addresses.
func cmdStatus(args *skel.CmdArgs) error {
	err := withManager(args, func(conf *netConf, m *network.Manager) error {
		if _, err := m.Networks(); err != nil {
			return err
		}
		return ipamStatus(conf, args.StdinData)
	})
	var cniErr *types.Error
	if err != nil && !errors.As(err, &cniErr) {
		return types.NewError(types.ErrPluginNotAvailable, "ctnet's state cannot be read", err.Error())
	}
	return err
}
