package network

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/proc"
	"github.com/ctnet/ctnet/store"
)

// recordStarted records the container's process, making it "running".
func (m *Manager) recordStarted(ctx context.Context, ref string, process ProcessID) error {
	return m.mutate(ctx, func(o *op) error {
		c, err := o.tx.Container(ref)
		if err != nil {
			return notFound("container", ref, err)
		}
		c.Process, c.State = proc.ID(process), store.StateRunning
		return o.tx.PutContainer(c)
	})
}

// exited releases the container's network after its process ended with exitCode;
// with auto-remove the record goes too. It is idempotent.
func (m *Manager) exited(ctx context.Context, ref string, exitCode int) error {
	// A container rm -f removed is found gone by a read, without a change's look at
	// the host's firewall, whose socket's close at the supervisor's exit, which rm
	// waits for, would wait for the removal's release (CloseIdleSockets).
	removed := false
	err := m.view(func(tx *store.Tx) error {
		_, err := tx.Container(ref)
		removed = errors.Is(err, store.ErrNotFound)
		return nil
	})
	if err == nil && removed {
		return nil
	}
	return m.mutate(ctx, func(o *op) error {
		c, err := o.tx.Container(ref)
		if errors.Is(err, store.ErrNotFound) {
			return nil // removed meanwhile (rm -f)
		}
		if err != nil {
			return err
		}
		if c.State == store.StateExited {
			if c.ExitCode < 0 && exitCode >= 0 {
				c.ExitCode = exitCode
				return o.tx.PutContainer(c)
			}
			return nil
		}
		return m.release(o, c, exitCode)
	})
}

// release frees everything the container holds on the host: firewall entries, veths,
// its own namespace, leases, ports, veth names; the record stays as "exited" unless
// auto-remove. Teardown steps tolerate what is already gone. exitCode -1 means
// unknown.
func (m *Manager) release(o *op, c *store.Container, exitCode int) error {
	if err := m.unplumb(o, c); err != nil {
		return err
	}
	c.State, c.ExitCode, c.Finished = store.StateExited, exitCode, time.Now().UTC()
	if c.AutoRemove {
		return m.deleteRecord(o, c)
	}
	return o.tx.PutContainer(c)
}

func (m *Manager) deleteRecord(o *op, c *store.Container) error {
	o.journal.Comment("remove " + c.RuntimeDir)
	if o.dryRun() {
		return o.tx.DeleteContainer(c)
	}
	if err := os.RemoveAll(c.RuntimeDir); err != nil {
		return fmt.Errorf("remove runtime files of %s: %w", c.Name, err)
	}
	return o.tx.DeleteContainer(c)
}

// Remove removes containers. A running one is refused unless force, which kills it;
// an attached namespace is detached and left to its owner.
func (m *Manager) Remove(ctx context.Context, ref string, force bool) error {
	var supervisor proc.ID
	err := m.mutate(ctx, func(o *op) error {
		c, err := o.tx.Container(ref)
		if err != nil {
			return notFound("container", ref, err)
		}
		supervisor = c.Supervisor
		return m.remove(o, c, force)
	})
	if err == nil && supervisor.Valid() && supervisor != self() && !m.dryRun() {
		// A killed container's supervisor still wakes up to release it (finding it
		// gone); once rm returns nothing of the container may still work on the root.
		if _, werr := waitExit(ctx, supervisor, 10*time.Second); werr != nil {
			return werr
		}
	}
	return err
}

func (m *Manager) remove(o *op, c *store.Container, force bool) error {
	if c.State != store.StateExited && isAlive(c) && !c.Attached {
		if !force {
			return tagged(ErrConflict, "container %s is running: stop it first, or use rm -f", c.Name)
		}
		o.journal.Comment("kill container " + c.Name + "'s process and wait for it to end")
		if !o.dryRun() {
			if err := killAndWait(o.ctx, c); err != nil {
				return err
			}
		}
	}
	if err := m.checkNoSharers(o, c); err != nil {
		return err
	}
	if c.State != store.StateExited {
		if err := m.unplumb(o, c); err != nil {
			return err
		}
	}
	return m.deleteRecord(o, c)
}

