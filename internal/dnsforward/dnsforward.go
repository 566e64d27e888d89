// Package dnsforward asks upstream resolvers what a container asked: the one
// forwarding loop of the embedded DNS server (internal/embeddns) and of the
// rootless stack's DNS address (usernet). Their callers bound it: how many
// forwards run at once, and for how long.
//
// It reads and writes DNS messages with golang.org/x/net/dns/dnsmessage, not a
// full DNS library: ctnet links this package, and every ctnet command is a fresh
// process that would load and initialise such a library's TLS and DNSSEC
// cryptography for nothing (see BENCHMARKS.md, "CLI start").
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

	"golang.org/x/net/dns/dnsmessage"
)

// minUDPSize is the answer size every resolver may send over UDP (RFC 1035);
// a query's EDNS0 record offers more.
const minUDPSize = 512

// Ask asks the upstreams in turn over transport ("udp" or "tcp") and returns the
// first answer, as the upstream sent it; each upstream gets at most perUpstream,
// all of them together until ctx ends. With no answer it returns SERVFAIL, so that
// the client fails now rather than after its own timeouts. Each query goes out
// from a fresh socket, whose random port keeps spoofed answers out (RFC 5452), and
// an answer counts only with the query's ID. The answer is nil only when req
// cannot be packed, which a message that was parsed can.
func Ask(ctx context.Context, req *dnsmessage.Message, upstreams []netip.AddrPort, transport string, perUpstream time.Duration, log *slog.Logger) []byte {
	query, err := req.Pack()
	if err != nil {
		return nil
	}
	for _, up := range upstreams {
		answer, err := exchange(ctx, query, req, up, transport, perUpstream)
		if err == nil {
			return answer
		}
		log.Debug("upstream resolver failed", "server", up, "err", err)
		if ctx.Err() != nil {
			break
		}
	}
	fail := Reply(req, dnsmessage.RCodeServerFailure)
	answer, _ := fail.Pack()
	return answer
}

// Reply is the start of an answer to req with rcode: req's ID, opcode, first
// question, and RD and CD bits, as resolvers answer.
func Reply(req *dnsmessage.Message, rcode dnsmessage.RCode) dnsmessage.Message {
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: req.ID, Response: true, OpCode: req.OpCode, RCode: rcode,
		RecursionDesired: req.RecursionDesired, CheckingDisabled: req.CheckingDisabled}}
	if len(req.Questions) > 0 {
		m.Questions = req.Questions[:1]
	}
	return m
}

// UDPSize is the answer size req offers over UDP: its EDNS0 record's, at least 512.
func UDPSize(req *dnsmessage.Message) int {
	for _, rr := range req.Additionals {
		if rr.Header.Type == dnsmessage.TypeOPT && int(rr.Header.Class) > minUDPSize {
			return int(rr.Header.Class)
		}
	}
	return minUDPSize
}

// exchange asks one upstream, until perUpstream or ctx's end, whichever is first:
// a read ends only at a deadline or when its socket closes, so ctx's cancellation
// closes it.
func exchange(ctx context.Context, query []byte, req *dnsmessage.Message, up netip.AddrPort, transport string, perUpstream time.Duration) ([]byte, error) {
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
		return exchangeTCP(conn, query, req.ID)
	}
	if _, err := conn.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, UDPSize(req)+1) // one more: an answer that fills it is too large
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		if n == len(buf) {
			return nil, fmt.Errorf("answer larger than the %d bytes the query offers", n-1)
		}
		if isAnswerTo(buf[:n], req.ID) {
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

// isAnswerTo says whether msg is an answer with id.
func isAnswerTo(msg []byte, id uint16) bool {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	return err == nil && h.Response && h.ID == id
}
