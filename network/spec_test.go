package network

import (
	"bytes"
	"encoding/json"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// decodeSpec reads a spec the way the detached supervisor does (cmd/ctnet runMonitor):
// one JSON value from a stream.
func decodeSpec(r io.Reader) (ContainerSpec, error) {
	var spec ContainerSpec
	err := json.NewDecoder(r).Decode(&spec)
	return spec, err
}

func TestPortSpecCheck(t *testing.T) {
	tests := []struct {
		name string
		spec PortSpec
		why  string // "" when the spec is valid
	}{
		{"container port", PortSpec{ContainerPort: 80, CPEnd: 80, Proto: "tcp"}, ""},
		{"host range to one port", PortSpec{HostPort: 8000, HostPortEnd: 8010, ContainerPort: 80, CPEnd: 80, Proto: "udp"}, ""},
		{"address without port", PortSpec{HostIP: loopback, ContainerPort: 80, CPEnd: 90, Proto: "sctp"}, ""},
		{"no protocol", PortSpec{ContainerPort: 80, CPEnd: 80}, "protocol"},
		{"unknown protocol", PortSpec{ContainerPort: 80, CPEnd: 80, Proto: "icmp"}, "protocol"},
		{"IPv6 address", PortSpec{HostIP: netip.IPv6Loopback(), ContainerPort: 80, CPEnd: 80, Proto: "tcp"}, ""},
		{"IPv4-mapped address", PortSpec{HostIP: netip.MustParseAddr("::ffff:127.0.0.1"), ContainerPort: 80, CPEnd: 80, Proto: "tcp"}, "IPv4"},
		{"container port 0", PortSpec{Proto: "tcp"}, "container port"},
		// Left unchecked, CPEnd-ContainerPort wraps to 65456 ports to allocate.
		{"container range backwards", PortSpec{ContainerPort: 80, CPEnd: 0, Proto: "tcp"}, "container range"},
		{"host range without start", PortSpec{HostPortEnd: 90, ContainerPort: 80, CPEnd: 80, Proto: "tcp"}, "host range"},
		{"host range backwards", PortSpec{HostPort: 90, HostPortEnd: 80, ContainerPort: 80, CPEnd: 80, Proto: "tcp"}, "host range"},
		{"ranges of different lengths", PortSpec{HostPort: 8000, HostPortEnd: 8001, ContainerPort: 80, CPEnd: 90, Proto: "tcp"}, "differ in length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.check()
			if tt.why == "" {
				if err != nil {
					t.Fatalf("check(%+v) = %v, want nil", tt.spec, err)
				}
				return
			}
			requireFixableInputError(t, tt.spec, err)
			if !strings.Contains(err.Error(), tt.why) {
				t.Errorf("check(%+v): error %q does not mention %q", tt.spec, err, tt.why)
			}
		})
	}
}

