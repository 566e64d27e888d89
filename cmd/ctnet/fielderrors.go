package main

import (
	"errors"
	"strings"

	"github.com/ctnet/ctnet/network"
)

// flagOf names the library's spec fields by the flags that set them.
var flagOf = map[string]string{
	"Network": "--network", "IP": "--ip", "Ports": "port", "Hostname": "--hostname",
	"NetNS": "--netns", "IfName": "--ifname", "DNS": "--dns", "ExtraHosts": "--add-host",
	"Aliases": "--network-alias", "UserNet.CIDR": "--cidr", "UserNet.MTU": "--mtu",
	"Subnet": "--subnet", "Gateway": "--gateway", "Bridge": "--bridge", "MTU": "--mtu",
	"NonMasquerade":         "--opt non-masquerade",
	"Bandwidth.IngressRate": "--ingress-rate", "Bandwidth.EgressRate": "--egress-rate",
	"Driver": "--driver", "Parent": "--parent", "IPRange": "--ip-range",
	"IP6": "--ip6", "Subnet6": "--subnet", "Gateway6": "--gateway", "MAC": "--mac-address",
}

func flagName(field string) string {
	if f, ok := flagOf[field]; ok {
		return f
	}
	return field
}

// inFlags is err's message with every spec field it names written as the flag that
// sets it, wherever in err's tree the field's error sits.
func inFlags(err error) string {
	msg := err.Error()
	for _, fe := range fieldErrors(err) {
		msg = strings.Replace(msg, fe.Error(), fe.Render(flagName), 1)
	}
	return msg
}

// fieldErrors are the outermost FieldErrors in err's tree.
func fieldErrors(err error) []*network.FieldError {
	var fe *network.FieldError
	if errors.As(err, &fe) && fe == err {
		return []*network.FieldError{fe}
	}
	var out []*network.FieldError
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			out = append(out, fieldErrors(e)...)
		}
	case interface{ Unwrap() error }:
		if inner := u.Unwrap(); inner != nil {
			out = fieldErrors(inner)
		}
	}
	return out
}
