package store

import (
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/proc"
)

// openTemp opens a store in a fresh directory and closes it when the test ends.
func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustUpdate(t *testing.T, s *Store, fn func(*Tx) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func mustView(t *testing.T, s *Store, fn func(*Tx) error) {
	t.Helper()
	if err := s.View(fn); err != nil {
		t.Fatal(err)
	}
}

// id64 makes a 64-character ID from a recognisable prefix, as newID's hex would be.
func id64(prefix string) string { return prefix + strings.Repeat("0", 64-len(prefix)) }

var created = time.Date(2025, 3, 1, 12, 30, 0, 0, time.UTC)

func sampleNetwork() *Network {
	return &Network{
		ID: id64("aaaa1111"), Name: "web", Driver: "bridge", Bridge: "ct-aaaa1111",
		Subnet: netip.MustParsePrefix("172.18.0.0/16"), Gateway: netip.MustParseAddr("172.18.0.1"),
		MTU: 1500, Masquerade: true, Labels: map[string]string{"env": "test"}, Created: created,
	}
}

func sampleContainer() *Container {
	return &Container{
		ID: id64("cccc2222"), Name: "c1", Created: created, Mode: ModeBridge,
		NetNS: "/run/ctnet/netns/" + id64("cccc2222"), OwnsNetNS: true, Hostname: "c1",
		Command: []string{"sleep", "600"},
		Attachments: []Attachment{{Network: "web", NetworkID: id64("aaaa1111"), IfName: "eth0", HostVeth: "vccccc2222",
			IP: netip.MustParseAddr("172.18.0.2"), PrefixLen: 16, Gateway: netip.MustParseAddr("172.18.0.1"), MAC: "02:42:ac:12:00:02"}},
		Ports: []Port{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8080, ContainerPort: 80, Proto: "tcp",
			ContainerIP: netip.MustParseAddr("172.18.0.2")}},
		Detach: true, State: StateRunning, Process: proc.ID{PID: 42, StartTime: 7, BootID: "b"},
		Supervisor: proc.ID{PID: 41, StartTime: 6, BootID: "b"}, ExitCode: 3, Finished: created.Add(time.Minute),
		RuntimeDir: "/run/ctnet/containers/" + id64("cccc2222"),
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	n, c := sampleNetwork(), sampleContainer()
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.PutNetwork(n); err != nil {
			return err
		}
		return tx.PutContainer(c)
	})
	s.Close()

	// Read back through a fresh, read-only open: what was committed is on disk.
	s, err = OpenShared(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustView(t, s, func(tx *Tx) error {
		gotN, err := tx.Network("web")
		if err != nil || !reflect.DeepEqual(gotN, n) {
			t.Errorf("Network(web) = %+v, %v; want %+v", gotN, err, n)
		}
		gotC, err := tx.Container("c1")
		if err != nil || !reflect.DeepEqual(gotC, c) {
			t.Errorf("Container(c1) = %+v, %v; want %+v", gotC, err, c)
		}
		ns, err := tx.Networks()
		if err != nil || len(ns) != 1 || !reflect.DeepEqual(ns[0], n) {
			t.Errorf("Networks() = %v, %v; want [%+v]", ns, err, n)
		}
		cs, err := tx.Containers()
		if err != nil || len(cs) != 1 || !reflect.DeepEqual(cs[0], c) {
			t.Errorf("Containers() = %v, %v; want [%+v]", cs, err, c)
		}
		return nil
	})
}

func TestDeleteRecords(t *testing.T) {
	s := openTemp(t)
	n, c := sampleNetwork(), sampleContainer()
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.PutNetwork(n); err != nil {
			return err
		}
		if err := tx.PutContainer(c); err != nil {
			return err
		}
		return tx.PutLease(n.ID, netip.MustParseAddr("172.18.0.2"), c.ID)
	})
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.DeleteContainer(c); err != nil {
			return err
		}
		return tx.DeleteNetwork(n)
	})
	mustView(t, s, func(tx *Tx) error {
		for _, ref := range []string{n.Name, n.ID, n.ID[:8]} {
			if _, err := tx.Network(ref); !errors.Is(err, ErrNotFound) {
				t.Errorf("Network(%q) after delete: %v, want ErrNotFound", ref, err)
			}
		}
		for _, ref := range []string{c.Name, c.ID, c.ID[:8]} {
			if _, err := tx.Container(ref); !errors.Is(err, ErrNotFound) {
				t.Errorf("Container(%q) after delete: %v, want ErrNotFound", ref, err)
			}
		}
		if leases, err := tx.Leases(n.ID); err != nil || len(leases) != 0 {
			t.Errorf("Leases after DeleteNetwork = %v, %v; want none", leases, err)
		}
		if cur := tx.Cursor(n.ID, false); cur.IsValid() {
			t.Errorf("Cursor after DeleteNetwork = %v, want none", cur)
		}
		return nil
	})
}