func TestCheckSpecFromJSON(t *testing.T) {
	tests := []struct {
		name, json string
		why        string // "" when the spec is valid
	}{
		{"empty", `{}`, ""},
		{"what the CLI sends", `{"Name":"web","Network":"n1","IP":"172.18.0.5","Hostname":"web.local",
			"Ports":[{"HostIP":"127.0.0.1","HostPort":8080,"HostPortEnd":8080,"ContainerPort":80,"CPEnd":80,"Proto":"tcp"}],
			"Command":["sleep","600"],"Detach":true}`, ""},
		{"modes", `{"Network":"host"}`, ""},
		{"shared namespace", `{"Network":"container:web"}`, ""},
		{"name with a slash", `{"Name":"../../etc"}`, "container name"},
		{"name too long", `{"Name":"` + strings.Repeat("a", 65) + `"}`, "container name"},
		{"NUL in a name", `{"Name":"a\u0000b"}`, "container name"},
		{"bad network", `{"Network":"a/b"}`, "network name"},
		{"bad shared container", `{"Network":"container:../x"}`, "container name"},
		{"bad hostname", `{"Hostname":"-x"}`, "Hostname"},
		{"bad IP", `{"IP":"::1"}`, "IPv4"},
		{"MAC", `{"MAC":"02:00:0a:5d:00:50"}`, ""},
		{"multicast MAC", `{"MAC":"01:00:5e:00:00:01"}`, "MAC"},
		{"all-zero MAC", `{"MAC":"00:00:00:00:00:00"}`, "MAC"},
		{"not a MAC", `{"MAC":"web"}`, "MAC"},
		{"NUL in netns", `{"NetNS":"/run/netns/a\u0000b"}`, "netns"},
		{"bad port", `{"Ports":[{"ContainerPort":80,"CPEnd":0,"Proto":"tcp"}]}`, "container range"},
		{"IPv6 host address", `{"Ports":[{"HostIP":"::1","ContainerPort":80,"CPEnd":80,"Proto":"tcp"}]}`, ""},
		{"IPv4-mapped host address", `{"Ports":[{"HostIP":"::ffff:127.0.0.1","ContainerPort":80,"CPEnd":80,"Proto":"tcp"}]}`, "IPv4"},
		{"user-mode network", `{"Network":"usernet","UserNet":{"CIDR":"10.0.3.0/24","MTU":1500},"DNS":["1.1.1.1","9.9.9.9:5353"]}`, ""},
		{"user-mode subnet too small", `{"UserNet":{"CIDR":"10.0.3.0/25"}}`, "UserNet.CIDR"},
		{"resolver not an address", `{"DNS":["nameserver"]}`, "DNS"},
		{"name files", `{"DNS":["192.0.2.53","2001:db8::53"],"ExtraHosts":["db.internal:192.0.2.5","v6:2001:db8::5"]}`, ""},
		{"extra host without an address", `{"ExtraHosts":["db.internal"]}`, "ExtraHosts"},
		{"extra host with a bad name", `{"ExtraHosts":["-db:192.0.2.5"]}`, "ExtraHosts"},
		{"user-mode MTU", `{"UserNet":{"MTU":100}}`, "UserNet.MTU"},
		{"labels", `{"Labels":{"com.example.tier":"front","env":""}}`, ""},
		// ps prints labels in its table: a key with an escape would clear the terminal.
		{"label key with a terminal escape", `{"Labels":{"\u001b[2J":"v"}}`, "label key"},
		{"label value with a NUL", `{"Labels":{"k":"a\u0000b"}}`, "label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := decodeSpec(strings.NewReader(tt.json))
			if err != nil {
				t.Fatalf("decode %s: %v", tt.json, err)
			}
			err = checkSpec(spec)
			if tt.why == "" {
				if err != nil {
					t.Fatalf("checkSpec(%s) = %v, want nil", tt.json, err)
				}
				return
			}
			requireFixableInputError(t, tt.json, err)
			if !strings.Contains(err.Error(), tt.why) {
				t.Errorf("checkSpec(%s): error %q does not mention %q", tt.json, err, tt.why)
			}
		})
	}
}

// FuzzContainerSpecJSON feeds arbitrary bytes to the supervisor's decoding and the
// checks that follow it: no panic; a refusal says what to fix; an accepted spec has
// names and ports that the command-line parsers would have produced themselves.
func FuzzContainerSpecJSON(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"Name":"web","Network":"n1","IP":"172.18.0.5","Ports":[{"HostPort":8080,"HostPortEnd":8080,"ContainerPort":80,"CPEnd":80,"Proto":"tcp"}]}`,
		`{"Network":"container:web","Hostname":"h"}`,
		`{"Ports":[{"HostIP":"::1","ContainerPort":80,"CPEnd":0,"Proto":"x"}]}`,
		`{"Name":"../x","NetNS":"/proc/1/ns/net","Supervisor":{"pid":1}}`,
		`[`, `null`, `{"Ports":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := decodeSpec(bytes.NewReader(data))
		if err != nil {
			return // the supervisor reports a decoding error as it is; nothing was created
		}
		if err := checkSpec(spec); err != nil {
			requireFixableInputError(t, data, err)
			return
		}
		if spec.Name != "" && checkName("container", spec.Name) != nil {
			t.Fatalf("accepted container name %q", spec.Name)
		}
		// Accepted names and addresses become lines of the container's hosts file and
		// resolv.conf: nothing in them may start another line, field or comment.
		for _, v := range append(append([]string{}, spec.DNS...), spec.ExtraHosts...) {
			if strings.ContainsAny(v, " \t\r\n#;") {
				t.Fatalf("accepted --dns or --add-host %q, which would break its file", v)
			}
		}
		for _, p := range spec.Ports {
			again, err := ParsePort(p.String())
			if err != nil || again != p {
				t.Fatalf("accepted port %+v, which the -p parser gives as %+v, %v", p, again, err)
			}
		}
		// What the CLI marshals, the supervisor must read back unchanged.
		out, err := json.Marshal(spec)
		if err != nil {
			t.Fatalf("marshal %+v: %v", spec, err)
		}
		back, err := decodeSpec(bytes.NewReader(out))
		if err != nil || !reflect.DeepEqual(back, spec) {
			t.Fatalf("spec %+v comes back from %s as %+v, %v", spec, out, back, err)
		}
	})
}
