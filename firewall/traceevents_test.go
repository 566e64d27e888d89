package firewall

import (
	"encoding/binary"
	"net/netip"
	"reflect"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// A trace event's attributes are read as the kernel writes them: big-endian, the
// verdict nested with a jump's target chain, headers as bytes, conntrack's state and
// status; attributes it does not need (the conntrack ID) are skipped.
func TestDecodeTraceEvent(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(unix.NFTA_TRACE_TABLE, "ctnet")
	ae.String(unix.NFTA_TRACE_CHAIN, "forward")
	ae.Uint64(unix.NFTA_TRACE_RULE_HANDLE, 28)
	ae.Uint32(unix.NFTA_TRACE_TYPE, unix.NFT_TRACETYPE_RULE)
	ae.Nested(unix.NFTA_TRACE_VERDICT, func(nae *netlink.AttributeEncoder) error {
		nae.ByteOrder = binary.BigEndian
		nae.Uint32(unix.NFTA_VERDICT_CODE, uint32(0xfffffffd)) // NFT_JUMP, -3
		nae.String(unix.NFTA_VERDICT_CHAIN, "between_networks")
		return nil
	})
	ae.Uint32(unix.NFTA_TRACE_ID, 0xdeadbeef)
	ae.Uint32(unix.NFTA_TRACE_IIF, 3)
	ae.Uint32(unix.NFTA_TRACE_OIF, 7)
	ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, []byte{0x45, 0, 0, 60})
	ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, []byte{0x81, 0x07, 0x1f, 0x40})
	ae.Uint32(unix.NFTA_TRACE_PAD+1, 99) // NFTA_TRACE_CT_ID, not read
	ae.Uint32(nftaTraceCTStatus, CTStatusDstNAT)
	ae.Uint32(nftaTraceCTState, CTStateNew)
	attrs, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	msg := append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...)
	got, err := decodeTraceEvent(msg)
	if err != nil {
		t.Fatal(err)
	}
	want := TraceEvent{Family: nftables.TableFamilyINet, Table: "ctnet", Chain: "forward", Handle: 28,
		Type: unix.NFT_TRACETYPE_RULE, Verdict: VerdictJump, Target: "between_networks", ID: 0xdeadbeef, IIF: 3, OIF: 7,
		Network: []byte{0x45, 0, 0, 60}, Transport: []byte{0x81, 0x07, 0x1f, 0x40}, CTState: CTStateNew, CTStatus: CTStatusDstNAT}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v\nwant    %+v", got, want)
	}
}

// A trace event's network header gives its addresses whichever the IP version;
// anything cut short or of another version gives none.
func TestHeaderAddrs(t *testing.T) {
	ipv4 := []byte{0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 97, 1, 2, 10, 97, 1, 3}
	ipv6 := make([]byte, 40)
	ipv6[0], ipv6[6], ipv6[7] = 0x60, unix.IPPROTO_TCP, 64
	copy(ipv6[8:], netip.MustParseAddr("fd00:97:11::2").AsSlice())
	copy(ipv6[24:], netip.MustParseAddr("2001:db8:ff::2").AsSlice())
	for _, c := range []struct {
		name     string
		header   []byte
		src, dst string
	}{
		{"ipv4", ipv4, "10.97.1.2", "10.97.1.3"},
		{"ipv6", ipv6, "fd00:97:11::2", "2001:db8:ff::2"},
		{"ipv6 cut short", ipv6[:39], "invalid IP", "invalid IP"},
		{"ipv4 cut short", ipv4[:19], "invalid IP", "invalid IP"},
		{"version 5", append([]byte{0x55}, ipv6[1:]...), "invalid IP", "invalid IP"},
	} {
		src, dst := HeaderAddrs(c.header)
		if src.String() != c.src || dst.String() != c.dst {
			t.Errorf("%s: %s > %s, want %s > %s", c.name, src, dst, c.src, c.dst)
		}
	}
}
