package dnsforward

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func query(id uint16) *dnsmessage.Message {
	return &dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("svc.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
}

// answer is an answer to req with the ID id and rcode.
func answer(req *dnsmessage.Message, id uint16, rcode dnsmessage.RCode) []byte {
	m := Reply(req, rcode)
	m.ID = id
	out, _ := m.Pack() // a message that was parsed packs
	return out
}

// An answer with another ID than the query's is not taken for its answer (a
// spoofed one, say), and the upstream's real answer still is; over TCP too.
func TestAskTakesTheQuerysAnswer(t *testing.T) {
	req := query(4242)
	log := slog.New(slog.DiscardHandler)

	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 512)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var got dnsmessage.Message
		if got.Unpack(buf[:n]) != nil {
			return
		}
		pc.WriteTo(answer(&got, got.ID+1, dnsmessage.RCodeNameError), from)
		pc.WriteTo(answer(&got, got.ID, dnsmessage.RCodeSuccess), from)
	}()
	var m dnsmessage.Message
	if err := m.Unpack(Ask(t.Context(), req, []netip.AddrPort{netip.MustParseAddrPort(pc.LocalAddr().String())}, "udp", time.Minute, log)); err != nil {
		t.Fatal(err)
	}
	if m.ID != 4242 || m.RCode != dnsmessage.RCodeSuccess {
		t.Errorf("over UDP: answer %d, %v; want 4242, success", m.ID, m.RCode)
	}

	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for i := range 2 { // the first connection answers with another ID
			conn, err := l.Accept()
			if err != nil {
				return
			}
			msg, err := ReadTCP(conn)
			var got dnsmessage.Message
			if err == nil && got.Unpack(msg) == nil {
				WriteTCP(conn, answer(&got, got.ID+uint16(1-i), dnsmessage.RCodeSuccess))
			}
			conn.Close()
		}
	}()
	up := netip.MustParseAddrPort(l.Addr().String())
	for _, c := range []struct {
		want dnsmessage.RCode
	}{{dnsmessage.RCodeServerFailure}, {dnsmessage.RCodeSuccess}} {
		if err := m.Unpack(Ask(t.Context(), req, []netip.AddrPort{up}, "tcp", time.Minute, log)); err != nil {
			t.Fatal(err)
		}
		if m.ID != 4242 || m.RCode != c.want {
			t.Errorf("over TCP: answer %d, %v; want 4242, %v", m.ID, m.RCode, c.want)
		}
	}
}
