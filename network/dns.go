package network

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/internal/embeddns"
	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/store"
)

// serveDNS starts container c's embedded DNS server at 127.0.0.11 inside its
// namespace, where its resolv.conf points, and returns what stops it. Run starts
// the server before c's process, and Wait stops it before releasing c's network,
// since the server's sockets hold the namespace. Containers
// without one (other modes, attached namespaces, an unprivileged user's containers,
// whose user-mode network has its own) get a stop that does nothing.
func (m *Manager) serveDNS(c *Container) (stop func(), err error) {
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
	names := &nameTable{m: m, id: c.ID, resolvers: c.Resolvers}
	srv.Serve(embeddns.Config{Lookup: names.lookup, Upstreams: names.upstreams, Log: m.log})
	return func() { srv.Close() }, nil
}

// nameTable answers names, and whether queries may leave, from the store, read
// again whenever the state file has changed since the last read: a container
// started a moment ago resolves at once, and a container that connect and
// disconnect have left only on internal networks stops forwarding at once.
type nameTable struct {
	m         *Manager
	id        string
	resolvers []netip.AddrPort

	mu     sync.Mutex
	stamp  fileStamp
	addrs  map[string][]netip.Addr // nil until read, and after a failed read
	wayOut bool
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func (t *nameTable) lookup(name string) ([]netip.Addr, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.refresh() {
		return nil, false
	}
	a, ok := t.addrs[name]
	return a, ok
}

// upstreams are the container's resolvers while it is on a network with a way
// out (as in Docker, any network that is not internal), else none.
func (t *nameTable) upstreams() []netip.AddrPort {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.refresh() || !t.wayOut {
		return nil
	}
	return t.resolvers
}

// refresh reads the store again if the state file changed, and says whether the
// table holds what it says; when the store cannot be read, nothing is known, and
// nothing forwarded.
func (t *nameTable) refresh() bool {
	st, err := os.Stat(filepath.Join(t.m.stateDir, store.FileName))
	if err != nil {
		t.addrs = nil
		return false
	}
	if stamp := (fileStamp{st.ModTime(), st.Size()}); stamp != t.stamp || t.addrs == nil {
		addrs, wayOut, err := t.read()
		if err != nil {
			t.m.log.Warn("embedded dns: read the names", "err", err)
			t.addrs = nil
			return false
		}
		t.stamp, t.addrs, t.wayOut = stamp, addrs, wayOut
	}
	return true
}

// read maps the names and aliases of the running containers that share a network
// with the table's container, as NAME and NAME.NETWORK (lower case, as DNS
// compares), to their addresses on those networks, and says whether one of the
// container's networks is not internal. Two containers may share an alias: the
// name then has both addresses.
func (t *nameTable) read() (addrs map[string][]netip.Addr, wayOut bool, err error) {
	var containers []*store.Container
	open := map[string]bool{} // network ID: not internal
	err = t.m.view(func(tx *store.Tx) error {
		cs, err := tx.Containers()
		if err != nil {
			return err
		}
		for _, c := range cs {
			if t.m.stateOf(c) != store.StateExited {
				containers = append(containers, c)
			}
		}
		networks, err := tx.Networks()
		for _, n := range networks {
			open[n.ID] = !n.Internal
		}
		return err
	})
	if err != nil {
		return nil, false, err
	}
	slices.SortStableFunc(containers, func(a, b *store.Container) int { return b.Created.Compare(a.Created) })
	mine := map[string]bool{}
	for _, c := range containers {
		if c.ID == t.id {
			for _, a := range c.Attachments {
				mine[a.NetworkID] = true
				wayOut = wayOut || open[a.NetworkID]
			}
		}
	}
	addrs = map[string][]netip.Addr{}
	for _, c := range containers {
		for _, a := range c.Attachments {
			if !mine[a.NetworkID] {
				continue
			}
			for _, name := range append([]string{c.Name}, c.Aliases...) {
				name = strings.ToLower(name)
				full := name + "." + strings.ToLower(a.Network)
				for _, ip := range []netip.Addr{a.IP, a.IP6} {
					if ip.IsValid() {
						addrs[name] = append(addrs[name], ip)
						addrs[full] = append(addrs[full], ip)
					}
				}
			}
		}
	}
	return addrs, wayOut, nil
}