func TestLookupByIDPrefix(t *testing.T) {
	s := openTemp(t)
	nets := []*Network{
		{ID: id64("abcd1234"), Name: "one"},
		{ID: id64("abcd5678"), Name: "two"},
		{ID: id64("ffff0000"), Name: "three"},
		{ID: id64("0123"), Name: "ffff"}, // a name that is also a prefix of another's ID
	}
	mustUpdate(t, s, func(tx *Tx) error {
		for _, n := range nets {
			if err := tx.PutNetwork(n); err != nil {
				return err
			}
		}
		return nil
	})
	tests := []struct {
		ref      string
		wantName string
		wantErr  error
	}{
		{"one", "one", nil},
		{id64("abcd1234"), "one", nil},
		{"abcd1", "one", nil},
		{"abcd5", "two", nil},
		{"ffff0", "three", nil},
		{"ffff", "ffff", nil}, // the name wins over an ID prefix
		{"abcd", "", ErrConflict},
		{"abc", "", ErrNotFound}, // prefixes shorter than 4 are not looked up
		{"", "", ErrNotFound},
		{"abcd9", "", ErrNotFound},
		{id64("abcd1234") + "0", "", ErrNotFound},
		{"zzzz", "", ErrNotFound},
	}
	mustView(t, s, func(tx *Tx) error {
		for _, tt := range tests {
			got, err := tx.Network(tt.ref)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Network(%q) = %v, %v; want %v", tt.ref, got, err, tt.wantErr)
				}
				continue
			}
			if err != nil || got.Name != tt.wantName {
				t.Errorf("Network(%q) = %v, %v; want network %s", tt.ref, got, err, tt.wantName)
			}
		}
		return nil
	})
	// A creation asks for the name alone: one that is an ID prefix is still free.
	mustView(t, s, func(tx *Tx) error {
		if n, err := tx.NetworkNamed("ffff"); err != nil || n.Name != "ffff" {
			t.Errorf("NetworkNamed(ffff) = %v, %v; want the network named ffff", n, err)
		}
		for _, ref := range []string{"abcd", "abcd1", id64("abcd1234")} {
			if n, err := tx.NetworkNamed(ref); !errors.Is(err, ErrNotFound) {
				t.Errorf("NetworkNamed(%q) = %v, %v; want ErrNotFound: no network has that name", ref, n, err)
			}
		}
		return nil
	})
	// Containers resolve the same way.
	mustUpdate(t, s, func(tx *Tx) error {
		for _, c := range []*Container{{ID: id64("beef01"), Name: "a"}, {ID: id64("beef02"), Name: "b"}} {
			if err := tx.PutContainer(c); err != nil {
				return err
			}
		}
		return nil
	})
	mustView(t, s, func(tx *Tx) error {
		if c, err := tx.Container("beef02"); err != nil || c.Name != "b" {
			t.Errorf("Container(beef02) = %v, %v; want b", c, err)
		}
		if _, err := tx.Container("beef"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "more than one") {
			t.Errorf("Container(beef) = %v, want ErrConflict naming the ambiguity", err)
		}
		if c, err := tx.ContainerNamed("beef"); !errors.Is(err, ErrNotFound) {
			t.Errorf("ContainerNamed(beef) = %v, %v; want ErrNotFound: a name no container has, however many IDs it begins", c, err)
		}
		if c, err := tx.ContainerNamed("a"); err != nil || c.Name != "a" {
			t.Errorf("ContainerNamed(a) = %v, %v; want a", c, err)
		}
		return nil
	})
}

