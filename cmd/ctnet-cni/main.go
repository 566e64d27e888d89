// Command ctnet-cni is a CNI plugin (spec 0.4.0 to 1.1.0: ADD, DEL, CHECK, GC, STATUS)
// on ctnet's network API. A runtime (containerd, CRI-O, Podman, nerdctl) hands it a
// network namespace, and ctnet attaches it to a network exactly as `ctnet attach`
// does: a veth into the network's bridge, an address and a MAC (the ips and mac
// capabilities or CNI_ARGS IP= and MAC= may name them, or the IPAM plugin an "ipam"
// section names gives the address), the default route on eth0,
// published ports from the portMappings capability, all in ctnet's store and nftables
// tables, so `ctnet ps`, `inspect` and `gc` see what the runtime made.
//
// Install it as /opt/cni/bin/ctnet (the name the configuration's "type" gives), with
// a configuration list such as README's:
//
//	{"cniVersion": "1.0.0", "name": "ctnet", "plugins": [
//	  {"type": "ctnet", "subnet": "10.90.0.0/16", "capabilities": {"portMappings": true, "ips": true}}]}
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/ctnet/ctnet/internal/linkreaper"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == linkreaper.Arg {
		os.Exit(linkreaper.Main())
	}
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus},
		version.PluginSupports("0.4.0", "1.0.0", "1.1.0"),
		"ctnet: container networks on a Linux bridge with nftables (https://github.com/ctnet/ctnet)")
}