// checkNoSharers refuses to take away a namespace that live containers joined.
func (m *Manager) checkNoSharers(o *op, c *store.Container) error {
	if !c.OwnsNetNS {
		return nil
	}
	all, err := o.tx.Containers()
	if err != nil {
		return err
	}
	for _, other := range all {
		if other.SharedWith == c.ID && other.State != store.StateExited && isAlive(other) {
			return tagged(ErrConflict, "container %s runs in the network namespace of %s: remove it first", other.Name, c.Name)
		}
	}
	return nil
}

func killAndWait(ctx context.Context, c *store.Container) error {
	target := c.Process
	if !target.Valid() {
		target = c.Supervisor
	}
	if err := target.Signal(unix.SIGKILL); err != nil {
		return err
	}
	if exited, err := waitExit(ctx, target, 10*time.Second); err != nil {
		return err
	} else if !exited {
		return fmt.Errorf("kill container %s: process %d did not exit", c.Name, target.PID)
	}
	if c.OwnsNetNS {
		proc.KillInNetNS(proc.NetNSInode(c.NetNS))
	}
	return nil
}

// Stop sends SIGTERM to the container's process, SIGKILL after timeout, and waits
// until its supervisor has released the network (or releases it itself if the
// supervisor is gone). If ctx ends while it waits, the signals sent stay sent and
// the network is left to the supervisor.
func (m *Manager) Stop(ctx context.Context, ref string, timeout time.Duration) error {
	var c *store.Container
	err := m.view(func(tx *store.Tx) (err error) {
		c, err = tx.Container(ref)
		return notFound("container", ref, err)
	})
	if err != nil {
		return err
	}
	if c.Attached {
		return invalid("container %s is an attached namespace without a process: use rm to detach it", c.Name)
	}
	if c.State != store.StateExited && isAlive(c) {
		target := c.Process
		if !target.Valid() {
			target = c.Supervisor
		}
		if err := target.Signal(unix.SIGTERM); err != nil {
			return err
		}
		exited, err := waitExit(ctx, target, timeout)
		if err != nil {
			return err
		}
		if !exited {
			if err := target.Signal(unix.SIGKILL); err != nil {
				return err
			}
			if _, err := waitExit(ctx, target, 10*time.Second); err != nil {
				return err
			}
		}
		// The supervisor releases the network when it sees the exit; give it the chance
		// to record the real exit status.
		if _, err := waitExit(ctx, c.Supervisor, 5*time.Second); err != nil {
			return err
		}
	}
	return m.mutate(ctx, func(o *op) error {
		c, err := o.tx.Container(c.ID)
		if errors.Is(err, store.ErrNotFound) {
			return nil // auto-removed
		}
		if err != nil || c.State == store.StateExited {
			return err
		}
		return m.release(o, c, -1)
	})
}

// isAlive reports whether a container still holds its network: its process runs, or,
// before the process is recorded, its supervisor does — or, if the supervisor died
// between starting the process and recording it, some process is in the container's
// own namespace. An attached namespace is alive until rm.
func isAlive(c *store.Container) bool {
	switch {
	case c.Attached:
		return true
	case c.Process.Valid():
		return c.Process.Alive()
	case c.Supervisor.Alive():
		return true
	default:
		return c.OwnsNetNS && c.Mode != store.ModeUserNet && proc.NetNSInUse(proc.NetNSInode(c.NetNS))
	}
}

// stateOf is the state a container is in now: a container whose process died
// unnoticed reads as exited.
func (m *Manager) stateOf(c *store.Container) string {
	if c.State != store.StateExited && !isAlive(c) {
		return store.StateExited
	}
	return c.State
}
