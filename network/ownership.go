package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/firewall"
	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/store"
)

const (
	metaHost       = "host"       // which boot and host namespace the kernel state was made in
	metaHostNetNS  = "host netns" // that namespace as lsns and /proc/PID/ns/net name it
	metaForwarding = "forwarding" // "1" when ctnet turned net.ipv4.ip_forward on
)

// hostIdentity names this boot and this host namespace ("boot id/cookie"): namespace
// inode numbers are reused, the namespace cookie is not. name is the namespace as
// lsns and /proc/PID/ns/net show it, for people.
func (m *Manager) hostIdentity() (id, name string, err error) {
	sock, err := m.host.RouteSocket()
	if err != nil {
		return "", "", err
	}
	cookie, err := unix.GetsockoptUint64(sock.Socket.GetFd(), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return "", "", fmt.Errorf("identify host namespace: %w", err)
	}
	ino, err := m.host.ID()
	if err != nil {
		return "", "", err
	}
	return proc.BootID() + "/" + strconv.FormatUint(cookie, 10), fmt.Sprintf("net:[%d]", ino), nil
}

// sameBoot reports whether two host identities were taken during the same boot.
func sameBoot(a, b string) bool {
	bootA, _, _ := strings.Cut(a, "/")
	bootB, _, _ := strings.Cut(b, "/")
	return bootA == bootB
}

// checkHostNamespace refuses to work from a host namespace other than the one the
// root's bridges, veths, firewall tables and forwarding switch live in, during the
// boot they were made in. Restoring them here (as after a reboot) would leave them
// behind in this namespace, cut the real host's containers off their veths, and
// forget that ctnet turned forwarding on there. Only a new boot id means the old
// namespace is gone; a namespace that merely differs is a command run in the wrong
// place (a forgotten nsenter, a container that mounts the root). It reports whether
// the kernel state was made in an earlier boot.
func (m *Manager) checkHostNamespace(tx *store.Tx, id, name string) (rebooted bool, err error) {
	prev := tx.Meta(metaHost)
	switch {
	case prev == "" || prev == id:
		return false, nil
	case !sameBoot(prev, id):
		return true, nil
	}
	owner := tx.Meta(metaHostNetNS)
	if owner == "" {
		owner = "another one (cookie " + prev[strings.Index(prev, "/")+1:] + ")"
	}
	return false, tagged(ErrConflict, "ctnet root %s belongs to network namespace %s, not to this one (%s): run ctnet in that namespace, or use another --root", m.stateDir, owner, name)
}

// checkHost runs first in every change. It refuses a host namespace other than the
// root's (checkHostNamespace) and one whose tables another root manages
// (checkOwner), and after a reboot restores networks and firewall from the store
// before anything else runs.
func (m *Manager) checkHost(o *op) error {
	id, name, err := m.hostIdentity()
	if err != nil {
		return err
	}
	rebooted, err := m.checkHostNamespace(o.tx, id, name)
	if err != nil {
		return err
	}
	tookOver, stale, err := m.checkOwner(o)
	if err != nil {
		return err
	}
	if o.dryRun() && rebooted {
		return errors.New("--dry-run cannot show this change: the machine rebooted since the last one, and the next change restores every network first (run ctnet gc to restore them, then try again)")
	}
	if tookOver {
		report, err := m.reconcile(o, false)
		if err != nil {
			return fmt.Errorf("clean up after the root the firewall tables were recorded as: %w", err)
		}
		for _, line := range report {
			m.log.Warn(line)
		}
	}
	if stale {
		m.log.Warn("rebuilding the firewall tables: an older ctnet built them with other rules")
		if err := m.rebuildFirewall(o.tx); err != nil {
			return fmt.Errorf("rebuild the firewall tables an older ctnet built: %w", err)
		}
	}
	if rebooted {
		m.log.Info("the machine rebooted since the last change: restoring networks and firewall from the store", "was", o.tx.Meta(metaHost), "now", id)
		for _, key := range []string{metaForwarding, metaForwarding6} {
			if err := o.tx.PutMeta(key, ""); err != nil {
				return err
			}
		}
		if _, err := m.reconcile(o, true); err != nil {
			return fmt.Errorf("restore after a reboot: %w", err)
		}
	}
	if o.tx.Meta(metaHost) == id && o.tx.Meta(metaHostNetNS) == name {
		return nil
	}
	if err := o.tx.PutMeta(metaHost, id); err != nil {
		return err
	}
	return o.tx.PutMeta(metaHostNetNS, name)
}

// checkOwner refuses to work on a host namespace whose tables another ctnet root
// manages: both would use the same tables and bridge names, and each one's gc would
// remove the other's objects. Tables recorded as a root that no longer exists, or
// made before roots were recorded, become this root's, and it reports that it took
// them over: what the other root left is then for this one's gc to remove. It also
// reports tables built with an older ctnet's rules, which must be rebuilt (a change
// otherwise touches only elements, and would leave a fixed rule unfixed).
func (m *Manager) checkOwner(o *op) (tookOver, stale bool, err error) {
	if m.rootless {
		return false, false, nil // no tables
	}
	conn, err := m.host.NFT()
	if err != nil {
		return false, false, err
	}
	rec, err := firewall.ReadRecord(conn)
	o.noTables = err == nil && !rec.Present
	if err != nil || !rec.Present {
		return false, false, err
	}
	if rec.Owner == m.stateDir {
		return false, !rec.Current, nil
	}
	if rootExists(rec.Owner) {
		return false, false, tagged(ErrConflict, "this host's network namespace is managed by the ctnet root %s: use --root %s, or give this root a network namespace of its own", rec.Owner, rec.Owner)
	}
	if m.journal != nil {
		return false, false, m.journal.Unsupported("taking over the firewall tables of ctnet root " + rec.Owner + ", which no longer exists")
	}
	m.log.Warn("taking over the firewall tables: the ctnet root they were recorded as no longer exists", "root", rec.Owner)
	return true, !rec.Current, firewall.Claim(conn, m.stateDir)
}

// rootExists reports whether stateDir holds a ctnet database.
func rootExists(stateDir string) bool {
	if stateDir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(stateDir, store.FileName))
	return err == nil
}
