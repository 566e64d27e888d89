package network

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/store"
)

// Finding is one result of Doctor.
type Finding struct {
	Problem bool   `json:"problem"`
	Text    string `json:"text"`
	Fix     string `json:"fix,omitempty"`
}

// Doctor checks what could stop ctnet's networks from working on this host:
// forwarding, its own bridges and tables, and other tables that drop forwarded
// traffic.
func (m *Manager) Doctor() ([]Finding, error) {
	var out []Finding
	ok := func(format string, args ...any) { out = append(out, Finding{Text: fmt.Sprintf(format, args...)}) }
	bad := func(fix, format string, args ...any) {
		out = append(out, Finding{Problem: true, Text: fmt.Sprintf(format, args...), Fix: fix})
	}
	var networks []*store.Network
	var containers []*store.Container
	var want firewall.State
	err := m.view(func(tx *store.Tx) (err error) {
		if networks, err = tx.Networks(); err != nil {
			return err
		}
		if containers, err = tx.Containers(); err != nil {
			return err
		}
		want, err = m.desiredFirewall(tx)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Macvlan networks need no forwarding, bridge or tables: only their parent.
	var bridged []*store.Network
	for _, n := range networks {
		if !isMacvlan(n) {
			bridged = append(bridged, n)
		} else if _, err := link.ByName(m.host, n.Parent); errors.Is(err, link.ErrNotFound) {
			bad("create the interface again, or remove the network", "parent %s of macvlan network %s is gone from the host: its containers cannot be connected", n.Parent, n.Name)
		} else if err != nil {
			return nil, err
		}
	}
	networks = bridged
	conn, err := m.host.NFT()
	if err != nil {
		return nil, err
	}
	rec, err := firewall.ReadRecord(conn)
	if err != nil {
		return nil, err
	}
	if owner := rec.Owner; owner != "" && owner != m.stateDir {
		if rootExists(owner) {
			bad(fmt.Sprintf("use `ctnet --root %s`, or give this root a network namespace of its own", owner),
				"ctnet's firewall tables here belong to the ctnet root %s, not to %s", owner, m.stateDir)
		} else {
			bad("run `ctnet gc`: it takes the tables over and removes what the other root left",
				"ctnet's firewall tables here belong to the ctnet root %s, which no longer exists", owner)
		}
	} else if rec.Present && !rec.Current {
		bad("run `ctnet gc` (or any command that changes something): it rebuilds them",
			"ctnet's firewall tables were built by an older ctnet, whose rules lack this one's fixes")
	}
	if len(networks) > 0 {
		if v, err := m.host.ReadSysctl("net/ipv4/ip_forward"); err != nil {
			return nil, err
		} else if v != "1" {
			bad("run `ctnet gc`, or `sysctl -w net.ipv4.ip_forward=1`", "IPv4 forwarding is off: containers cannot reach beyond the host")
		} else {
			ok("IPv4 forwarding is on")
		}
		if slices.ContainsFunc(networks, func(n *store.Network) bool { return n.Subnet6.IsValid() }) {
			if v, err := m.host.ReadSysctl("net/ipv6/conf/all/forwarding"); err != nil {
				return nil, err
			} else if v != "1" {
				bad("run `ctnet gc`, or `sysctl -w net.ipv6.conf.all.forwarding=1`", "IPv6 forwarding is off: containers cannot reach beyond the host over IPv6")
			} else {
				ok("IPv6 forwarding is on")
			}
		}
		for _, n := range networks {
			if _, err := link.ByName(m.host, n.Bridge); errors.Is(err, link.ErrNotFound) {
				bad("run `ctnet gc` to recreate it", "bridge %s of network %s is missing", n.Bridge, n.Name)
			} else if err != nil {
				return nil, err
			}
		}
		extra, missing, err := firewall.Diff(conn, want)
		if err != nil {
			return nil, err
		}
		structure, err := firewall.Structure(conn)
		if err != nil {
			return nil, err
		}
		missing = append(missing, structure...)
		if len(extra)+len(missing) > 0 {
			bad("run `ctnet gc` to rebuild ctnet's tables from its state",
				"ctnet's firewall tables differ from its state (%d unexpected, %d missing entries)", len(extra), len(missing))
		} else {
			ok("ctnet's firewall tables match its state")
		}
	}
	if len(networks) > 0 && !m.rootless {
		if err := m.doctorFastPath(networks, containers, ok, bad); err != nil {
			return nil, err
		}
	}
	foreign, err := firewall.ForeignDropChains(conn)
	if err != nil {
		return nil, err
	}
	for _, f := range foreign {
		bad(foreignFix(f, networks), "%s drops forwarded traffic it does not accept, including ctnet's", f)
	}
	if len(foreign) == 0 {
		ok("no other table drops forwarded traffic")
	}
	if v, err := m.host.ReadSysctl("net/bridge/bridge-nf-call-iptables"); err == nil && v == "1" {
		if len(foreign) > 0 {
			bad("`sysctl -w net.bridge.bridge-nf-call-iptables=0`, or accept the bridges in the chains above",
				"br_netfilter passes bridged traffic through iptables: those chains also drop traffic between containers of one network")
		} else {
			ok("br_netfilter is loaded (bridged traffic also passes iptables)")
		}
	}
	var legacy []byte
	m.host.Do(func() error {
		legacy, _ = os.ReadFile("/proc/thread-self/net/ip_tables_names")
		return nil
	})
	if names := strings.Fields(string(legacy)); len(names) > 0 {
		bad("check `iptables-legacy -S FORWARD`: a DROP policy or rule there needs rules accepting ctnet's bridges",
			"iptables-legacy tables exist (%s); ctnet cannot read them through nftables", strings.Join(names, ", "))
	}
	return out, nil
}

func foreignFix(f firewall.ForeignChain, networks []*store.Network) string {
	bridge := DefaultBridge
	if len(networks) > 0 {
		bridge = networks[0].Bridge
	}
	if (f.Family == "ip" || f.Family == "ip6") && f.Table == "filter" && f.Chain == "FORWARD" {
		return fmt.Sprintf("the chain belongs to iptables (Docker, firewalld or a script): for each ctnet bridge run `iptables -I FORWARD -i %s -j ACCEPT` and `iptables -I FORWARD -o %s -j ACCEPT` (or add them to DOCKER-USER when Docker owns it)", bridge, bridge)
	}
	return fmt.Sprintf("accept ctnet's bridges in that chain: `nft insert rule %s %s %s iifname %q accept` and `nft insert rule %s %s %s oifname %q accept` for each bridge, or set its policy to accept",
		f.Family, f.Table, f.Chain, bridge, f.Family, f.Table, f.Chain, bridge)
}
