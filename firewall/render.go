package firewall

import (
	"fmt"
	"net/netip"
	"strings"
)

// Render returns the nft script that builds the same tables as Rebuild does for the
// state: what ctnet programs, in the form people read (`nft -f` accepts it).
func Render(s State) string {
	s = s.Sorted()
	var b strings.Builder
	renderTable(&b, "inet", inetSets, inetChains, inetRules(), inetElements(s))
	renderTable(&b, "bridge", bridgeSets, bridgeChains, bridgeRules(), bridgeElements(s))
	return b.String()
}

func inetElements(s State) map[string][]string {
	out := map[string][]string{}
	if s.Owner != "" {
		out[setOwner] = []string{fmt.Sprintf("%q comment %q", ownerKey, s.Owner), fmt.Sprintf("%q comment %q", rulesKey, rulesVersion())}
	}
	for _, n := range s.Networks {
		br := fmt.Sprintf("%q", n.Bridge)
		out[setBridges] = append(out[setBridges], br)
		out[setSameBridge] = append(out[setSameBridge], br+" . "+br)
		for _, family := range []struct {
			subnet               netip.Prefix
			subnets, masqueraded string
		}{{n.Subnet, setSubnets, setMasqSubnets}, {n.Subnet6, setSubnets6, setMasqSubnets6}} {
			if !family.subnet.IsValid() {
				continue
			}
			subnet := family.subnet.Masked().String() + " . " + br
			out[family.subnets] = append(out[family.subnets], subnet)
			if n.Masquerade && !n.Internal {
				out[family.masqueraded] = append(out[family.masqueraded], subnet)
			}
		}
		if n.NoICC {
			out[setNoICC] = append(out[setNoICC], br)
		}
		if n.Internal {
			out[setInternal] = append(out[setInternal], br)
		} else if n.Masquerade {
			out[setNATBridges] = append(out[setNATBridges], br)
			for _, p := range n.NonMasquerade {
				out[setUnmasked] = append(out[setUnmasked], p.Masked().String()+" . "+br)
			}
		}
	}
	for _, p := range s.Ports {
		val := fmt.Sprintf("%s . %d", p.ContainerIP, p.ContainerPort)
		ports, portsAny := mapPorts, mapPortsAny
		if p.ContainerIP.Is6() {
			ports, portsAny = mapPorts6, mapPortsAny6
		}
		if p.AnyAddress() {
			out[portsAny] = append(out[portsAny], fmt.Sprintf("%s . %d : %s", p.Proto, p.HostPort, val))
		} else {
			out[ports] = append(out[ports], fmt.Sprintf("%s . %s . %d : %s", p.HostIP, p.Proto, p.HostPort, val))
		}
	}
	return out
}

func bridgeElements(s State) map[string][]string {
	out := map[string][]string{}
	for _, ep := range s.Endpoints {
		port := fmt.Sprintf("%q", ep.HostVeth)
		out[setPorts] = append(out[setPorts], port)
		out[setPortMACs] = append(out[setPortMACs], port+" . "+ep.MAC.String())
		if ep.IP.IsValid() {
			out[setPortIPs] = append(out[setPortIPs], port+" . "+ep.IP.String())
		}
		if ep.IP6.IsValid() {
			out[setPortIPs6] = append(out[setPortIPs6], port+" . "+ep.IP6.String(), port+" . "+LinkLocal(ep.MAC).String())
		}
		if ep.NoICC {
			out[setNoICC] = append(out[setNoICC], port)
		}
	}
	return out
}

func typeNames(s setSpec) (key, data string) {
	names := func(types []string) string { return strings.Join(types, " . ") }
	var k, d []string
	for _, t := range s.key {
		k = append(k, t.Name)
	}
	for _, t := range s.data {
		d = append(d, t.Name)
	}
	return names(k), names(d)
}

func renderTable(b *strings.Builder, family string, sets []setSpec, chains []chainSpec, rules []ruleSpec, els map[string][]string) {
	fmt.Fprintf(b, "table %s %s {\n", family, TableName)
	for _, s := range sets {
		key, data := typeNames(s)
		kind, typ := "set", key
		if s.data != nil {
			kind, typ = "map", key+" : "+data
		}
		fmt.Fprintf(b, "\t%s %s {\n\t\ttype %s\n", kind, s.name, typ)
		if s.interval {
			b.WriteString("\t\tflags interval\n")
		}
		if e := els[s.name]; len(e) > 0 {
			fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(e, ",\n\t\t\t     "))
		}
		b.WriteString("\t}\n\n")
	}
	for i, c := range chains {
		fmt.Fprintf(b, "\tchain %s {\n", c.name)
		if c.hook != nil {
			fmt.Fprintf(b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.typ, hookName(uint32(*c.hook)), c.prioText)
		}
		for _, r := range rules {
			if r.chain != c.name {
				continue
			}
			b.WriteString("\t\t" + r.text)
			if r.comment != "" {
				fmt.Fprintf(b, " comment %q", r.comment)
			}
			b.WriteString("\n")
		}
		b.WriteString("\t}\n")
		if i < len(chains)-1 {
			b.WriteString("\n")
		}
	}
	b.WriteString("}\n")
}

func hookName(h uint32) string {
	return [...]string{"prerouting", "input", "forward", "output", "postrouting"}[h]
}
