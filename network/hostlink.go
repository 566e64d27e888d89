package network

import (
	"errors"

	"github.com/ctnet/ctnet/link"
)

// HostLink describes a link of the root's host namespace as the kernel has it now
// (a container's host veth, a network's bridge): a front end's check that what it
// reported still holds. A missing link is ErrNotFound.
func (m *Manager) HostLink(name string) (*link.LinkInfo, error) {
	info, err := link.Info(m.host, name)
	if errors.Is(err, link.ErrNotFound) {
		return nil, tagged(ErrNotFound, "the host has no interface %s", name)
	}
	return info, err
}
