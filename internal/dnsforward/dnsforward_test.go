package dnsforward

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// query is a parsed query for svc.test. with id, built by miekg/dns.
func query(t *testing.T, id uint16, edit func(*dns.Msg)) *Query {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("svc.test.", dns.TypeA)
	m.Id = id
	if edit != nil {
		edit(m)
	}
	packed, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParseQuery(packed)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// answer is an answer to the query msg with the ID id and rcode.
func answer(msg []byte, id uint16, rcode int) []byte {
	q := new(dns.Msg)
	if q.Unpack(msg) != nil {
		return nil
	}
	m := new(dns.Msg)
	m.SetRcode(q, rcode)
	m.Id = id
	out, _ := m.Pack()
	return out
}

// An answer with another ID than the query's is not taken for its answer (a
// spoofed one, say), and the upstream's real answer still is; over TCP too.
func TestAskTakesTheQuerysAnswer(t *testing.T) {
	req := query(t, 4242, nil)
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
		pc.WriteTo(answer(buf[:n], 4243, dns.RcodeNameError), from)
		pc.WriteTo(answer(buf[:n], 4242, dns.RcodeSuccess), from)
	}()
	var m dns.Msg
	if err := m.Unpack(Ask(t.Context(), req, []netip.AddrPort{netip.MustParseAddrPort(pc.LocalAddr().String())}, "udp", time.Minute, log)); err != nil {
		t.Fatal(err)
	}
	if m.Id != 4242 || m.Rcode != dns.RcodeSuccess {
		t.Errorf("over UDP: answer %d, %s; want 4242, NOERROR", m.Id, dns.RcodeToString[m.Rcode])
	}

	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for _, id := range []uint16{4243, 4242} { // the first connection answers with another ID
			conn, err := l.Accept()
			if err != nil {
				return
			}
			if msg, err := ReadTCP(conn); err == nil {
				WriteTCP(conn, answer(msg, id, dns.RcodeSuccess))
			}
			conn.Close()
		}
	}()
	up := netip.MustParseAddrPort(l.Addr().String())
	for _, want := range []int{dns.RcodeServerFailure, dns.RcodeSuccess} {
		if err := m.Unpack(Ask(t.Context(), req, []netip.AddrPort{up}, "tcp", time.Minute, log)); err != nil {
			t.Fatal(err)
		}
		if m.Id != 4242 || m.Rcode != want {
			t.Errorf("over TCP: answer %d, %s; want 4242, %s", m.Id, dns.RcodeToString[m.Rcode], dns.RcodeToString[want])
		}
	}
}

// What ParseQuery, Reply and AppendAddress make of messages miekg/dns packs, and
// what miekg/dns reads of theirs.
func TestMessages(t *testing.T) {
	if _, err := ParseQuery([]byte{1, 2, 3}); err == nil {
		t.Error("a message shorter than a header parses")
	}
	q := query(t, 7, func(m *dns.Msg) { m.Question[0].Name = "WeB.Example."; m.CheckingDisabled = true })
	if q.ID != 7 || q.Questions != 1 || q.Name != "WeB.Example." || q.Type != TypeA || q.Class != ClassINET {
		t.Errorf("parsed %+v", q)
	}
	reply := q.Reply(RcodeSuccess, true)
	reply = AppendAddress(reply, netip.MustParseAddr("172.18.0.2"), 5)
	reply = AppendAddress(reply, netip.MustParseAddr("fd00::2"), 5)
	var m dns.Msg
	if err := m.Unpack(reply); err != nil {
		t.Fatal(err)
	}
	if m.Id != 7 || !m.Response || !m.Authoritative || !m.RecursionAvailable || !m.RecursionDesired || !m.CheckingDisabled ||
		len(m.Question) != 1 || m.Question[0].Name != "WeB.Example." || len(m.Answer) != 2 {
		t.Fatalf("reply %s", &m)
	}
	a, ok4 := m.Answer[0].(*dns.A)
	aaaa, ok6 := m.Answer[1].(*dns.AAAA)
	if !ok4 || !ok6 || a.A.String() != "172.18.0.2" || aaaa.AAAA.String() != "fd00::2" || a.Hdr.Name != "WeB.Example." || a.Hdr.Ttl != 5 {
		t.Errorf("answers %s", m.Answer)
	}
	fail := query(t, 8, nil).Reply(RcodeServerFailure, false)
	if err := m.Unpack(fail); err != nil || m.Id != 8 || m.Rcode != dns.RcodeServerFailure || m.Authoritative || len(m.Answer) != 0 {
		t.Errorf("SERVFAIL %s (%v)", &m, err)
	}
	if _, err := ParseQuery(fail); err == nil {
		t.Error("an answer parses as a query")
	}
}

