package dnsforward

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
)

// What of a DNS message (RFC 1035 4.1) the forwarders read and write: the header,
// the first question, address records and EDNS0's offered UDP size. Everything
// else passes through as it came.
const (
	headerLen = 12
	// maxNameLen is the longest name in wire form (RFC 1035 2.3.4): an answer that
	// repeated a longer question would be malformed.
	maxNameLen = 255

	TypeA     = 1
	TypeAAAA  = 28
	TypeANY   = 255
	typeOPT   = 41
	ClassINET = 1

	RcodeSuccess       = 0
	RcodeServerFailure = 2
	RcodeNameError     = 3

	flagResponse           = 1 << 15
	flagOpcode             = 0xf << 11
	flagAuthoritative      = 1 << 10
	flagRecursionDesired   = 1 << 8
	flagRecursionAvailable = 1 << 7
	flagCheckingDisabled   = 1 << 4
)

var errMalformed = errors.New("malformed DNS message")

// Query is a DNS query, with its header and first question read.
type Query struct {
	Msg       []byte // the query as it came
	ID        uint16
	flags     uint16
	Questions uint16 // how many the query asks
	// Name, Type and Class are the first question's; Name is dotted with a final
	// dot, in the case it came in.
	Name        string
	Type, Class uint16
	questionEnd int // where the first question ends in Msg
}

// ParseQuery reads msg's header and first question; an answer is no query.
func ParseQuery(msg []byte) (*Query, error) {
	if len(msg) < headerLen {
		return nil, errMalformed
	}
	q := &Query{Msg: msg, ID: binary.BigEndian.Uint16(msg), flags: binary.BigEndian.Uint16(msg[2:]),
		Questions: binary.BigEndian.Uint16(msg[4:]), questionEnd: headerLen}
	if q.flags&flagResponse != 0 {
		return nil, errors.New("a DNS answer, not a query")
	}
	if q.Questions == 0 {
		return q, nil
	}
	var name strings.Builder
	off := headerLen
	for {
		if off >= len(msg) {
			return nil, errMalformed
		}
		n := int(msg[off])
		off++
		if n == 0 {
			break
		}
		if n > 63 || off+n > len(msg) { // a compression pointer cannot point back from the first name
			return nil, errMalformed
		}
		if off+n+1-headerLen > maxNameLen { // the name's labels, their lengths and the root's
			return nil, errMalformed
		}
		name.Write(msg[off : off+n])
		name.WriteByte('.')
		off += n
	}
	if off+4 > len(msg) {
		return nil, errMalformed
	}
	q.Name = name.String()
	if q.Name == "" {
		q.Name = "."
	}
	q.Type, q.Class = binary.BigEndian.Uint16(msg[off:]), binary.BigEndian.Uint16(msg[off+2:])
	q.questionEnd = off + 4
	return q, nil
}

// Reply is the start of an answer to q with rcode: q's ID, opcode, first question,
// and RD and CD bits, as resolvers answer. own marks an answer from the server's
// own data, which is authoritative and offers recursion.
func (q *Query) Reply(rcode uint16, own bool) []byte {
	flags := flagResponse | q.flags&(flagOpcode|flagRecursionDesired|flagCheckingDisabled) | rcode&0xf
	if own {
		flags |= flagAuthoritative | flagRecursionAvailable
	}
	m := make([]byte, headerLen, q.questionEnd+2*(12+16))
	binary.BigEndian.PutUint16(m, q.ID)
	binary.BigEndian.PutUint16(m[2:], flags)
	binary.BigEndian.PutUint16(m[4:], min(q.Questions, 1))
	return append(m, q.Msg[headerLen:q.questionEnd]...)
}

// AppendAddress adds to reply, one of Reply's, an A record for an IPv4 addr or an
// AAAA record for an IPv6 one, named as the question.
func AppendAddress(reply []byte, addr netip.Addr, ttl uint32) []byte {
	rrType := uint16(TypeAAAA)
	if addr.Is4() {
		rrType = TypeA
	}
	reply = binary.BigEndian.AppendUint16(reply, 0xc000|headerLen) // the question's name, compressed
	reply = binary.BigEndian.AppendUint16(reply, rrType)
	reply = binary.BigEndian.AppendUint16(reply, ClassINET)
	reply = binary.BigEndian.AppendUint32(reply, ttl)
	reply = binary.BigEndian.AppendUint16(reply, uint16(addr.BitLen()/8))
	reply = append(reply, addr.AsSlice()...)
	binary.BigEndian.PutUint16(reply[6:], binary.BigEndian.Uint16(reply[6:])+1)
	return reply
}

// UDPSize is the answer size q offers over UDP: its EDNS0 record's, at least 512
// (RFC 1035's, which every resolver may send).
func (q *Query) UDPSize() int {
	if off, ok := q.optClass(); ok {
		return max(int(binary.BigEndian.Uint16(q.Msg[off:])), minUDPSize)
	}
	return minUDPSize
}

// CapUDPSize lowers the answer size q offers over UDP to at most size, in Msg.
func (q *Query) CapUDPSize(size uint16) {
	if off, ok := q.optClass(); ok && binary.BigEndian.Uint16(q.Msg[off:]) > size {
		binary.BigEndian.PutUint16(q.Msg[off:], size)
	}
}

// optClass finds the class field of q's OPT record, which holds the UDP size.
func (q *Query) optClass() (int, bool) {
	msg := q.Msg
	count := func(i int) int { return int(binary.BigEndian.Uint16(msg[4+2*i:])) }
	off := headerLen
	for range count(0) { // questions: a name, type and class
		if off = skipName(msg, off); off < 0 || off+4 > len(msg) {
			return 0, false
		}
		off += 4
	}
	records := count(1) + count(2) // answers and authorities, before the additional records
	for i := range records + count(3) {
		if off = skipName(msg, off); off < 0 || off+10 > len(msg) {
			return 0, false
		}
		if i >= records && binary.BigEndian.Uint16(msg[off:]) == typeOPT {
			return off + 2, true
		}
		off += 10 + int(binary.BigEndian.Uint16(msg[off+8:])) // type, class, TTL, length, data
	}
	return 0, false
}

// skipName returns where the name at off in msg ends, -1 if it runs past msg.
func skipName(msg []byte, off int) int {
	for off < len(msg) {
		n := int(msg[off])
		switch {
		case n == 0:
			return off + 1
		case n&0xc0 == 0xc0: // a pointer ends the name
			return off + 2
		}
		off += 1 + n
	}
	return -1
}

// isAnswerTo says whether msg is an answer with id.
func isAnswerTo(msg []byte, id uint16) bool {
	return len(msg) >= headerLen && binary.BigEndian.Uint16(msg) == id && binary.BigEndian.Uint16(msg[2:])&flagResponse != 0
}
