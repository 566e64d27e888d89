// Package dnsforward asks upstream resolvers what a container asked: the one
// forwarding loop of the embedded DNS server (internal/embeddns) and of the
// rootless stack's DNS address (usernet). Their callers bound it: how many
// forwards run at once, and for how long.
package dnsforward

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// Ask asks the upstreams in turn over transport ("udp" or "tcp") and returns the
// first answer; each upstream gets at most perUpstream, all of them together until
// ctx ends. With no answer it returns SERVFAIL, so that the client fails now rather
// than after its own timeouts. Each query goes out from a fresh socket, whose random
// port keeps spoofed answers out (RFC 5452); the client checks the answer's ID.
func Ask(ctx context.Context, req *dns.Msg, upstreams []netip.AddrPort, transport string, perUpstream time.Duration, log *slog.Logger) *dns.Msg {
	c := &dns.Client{Net: transport, Timeout: perUpstream}
	for _, up := range upstreams {
		resp, err := exchange(ctx, c, req, up)
		if err == nil {
			return resp
		}
		log.Debug("upstream resolver failed", "server", up, "err", err)
		if ctx.Err() != nil {
			break
		}
	}
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	return m
}

// exchange asks one upstream, until c's timeout or ctx's end, whichever is first:
// a read ends only at a deadline or when its socket closes, so ctx's cancellation
// closes it.
func exchange(ctx context.Context, c *dns.Client, req *dns.Msg, up netip.AddrPort) (*dns.Msg, error) {
	conn, err := c.DialContext(ctx, up.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	resp, _, err := c.ExchangeWithConnContext(ctx, req, conn)
	return resp, err
}
