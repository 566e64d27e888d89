package network

import (
	"path/filepath"

	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/netns"
	"github.com/ctnet/ctnet/store"
)

// ownNetNS creates the container's namespace under the root, with loopback up.
func (m *Manager) ownNetNS(o *op, c *store.Container) error {
	c.NetNS = filepath.Join(m.netnsDir(), c.ID)
	c.OwnsNetNS = true
	ns, err := netns.NewIn(o.journal, c.NetNS)
	if err != nil {
		return err
	}
	o.undo.push("create namespace "+c.NetNS, func() error { return netns.RemoveIn(o.journal, c.NetNS) })
	o.keep(ns)
	if err := link.LoopbackUp(ns); err != nil {
		return err
	}
	o.step("bring up loopback")
	return nil
}

// foreignNetNS attaches to a namespace someone else made, leaving it theirs.
func (m *Manager) foreignNetNS(o *op, c *store.Container, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return &FieldError{Field: "NetNS", Value: path, Err: err}
	}
	ns, err := netns.Open(abs)
	if err != nil {
		return &FieldError{Field: "NetNS", Value: path, Err: err}
	}
	o.keep(ns)
	if netns.Same(ns, m.host) {
		return invalid("--netns %s is the host's own namespace: attach a container's namespace", abs)
	}
	c.NetNS, c.Attached = abs, true
	if err := link.LoopbackUp(ns); err != nil {
		return err
	}
	o.step("bring up loopback")
	return nil
}

// shareNetNS makes c join the namespace of another, live container.
func (m *Manager) shareNetNS(o *op, c *store.Container, ref string) error {
	target, err := o.tx.Container(ref)
	if err != nil {
		return notFound("container", ref, err)
	}
	if target.State == store.StateExited || !isAlive(target) {
		return tagged(ErrConflict, "container %s is not running: --network container:%s needs a running container", target.Name, ref)
	}
	if target.Mode == store.ModeHost {
		c.Mode = store.ModeHost
		return nil
	}
	c.Mode, c.SharedWith = store.ModeContainer, target.ID
	if target.SharedWith != "" {
		c.SharedWith = target.SharedWith
	}
	c.NetNS = target.NetNS
	return nil
}

// removeNamespace unpins a namespace ctnet made, first ending the processes still in
// it if killLeftovers, and says how many it ended.
func (m *Manager) removeNamespace(o *op, path string, killLeftovers bool) (killed int, err error) {
	o.closeNS(path)
	if killLeftovers {
		o.journal.Comment("kill the processes left in " + path)
		if !o.dryRun() {
			killed = proc.KillInNetNS(proc.NetNSInode(path))
		}
	}
	if err := netns.RemoveIn(o.journal, path); err != nil {
		return killed, err
	}
	o.step("remove namespace " + path)
	return killed, nil
}
