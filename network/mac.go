package network

import (
	"errors"
	"net"

	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/store"
)

// parseMAC checks a MAC address asked for (ContainerSpec.MAC, ConnectOptions.MAC): an
// interface's own address is a unicast Ethernet one, and not all zeros.
func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	switch {
	case err != nil || len(mac) != 6:
		err = errors.New("use an Ethernet address such as 02:42:0a:58:00:05")
	case mac[0]&1 != 0:
		err = errors.New("a multicast address cannot be an interface's: use a unicast one, whose first byte is even, such as 02:42:0a:58:00:05")
	case [6]byte(mac) == [6]byte{}:
		err = errors.New("the all-zero address cannot be an interface's: use one such as 02:42:0a:58:00:05")
	}
	if err != nil {
		return nil, &FieldError{Field: "MAC", Value: s, Err: err}
	}
	return mac, nil
}

// attachmentMAC is the MAC of an attachment's interface: the one it was given, else
// (records made before a MAC could be asked for) the one derived from its address.
func attachmentMAC(a *store.Attachment) net.HardwareAddr {
	if mac, err := net.ParseMAC(a.MAC); err == nil && len(mac) == 6 {
		return mac
	}
	return link.MACFor(attachmentMACSource(a))
}
