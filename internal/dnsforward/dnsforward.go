// Package dnsforward asks upstream resolvers what a container asked: the one
// forwarding loop of the embedded DNS server (internal/embeddns) and of the
// rootless stack's DNS address (usernet). Their callers bound it: how many
// forwards run at once, and for how long.
//
// It reads and writes only what forwarding needs of a DNS message (message.go),
// not with a DNS library: ctnet links this package, and every ctnet command is a
// fresh process that would initialise such a library's packages for nothing
// (miekg/dns's TLS and DNSSEC cryptography; even x/net's dnsmessage builds its
// name tables at start; see BENCHMARKS.md, "CLI start").
package dnsforward

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// minUDPSize is the answer size every resolver may send over UDP (RFC 1035);
// a query's EDNS0 record offers more.
const minUDPSize = 512

// Ask asks the upstreams in turn over transport ("udp" or "tcp") and returns the
// first answer, as the upstream sent it; each upstream gets at most perUpstream,
// all of them together until ctx ends. With no answer it returns SERVFAIL, so that
// the client fails now rather than after its own timeouts. Each query goes out
// from a fresh socket, whose random port keeps spoofed answers out (RFC 5452), and
// an answer counts only with the query's ID.
func Ask(ctx context.Context, q *Query, upstreams []netip.AddrPort, transport string, perUpstream time.Duration, log *slog.Logger) []byte {
	for _, up := range upstreams {
		answer, err := exchange(ctx, q, up, transport, perUpstream)
		if err == nil {
			return answer
		}
		log.Debug("upstream resolver failed", "server", up, "err", err)
		if ctx.Err() != nil {
			break
		}
	}
	return q.Reply(RcodeServerFailure, false)
}

// exchange asks one upstream, until perUpstream or ctx's end, whichever is first:
// a read ends only at a deadline or when its socket closes, so ctx's cancellation
// closes it.
func exchange(ctx context.Context, q *Query, up netip.AddrPort, transport string, perUpstream time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, perUpstream)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, transport, up.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if transport == "tcp" {
		return exchangeTCP(conn, q.Msg, q.ID)
	}
	if _, err := conn.Write(q.Msg); err != nil {
		return nil, err
	}
	buf := make([]byte, q.UDPSize()+1) // one more: an answer that fills it is too large
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		if n == len(buf) {
			return nil, fmt.Errorf("answer larger than the %d bytes the query offers", n-1)
		}
		if isAnswerTo(buf[:n], q.ID) {
			return buf[:n], nil
		}
	}
}

// exchangeTCP writes query and reads its answer, each after its length (RFC 1035 4.2.2).
func exchangeTCP(conn net.Conn, query []byte, id uint16) ([]byte, error) {
	if err := WriteTCP(conn, query); err != nil {
		return nil, err
	}
	answer, err := ReadTCP(conn)
	if err != nil {
		return nil, err
	}
	if !isAnswerTo(answer, id) {
		return nil, errors.New("answer to another query")
	}
	return answer, nil
}

// ReadTCP reads one message sent over TCP, after its length.
func ReadTCP(r io.Reader) ([]byte, error) {
	var size [2]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(size[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// WriteTCP writes msg over TCP, after its length, in one write.
func WriteTCP(w io.Writer, msg []byte) error {
	if len(msg) > 0xffff {
		return fmt.Errorf("a %d-byte message does not fit in TCP's length", len(msg))
	}
	_, err := w.Write(append(binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(msg)), uint16(len(msg))), msg...))
	return err
}
