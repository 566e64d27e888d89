package network_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/ctnet/ctnet/network"
)

// Attach a namespace a runtime made to a network: eth0 with an address, a default
// route and a published port; then detach it, leaving the namespace to the runtime.
// It needs root, so it has no output to check.
func Example_attach() {
	ctx := context.Background()
	m, err := network.New(network.Options{Root: "/var/lib/myruntime/net"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	n, err := m.EnsureNetwork(ctx, network.NetworkSpec{Name: "ci", Subnet: "10.88.0.0/16"})
	if err != nil {
		log.Fatal(err)
	}
	port, err := network.ParsePort("8080:80")
	if err != nil {
		log.Fatal(err)
	}
	c, err := m.Create(ctx, network.ContainerSpec{Name: "job-42", Network: network.OnNetwork(n.Name),
		NetNS: "/proc/1234/ns/net", Ports: []network.PortSpec{port}})
	var bad *network.FieldError
	if errors.As(err, &bad) {
		log.Fatalf("field %s of the spec: %v", bad.Field, bad.Err)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.Attachments[0].IfName, c.Attachments[0].IP)
	if err := m.Remove(ctx, c.Name, false); err != nil {
		log.Fatal(err)
	}
}
