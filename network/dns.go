package network

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/internal/embeddns"
	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/store"
)

// ServeDNS starts container c's embedded DNS server at 127.0.0.11 inside its
// namespace, where its resolv.conf points, and returns what stops it. The caller is
// c's supervisor: it starts the server before c's process and stops it before
// releasing c's network, since the server's sockets hold the namespace. Containers
// without one (other modes, attached namespaces, an unprivileged user's containers,
// whose user-mode network has its own) get a stop that does nothing.
func (m *Manager) ServeDNS(c *store.Container) (stop func(), err error) {
	stop = func() {}
	if !c.EmbeddedDNS || m.rootless {
		return stop, nil
	}
	ns, err := netns.Open(c.NetNS)
	if err != nil {
		return stop, err
	}
	defer ns.Close()
	srv, err := embeddns.Listen(ns)
	if err != nil {
		return stop, err
	}
	conn, err := ns.NFT()
	if err == nil {
		udp, tcp := srv.Ports()
		err = firewall.RedirectDNS(conn, embeddns.Address, udp, tcp)
	}
	if err != nil {
		srv.Close()
		return stop, err
	}
	names := &nameTable{m: m, id: c.ID}
	srv.Serve(embeddns.Config{Lookup: names.lookup, Upstreams: c.Resolvers, Log: m.log})
	return func() { srv.Close() }, nil
}

// nameTable answers names from the store, read again whenever the state file has
// changed since the last read: a container started a moment ago resolves at once.
type nameTable struct {
	m  *Manager
	id string

	mu    sync.Mutex
	stamp fileStamp
	addrs map[string][]netip.Addr
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func (t *nameTable) lookup(name string) ([]netip.Addr, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := os.Stat(filepath.Join(t.m.stateDir, store.FileName))
	if err != nil {
		return nil, false
	}
	if stamp := (fileStamp{st.ModTime(), st.Size()}); stamp != t.stamp || t.addrs == nil {
		addrs, err := t.read()
		if err != nil {
			t.m.log.Warn("embedded dns: read the names", "err", err)
			return nil, false
		}
		t.stamp, t.addrs = stamp, addrs
	}
	a, ok := t.addrs[name]
	return a, ok
}

// read maps the names and aliases of the running containers that share a network
// with the table's container, as NAME and NAME.NETWORK (lower case, as DNS
// compares), to their addresses on those networks. Two containers may share an
// alias: the name then has both addresses.
func (t *nameTable) read() (map[string][]netip.Addr, error) {
	containers, err := t.m.Containers(false)
	if err != nil {
		return nil, err
	}
	mine := map[string]bool{}
	for _, c := range containers {
		if c.ID == t.id {
			for _, a := range c.Attachments {
				mine[a.NetworkID] = true
			}
		}
	}
	addrs := map[string][]netip.Addr{}
	for _, c := range containers {
		for _, a := range c.Attachments {
			if !mine[a.NetworkID] {
				continue
			}
			for _, name := range append([]string{c.Name}, c.Aliases...) {
				name = strings.ToLower(name)
				addrs[name] = append(addrs[name], a.IP)
				full := name + "." + strings.ToLower(a.Network)
				addrs[full] = append(addrs[full], a.IP)
			}
		}
	}
	return addrs, nil
}