func TestLeases(t *testing.T) {
	s := openTemp(t)
	netA, netB := id64("aa"), id64("bb")
	ip := netip.MustParseAddr
	mustUpdate(t, s, func(tx *Tx) error {
		for _, l := range []struct {
			net, ip, owner string
		}{{netA, "10.0.0.2", "c1"}, {netA, "10.0.0.3", "c2"}, {netB, "10.0.0.2", "c3"}} {
			if err := tx.PutLease(l.net, ip(l.ip), l.owner); err != nil {
				return err
			}
		}
		return nil
	})
	mustView(t, s, func(tx *Tx) error {
		if got := tx.LeaseOwner(netA, ip("10.0.0.2")); got != "c1" {
			t.Errorf("LeaseOwner(A, .2) = %q, want c1", got)
		}
		if got := tx.LeaseOwner(netB, ip("10.0.0.2")); got != "c3" {
			t.Errorf("LeaseOwner(B, .2) = %q, want c3: networks have separate leases", got)
		}
		if got := tx.LeaseOwner(netA, ip("10.0.0.9")); got != "" {
			t.Errorf("LeaseOwner(A, .9) = %q, want none", got)
		}
		if got := tx.LeaseOwner(id64("cc"), ip("10.0.0.2")); got != "" {
			t.Errorf("LeaseOwner on a network without leases = %q", got)
		}
		if got := tx.Cursor(netA, false); got != ip("10.0.0.3") {
			t.Errorf("Cursor(A) = %v, want the last allocated 10.0.0.3", got)
		}
		want := map[netip.Addr]string{ip("10.0.0.2"): "c1", ip("10.0.0.3"): "c2"}
		if got, err := tx.Leases(netA); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Leases(A) = %v, %v; want %v", got, err, want)
		}
		return nil
	})
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.DeleteLease(netA, ip("10.0.0.2")); err != nil {
			return err
		}
		return tx.DeleteLease(id64("cc"), ip("10.0.0.2")) // nothing to delete is not an error
	})
	mustView(t, s, func(tx *Tx) error {
		if got := tx.LeaseOwner(netA, ip("10.0.0.2")); got != "" {
			t.Errorf("LeaseOwner after DeleteLease = %q", got)
		}
		if got := tx.Cursor(netA, false); got != ip("10.0.0.3") {
			t.Errorf("Cursor(A) after a release = %v, want it kept at 10.0.0.3 so the address is reused last", got)
		}
		return nil
	})
}

func TestPorts(t *testing.T) {
	s := openTemp(t)
	ip := netip.MustParseAddr
	anyAddr := Port{Proto: "tcp", HostPort: 8080}
	local := Port{Proto: "tcp", HostIP: ip("127.0.0.1"), HostPort: 8080}
	udp := Port{Proto: "udp", HostPort: 8080}
	other := Port{Proto: "tcp", HostPort: 8081}
	mustUpdate(t, s, func(tx *Tx) error {
		for p, owner := range map[Port]string{anyAddr: "c1", local: "c2", udp: "c3", other: "c4"} {
			if err := tx.PutPort(p, owner); err != nil {
				return err
			}
		}
		return nil
	})
	mustView(t, s, func(tx *Tx) error {
		// Every address reads back as the unspecified address.
		want := map[netip.Addr]string{netip.IPv6Unspecified(): "c1", ip("127.0.0.1"): "c2"}
		if got := tx.PortHolders("tcp", 8080); !reflect.DeepEqual(got, want) {
			t.Errorf("PortHolders(tcp, 8080) = %v, want %v", got, want)
		}
		if got := tx.PortHolders("udp", 8080); len(got) != 1 || got[netip.IPv6Unspecified()] != "c3" {
			t.Errorf("PortHolders(udp, 8080) = %v, want only c3", got)
		}
		if got := tx.PortHolders("sctp", 8080); len(got) != 0 {
			t.Errorf("PortHolders(sctp, 8080) = %v, want none", got)
		}
		all := tx.Ports()
		if len(all) != 4 || all[Port{Proto: "tcp", HostIP: ip("127.0.0.1"), HostPort: 8080}] != "c2" ||
			all[Port{Proto: "tcp", HostIP: netip.IPv6Unspecified(), HostPort: 8081}] != "c4" {
			t.Errorf("Ports() = %v", all)
		}
		return nil
	})
	// What Ports returns deletes what PutPort wrote, as gc relies on.
	mustUpdate(t, s, func(tx *Tx) error {
		for p := range tx.Ports() {
			if err := tx.DeletePort(p); err != nil {
				return err
			}
		}
		return nil
	})
	mustView(t, s, func(tx *Tx) error {
		if got := tx.Ports(); len(got) != 0 {
			t.Errorf("Ports() after deleting each = %v", got)
		}
		return nil
	})
}

