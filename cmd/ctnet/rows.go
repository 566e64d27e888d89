package main

import (
	"strconv"
	"strings"
	"time"

	"github.com/ctnet/ctnet/network"
)

// psRow is a container as `ps --format TEMPLATE` sees it: Docker's fields (ID, Names,
// Command, CreatedAt, RunningFor, Ports, State, Status, Networks, Labels, and Label
// "KEY") and ctnet's IP and Mode. Every field is escaped for the terminal.
type psRow struct {
	ID, Names, Command, CreatedAt, RunningFor, Ports, State, Status, Networks, Labels, IP, Mode string
	labels                                                                                      map[string]string
}

// Label is the value of the container's label key, as Docker's {{.Label "KEY"}}.
func (r psRow) Label(key string) string { return printable(r.labels[key], "") }

func (psRow) headers() map[string]string {
	return map[string]string{"ID": "CONTAINER ID", "RunningFor": "CREATED", "CreatedAt": "CREATED AT", "Names": "NAMES"}
}

func newPsRow(c *network.Container, noTrunc bool, now time.Time) psRow {
	cmd := command(c)
	if noTrunc {
		cmd = strings.Join(c.Command, " ")
	}
	return psRow{
		ID: printable(shortID(c.ID, noTrunc), ""), Names: printable(c.Name, ""), Command: printable(strconv.Quote(cmd), ""),
		CreatedAt: createdAt(c.Created), RunningFor: humanDuration(now.Sub(c.Created)) + " ago",
		Ports: printable(portsOf(c.Ports), ""), State: c.State, Status: statusAt(c, now),
		Networks: printable(networksOf(c), ""), Labels: printable(labelsString(c.Labels), ""), IP: ipsOf(c), Mode: string(c.Mode),
		labels: c.Labels,
	}
}

// createdAt is Docker's CreatedAt: "2026-12-03 10:04:05 +0000 UTC".
func createdAt(t time.Time) string {
	return t.Local().Truncate(time.Second).Format("2006-01-02 15:04:05 -0700 MST")
}

func shortID(id string, noTrunc bool) string {
	if noTrunc || len(id) <= 12 {
		return id
	}
	return id[:12]
}

// networkRow is a network as `network ls --format TEMPLATE` sees it: Docker's fields
// (ID, Name, Driver, Scope, IPv6, Internal, Labels, Label "KEY", CreatedAt) and
// ctnet's Bridge, Subnet, Gateway and MTU.
type networkRow struct {
	ID, Name, Driver, Scope, IPv6, Internal, Labels, CreatedAt string
	Bridge, Subnet, Gateway, MTU                               string
	labels                                                     map[string]string
}

// Label is the value of the network's label key, as Docker's {{.Label "KEY"}}.
func (r networkRow) Label(key string) string { return printable(r.labels[key], "") }

func (networkRow) headers() map[string]string {
	return map[string]string{"ID": "NETWORK ID", "IPv6": "IPV6"}
}

func newNetworkRow(n *network.Network, noTrunc bool) networkRow {
	return networkRow{
		ID: shortID(n.ID, noTrunc), Name: printable(n.Name, ""), Driver: n.Driver, Scope: "local", IPv6: strconv.FormatBool(n.Subnet6.IsValid()),
		Internal: strconv.FormatBool(n.Internal), Labels: printable(labelsString(n.Labels), ""), CreatedAt: createdAt(n.Created),
		Bridge: printable(n.Bridge, ""), Subnet: joinValid(n.Subnet, n.Subnet6), Gateway: joinValid(n.Gateway, n.Gateway6), MTU: strconv.Itoa(n.MTU),
		labels: n.Labels,
	}
}
