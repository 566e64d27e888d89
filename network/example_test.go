package network_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

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

// Run a command in a container of its own on a network, with the caller's stdio:
// the container's network exists while the command runs and is released when Wait
// sees it end; Remove then deletes the exited container's record. It needs root.
func ExampleManager_Run() {
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
	p, err := m.Run(ctx, network.ContainerSpec{Name: "job-43", Network: network.OnNetwork(n.Name),
		Command: []string{"ping", "-c1", n.Gateway.String()}},
		network.RunOptions{Stdout: os.Stdout, Stderr: os.Stderr})
	if notStarted, ok := errors.AsType[*network.StartError](err); ok {
		log.Fatalf("ping did not start (status %d): %v", notStarted.Code, notStarted.Err)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("running as", p.Container.Attachments[0].IP)
	code, err := p.Wait()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ping exited", code)
	if err := m.Remove(ctx, p.Container.Name, false); err != nil {
		log.Fatal(err)
	}
}
