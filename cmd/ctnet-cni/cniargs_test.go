package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/network"
)

func TestRequestedAddresses(t *testing.T) {
	tests := []struct {
		runtimeConfig, cniArgs string
		ip, ip6, mac, refusal  string
	}{
		{`{}`, "", "", "", "", ""},
		{`{}`, "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.88.0.5;MAC=02:00:0A:58:00:05", "10.88.0.5", "", "02:00:0A:58:00:05", ""},
		{`{}`, "IP=2001:db8::5", "", "", "", ""}, // IPv6 is skipped, as in the ips capability
		{`{}`, "IP=", "", "", "", ""},
		{`{"ips": ["10.88.0.5/24"], "mac": "02:00:0a:58:00:05"}`, "", "10.88.0.5", "", "02:00:0a:58:00:05", ""},
		{`{"ips": ["10.88.0.5", "10.88.0.5"]}`, "", "10.88.0.5", "", "", ""}, // Podman 4.3's network reload
		{`{"ips": ["10.88.0.5/24"], "mac": "02:00:0a:58:00:05"}`, "IP=10.88.0.5;MAC=02:00:0A:58:00:05", "10.88.0.5", "", "02:00:0A:58:00:05", ""},
		{`{"ips": ["10.88.0.5"]}`, "IP=10.88.0.6", "", "", "", "different addresses"},
		{`{"mac": "02:00:0a:58:00:05"}`, "MAC=02:00:0a:58:00:06", "", "", "", "different addresses"},
		{`{}`, "IP=web", "", "", "", "CNI_ARGS IP"},
		{`{}`, "MAC=web", "", "", "", "CNI_ARGS MAC"},
		{`{"ips": ["10.88.0.5", "10.88.0.6"]}`, "", "", "", "", "2 IPv4 and 0 IPv6 addresses"},
		{`{"ips": ["10.88.0.5/24", "fd00::5/64"]}`, "", "10.88.0.5", "fd00::5", "", ""},
		{`{"ips": ["fd00::5", "fd00::5"]}`, "", "", "fd00::5", "", ""},
		{`{"ips": ["fd00::5", "fd00::6"]}`, "", "", "", "", "0 IPv4 and 2 IPv6 addresses"},
	}
	for _, tt := range tests {
		conf := &netConf{}
		if err := json.Unmarshal([]byte(`{"runtimeConfig": `+tt.runtimeConfig+`}`), conf); err != nil {
			t.Fatal(err)
		}
		ip, ip6, mac, err := requestedAddresses(conf, tt.cniArgs)
		switch {
		case tt.refusal != "" && (err == nil || !strings.Contains(err.Error(), tt.refusal)):
			t.Errorf("%s with CNI_ARGS %q: %v, want an error saying %q", tt.runtimeConfig, tt.cniArgs, err, tt.refusal)
		case tt.refusal == "" && (err != nil || ip != tt.ip || ip6 != tt.ip6 || mac != tt.mac):
			t.Errorf("%s with CNI_ARGS %q: %q, %q, %q, %v; want %q, %q, %q", tt.runtimeConfig, tt.cniArgs, ip, ip6, mac, err, tt.ip, tt.ip6, tt.mac)
		}
	}
}

func TestPublishes(t *testing.T) {
	c := &network.Container{Ports: []network.Port{
		{HostPort: 8085, ContainerPort: 80, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.88.0.2")},
		{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8053, ContainerPort: 53, Proto: "udp", ContainerIP: netip.MustParseAddr("10.88.0.2")},
	}}
	tests := []struct {
		specs []string
		want  bool
	}{
		{[]string{"8085:80/tcp", "127.0.0.1:8053:53/udp"}, true},
		{[]string{"127.0.0.1:8053:53/udp", "0.0.0.0:8085:80/tcp"}, true}, // any order; 0.0.0.0 is every address
		{[]string{"8085:80/tcp"}, false},
		{[]string{"8085:80/tcp", "127.0.0.1:8053:53/udp", "8086:80/tcp"}, false},
		{[]string{"8085:81/tcp", "127.0.0.1:8053:53/udp"}, false},
		{[]string{"8085:80/udp", "127.0.0.1:8053:53/udp"}, false},
		{[]string{"8085:80/tcp", "8053:53/udp"}, false},
		{[]string{"80/tcp", "127.0.0.1:8053:53/udp"}, false}, // a host port to choose
	}
	for _, tt := range tests {
		var specs []network.PortSpec
		for _, s := range tt.specs {
			p, err := network.ParsePort(s)
			if err != nil {
				t.Fatal(err)
			}
			specs = append(specs, p)
		}
		if got := publishes(c, specs); got != tt.want {
			t.Errorf("publishes(%v) = %v, want %v", tt.specs, got, tt.want)
		}
	}
}