func TestVethsAndMeta(t *testing.T) {
	s := openTemp(t)
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.PutVeth("vc01234567", "c1"); err != nil {
			return err
		}
		if err := tx.PutVeth("vc89abcdef-1", "c2"); err != nil {
			return err
		}
		return tx.PutMeta("host", "h1")
	})
	mustView(t, s, func(tx *Tx) error {
		if got := tx.VethOwner("vc01234567"); got != "c1" {
			t.Errorf("VethOwner = %q, want c1", got)
		}
		want := map[string]string{"vc01234567": "c1", "vc89abcdef-1": "c2"}
		if got := maps.Collect(tx.Veths()); !reflect.DeepEqual(got, want) {
			t.Errorf("Veths() = %v, want %v", got, want)
		}
		if got := tx.Meta("host"); got != "h1" {
			t.Errorf("Meta(host) = %q, want h1", got)
		}
		// User keys cannot overwrite the schema version.
		if got := tx.Meta("schema"); got != "" {
			t.Errorf("Meta(schema) = %q, want the schema version out of reach", got)
		}
		return nil
	})
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.DeleteVeth("vc01234567"); err != nil {
			return err
		}
		return tx.PutMeta("host", "")
	})
	mustView(t, s, func(tx *Tx) error {
		if got := tx.VethOwner("vc01234567"); got != "" {
			t.Errorf("VethOwner after delete = %q", got)
		}
		if got := tx.Meta("host"); got != "" {
			t.Errorf("Meta(host) after setting it empty = %q", got)
		}
		return nil
	})
}

func TestUpdateRollsBackOnError(t *testing.T) {
	s := openTemp(t)
	boom := errors.New("validation failed")
	err := s.Update(func(tx *Tx) error {
		if err := tx.PutNetwork(sampleNetwork()); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want the function's own error unchanged", err)
	}
	if strings.Contains(err.Error(), "corrupt") {
		t.Errorf("a failed update is reported as corruption: %v", err)
	}
	mustView(t, s, func(tx *Tx) error {
		if _, err := tx.Network("web"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Network(web) after a failed update: %v, want ErrNotFound", err)
		}
		return nil
	})
}

func TestOpenSharedWithoutDatabaseReadsEmpty(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := OpenShared(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustView(t, s, func(tx *Tx) error {
		if ns, err := tx.Networks(); err != nil || len(ns) != 0 {
			t.Errorf("Networks() = %v, %v; want none", ns, err)
		}
		if _, err := tx.Container("x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Container(x) = %v, want ErrNotFound", err)
		}
		if got := tx.PortHolders("tcp", 80); len(got) != 0 {
			t.Errorf("PortHolders = %v", got)
		}
		return nil
	})
	if err := s.Update(func(*Tx) error { return nil }); err == nil {
		t.Error("Update on a shared (read-only) store succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenShared created %s: %v", FileName, err)
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, s, func(tx *Tx) error { return tx.tx.Bucket(bMeta).Put([]byte("schema"), []byte{schemaVersion + 1}) })
	s.Close()
	_, err = Open(dir)
	if err == nil || !strings.Contains(err.Error(), "upgrade ctnet") || !strings.Contains(err.Error(), filepath.Join(dir, FileName)) {
		t.Fatalf("Open of a newer schema = %v, want an error naming the file and saying to upgrade", err)
	}
	if errors.Is(err, ErrCorrupt) {
		t.Errorf("a newer schema is reported as corruption: %v", err)
	}
}

// TestFileModes checks that the store keeps its files private (0600) and its
// directories 0700, with a umask that would let anything through.
func TestFileModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	base := t.TempDir()
	dir := filepath.Join(base, "a", "b")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, s, func(tx *Tx) error { return tx.PutNetwork(sampleNetwork()) })
	s.Close()
	for path, want := range map[string]os.FileMode{
		filepath.Join(base, "a"):     os.ModeDir | 0o700,
		dir:                          os.ModeDir | 0o700,
		filepath.Join(dir, "lock"):   0o600,
		filepath.Join(dir, FileName): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode(); got != want {
			t.Errorf("%s has mode %v, want %v", path, got, want)
		}
	}
	// A shared open of a new directory creates it the same way.
	shared := filepath.Join(base, "c")
	s, err = OpenShared(shared)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	fi, err := os.Stat(shared)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != os.ModeDir|0o700 {
		t.Errorf("OpenShared made %s with mode %v, want drwx------", shared, fi.Mode())
	}
}
