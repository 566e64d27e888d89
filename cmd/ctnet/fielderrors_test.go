package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/ctnet/ctnet/network"
)

// The library names a spec's fields; the command line speaks of its flags.
func TestErrorsNameFlags(t *testing.T) {
	_, portErr := network.ParsePort("80:99999")
	alias := &network.FieldError{Field: "Aliases", Value: "-x", Err: errors.New("use dot-separated labels")}
	ip := &network.FieldError{Field: "IP", Value: "10.0.0.300", Err: errors.New("want an IPv4 address")}
	tests := []struct {
		err  error
		want string
	}{
		{portErr, `bad port "80:99999": container port: "99999" is not a port number from 1 to 65535 (use [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp|/sctp], e.g. 8080:80)`},
		{alias, `bad --network-alias "-x": use dot-separated labels`},
		{fmt.Errorf("create web: %w", ip), `create web: bad --ip "10.0.0.300": want an IPv4 address`},
		{errors.Join(alias, fmt.Errorf("c2: %w", ip)), "bad --network-alias \"-x\": use dot-separated labels; c2: bad --ip \"10.0.0.300\": want an IPv4 address"},
		{&network.FieldError{Field: "ExtraHosts", Value: "db", Err: &network.FieldError{Field: "Hostname", Value: "-db", Err: errors.New("use labels")}},
			`bad --add-host "db": bad --hostname "-db": use labels`},
		{errors.New("no field here"), "no field here"},
	}
	for _, tt := range tests {
		if got := oneLine(tt.err); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.err, got, tt.want)
		}
		if !errors.Is(tt.err, network.ErrInvalid) && tt.err.Error() != "no field here" {
			t.Errorf("%q does not match ErrInvalid", tt.err)
		}
	}
}
