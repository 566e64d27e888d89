package firewall

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/lab"
)

// A flush is one burst of removals of ctnet's tables and what they held; element
// changes (every ctnet command's) and another table's removal before it are not in
// it.
func TestRemovals(t *testing.T) {
	lab.RequireRoot(t)
	sb := lab.NewSandbox(t)
	conn := nftConn(t, sb)
	if err := Rebuild(conn, representative()); err != nil {
		t.Fatal(err)
	}
	ns := sb.NS(t)
	events, err := ns.NFTEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	removals, err := WatchRemovals(events)
	if err != nil {
		t.Fatal(err)
	}

	endpoint := State{Endpoints: []Endpoint{{HostVeth: "vcnew", MAC: mac("02:42:ac:11:00:09"), IP: netip.MustParseAddr("172.17.0.9")}}}
	if err := Apply(conn, Change{Add: endpoint}); err != nil {
		t.Fatal(err)
	}
	if err := Apply(conn, Change{Remove: endpoint}); err != nil {
		t.Fatal(err)
	}
	loadScript(t, sb, "add table inet other\nadd chain inet other input { type filter hook input priority 0; }\nadd rule inet other input accept\ndelete table inet other\n")
	sb.MustRun(t, "nft", "flush", "ruleset")

	removed, err := removals.Next()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"table inet ctnet", "table bridge ctnet", "chain forward in table inet ctnet",
		"rule of chain forward in table inet ctnet", "set ports in table bridge ctnet"} {
		if !slices.Contains(removed, want) {
			t.Errorf("the flush's removals lack %q:\n%s", want, strings.Join(removed, "\n"))
		}
	}
	for _, r := range removed {
		if !strings.HasSuffix(r, " ctnet") {
			t.Errorf("removals name %q, which is not ctnet's", r)
		}
	}
	events.Close()
	if _, err := removals.Next(); err == nil {
		t.Errorf("Next on a closed connection: no error")
	}
}

// Structure finds a chain missing and chains with rules missing or added, which
// Diff, comparing elements, does not.
func TestStructure(t *testing.T) {
	lab.RequireRoot(t)
	sb := lab.NewSandbox(t)
	conn := nftConn(t, sb)
	state := representative()
	if err := Rebuild(conn, state); err != nil {
		t.Fatal(err)
	}
	if got, err := Structure(conn); err != nil || len(got) != 0 {
		t.Fatalf("Structure() of freshly built tables = %q, %v; want nothing", got, err)
	}
	sb.MustRun(t, "nft", "flush", "chain", "bridge", "ctnet", "prerouting")
	sb.MustRun(t, "nft", "delete", "chain", "inet", "ctnet", "raw")
	sb.MustRun(t, "nft", "add", "rule", "inet", "ctnet", "output", "accept")
	got, err := Structure(conn)
	if err != nil {
		t.Fatal(err)
	}
	count := func(rules []ruleSpec, chain string) int {
		return len(slices.DeleteFunc(slices.Clone(rules), func(r ruleSpec) bool { return r.chain != chain }))
	}
	output, prerouting := count(inetRules(), "output"), count(bridgeRules(), "prerouting")
	want := []string{
		"chain raw of table inet ctnet",
		fmt.Sprintf("rules of chain output in table inet ctnet (%d there, want %d)", output+1, output),
		fmt.Sprintf("rules of chain prerouting in table bridge ctnet (0 there, want %d)", prerouting),
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Structure() = %q, want %q", got, want)
	}
	if extra, missing, err := Diff(conn, state); err != nil || len(extra)+len(missing) != 0 {
		t.Errorf("Diff() = %q, %q, %v; want nothing: the elements are all there", extra, missing, err)
	}
}

// The socket filter passes the deletions of tables, chains, rules and sets and drops
// every other notification, element changes above all, in the kernel.
func TestDeletionFilter(t *testing.T) {
	raw, err := deletionFilter()
	if err != nil {
		t.Fatal(err)
	}
	var prog []bpf.Instruction
	for _, r := range raw {
		prog = append(prog, r.Disassemble())
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		subsys, msg uint16
		pass        bool
	}{
		{unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_DELTABLE, true},
		{unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_DELCHAIN, true},
		{unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_DELRULE, true},
		{unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_DELSET, true},
		{unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_NEWTABLE, false},
		{unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_NEWSETELEM, false},
		{unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_DELSETELEM, false},
		{unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_NEWGEN, false},
		{unix.NFNL_SUBSYS_CTNETLINK, unix.NFT_MSG_DELTABLE, false},
	}
	for _, c := range cases {
		msg := make([]byte, 20) // nlmsghdr and nfgenmsg
		binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
		binary.NativeEndian.PutUint16(msg[4:], c.subsys<<8|c.msg)
		n, err := vm.Run(msg)
		if err != nil {
			t.Fatal(err)
		}
		if pass := n > 0; pass != c.pass {
			t.Errorf("subsystem %d, message %d: passes %t, want %t", c.subsys, c.msg, pass, c.pass)
		}
	}
}
