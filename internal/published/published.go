// Package published names a published port once, for every package below the
// orchestrator that handles one: the store records it (store.Port), the firewall
// programs it (firewall.Port) and the rootless stack serves it (usernet.Port).
package published

import (
	"fmt"
	"net/netip"
)

// Port is one published port: HostIP:HostPort/Proto forwarded to the container's
// ContainerIP:ContainerPort. An invalid or unspecified HostIP means every local
// address of the host. A rootless container has one address, which its stack knows,
// so there ContainerIP is left invalid. A published range is one Port per host port.
// The JSON names are the store's, and the CLI's inspect output.
type Port struct {
	HostIP        netip.Addr `json:"host_ip"`
	HostPort      uint16     `json:"host_port"`
	ContainerPort uint16     `json:"container_port"`
	Proto         string     `json:"proto"` // tcp, udp or sctp
	ContainerIP   netip.Addr `json:"container_ip"`
}

// AnyAddress reports whether the port is published on every host address.
func (p Port) AnyAddress() bool { return !p.HostIP.IsValid() || p.HostIP.IsUnspecified() }

func (p Port) String() string {
	host := "*"
	if !p.AnyAddress() {
		host = p.HostIP.String()
	}
	container := fmt.Sprint(p.ContainerPort)
	if p.ContainerIP.IsValid() {
		container = netip.AddrPortFrom(p.ContainerIP, p.ContainerPort).String()
	}
	return fmt.Sprintf("%s:%d/%s -> %s", host, p.HostPort, p.Proto, container)
}