// The EDNS0 record's UDP size is found after records of every section, and capped
// in place; without one, 512.
func TestUDPSize(t *testing.T) {
	withRecords := func(m *dns.Msg) {
		rr, _ := dns.NewRR("svc.test. 60 IN A 192.0.2.1")
		m.Answer = append(m.Answer, rr)
		ns, _ := dns.NewRR("test. 60 IN NS ns.svc.test.")
		m.Ns = append(m.Ns, ns)
		m.SetEdns0(4096, false)
	}
	for _, c := range []struct {
		name        string
		edit        func(*dns.Msg)
		size, after int
	}{
		{"no EDNS0", nil, 512, 512},
		{"EDNS0 alone", func(m *dns.Msg) { m.SetEdns0(4096, false) }, 4096, 1232},
		{"EDNS0 after answers and authorities", withRecords, 4096, 1232},
		{"an offer under the cap", func(m *dns.Msg) { m.SetEdns0(1000, false) }, 1000, 1000},
		{"an offer under 512", func(m *dns.Msg) { m.SetEdns0(100, false) }, 512, 512},
	} {
		q := query(t, 1, c.edit)
		size := q.UDPSize()
		q.CapUDPSize(1232)
		if after := q.UDPSize(); size != c.size || after != c.after {
			t.Errorf("%s: size %d, capped %d; want %d, %d", c.name, size, after, c.size, c.after)
		}
		var m dns.Msg
		if err := m.Unpack(q.Msg); err != nil {
			t.Errorf("%s: the capped query: %v", c.name, err)
		}
	}
}

// FuzzParseQuery holds the hand-written reader to what a container may send the DNS
// server, which is any bytes: it never panics, and whatever it reads and writes
// miekg/dns reads the same way.
func FuzzParseQuery(f *testing.F) {
	for _, edit := range []func(*dns.Msg){
		nil,
		func(m *dns.Msg) { m.SetEdns0(4096, true) },
		func(m *dns.Msg) { m.SetQuestion("Mixed.Case.example.", dns.TypeAAAA) },
		func(m *dns.Msg) {
			m.Question = append(m.Question, dns.Question{Name: "two.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		},
	} {
		m := new(dns.Msg)
		m.SetQuestion("svc.test.", dns.TypeA)
		if edit != nil {
			edit(m)
		}
		packed, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(packed)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1})
	f.Fuzz(func(t *testing.T, msg []byte) {
		q, err := ParseQuery(slices.Clone(msg))
		if err != nil {
			return
		}
		size := q.UDPSize()
		q.CapUDPSize(1232)
		if got := q.UDPSize(); got > max(size, minUDPSize) || got > max(1232, minUDPSize) {
			t.Fatalf("UDPSize after CapUDPSize(1232) is %d (was %d)", got, size)
		}
		if q.Questions == 0 {
			return
		}
		reply := AppendAddress(q.Reply(RcodeSuccess, true), netip.MustParseAddr("10.0.0.2"), 600)
		var m dns.Msg
		if err := m.Unpack(reply); err != nil {
			t.Fatalf("the reply to %x does not unpack: %v", msg, err)
		}
		if m.Id != q.ID || !m.Response || len(m.Question) != 1 || len(m.Answer) != 1 {
			t.Fatalf("the reply to %x is %v", msg, &m)
		}
		if qu := m.Question[0]; qu.Qtype != q.Type || qu.Qclass != q.Class {
			t.Fatalf("the reply's question %v, the query's type %d class %d", qu, q.Type, q.Class)
		}
		if !strings.EqualFold(strings.TrimSuffix(dns.CanonicalName(m.Answer[0].Header().Name), "."), strings.TrimSuffix(dns.CanonicalName(m.Question[0].Name), ".")) {
			t.Fatalf("the answer names %q, the question %q", m.Answer[0].Header().Name, m.Question[0].Name)
		}
	})
}
