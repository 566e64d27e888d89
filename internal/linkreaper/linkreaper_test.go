package linkreaper_test

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/internal/linkreaper"
	"github.com/ctnet/ctnet/netns"
)

// lockName is the deleting process's abstract socket name (linkreaper's lockName).
const lockName = "\x00ctnet-delete-retired"

// TestStartHandsTheNFTSocketOn plays a deleting process that is running: a command
// with an nftables connection sends it a descriptor of its socket, whose last close
// waits for an RCU grace period after a commit that deleted anything; a command
// without one sends nothing.
func TestStartHandsTheNFTSocketOn(t *testing.T) {
	lab.RequireRoot(t)
	sb := lab.NewSandbox(t)
	var holder int
	err := sb.NS(t).Do(func() (err error) {
		holder, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(holder, &unix.SockaddrUnix{Name: lockName}); err != nil {
			return err
		}
		return unix.Listen(holder, unix.SOMAXCONN)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(holder)

	for _, tc := range []struct {
		name string
		nft  bool
	}{
		{"a command without an nftables connection", false},
		{"a command with one", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := sb.NS(t)
			var want uint64
			if tc.nft {
				conn, err := host.NFT()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := conn.ListTables(); err != nil {
					t.Fatal(err)
				}
				want = nftSocketInode(t, host)
			}
			if err := linkreaper.Start(host); err != nil {
				t.Fatal(err)
			}
			conn, _, err := unix.Accept(holder)
			if err != nil {
				t.Fatalf("the command did not ask the holder who it is: %v", err)
			}
			defer unix.Close(conn)
			oob := make([]byte, unix.CmsgSpace(4))
			// The command has closed its end: a message or the end of the stream.
			n, oobn, _, _, err := unix.Recvmsg(conn, make([]byte, 1), oob, unix.MSG_DONTWAIT)
			switch {
			case err != nil:
				t.Fatal(err)
			case !tc.nft && (n > 0 || oobn > 0):
				t.Fatal("a command without an nftables connection sent something")
			case !tc.nft:
				return
			case oobn == 0:
				t.Fatal("no nftables socket reached the holder")
			}
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil || len(msgs) != 1 {
				t.Fatalf("want one control message with the socket, got %d (%v)", len(msgs), err)
			}
			fds, err := unix.ParseUnixRights(&msgs[0])
			if err != nil || len(fds) != 1 {
				t.Fatalf("want one descriptor, got %v (%v)", fds, err)
			}
			defer unix.Close(fds[0])
			var got unix.Stat_t
			if err := unix.Fstat(fds[0], &got); err != nil {
				t.Fatal(err)
			}
			if got.Ino != want {
				t.Errorf("the holder got socket inode %d, want the nftables connection's %d", got.Ino, want)
			}
		})
	}
}

// nftSocketInode is the inode of the socket of host's nftables connection.
func nftSocketInode(t *testing.T, host *netns.NS) uint64 {
	t.Helper()
	f, err := host.NFTSocket()
	if err != nil || f == nil {
		t.Fatalf("no descriptor of the nftables socket: %v", err)
	}
	defer f.Close()
	var st unix.Stat_t
	raw, err := f.SyscallConn()
	if err == nil {
		raw.Control(func(fd uintptr) { err = unix.Fstat(int(fd), &st) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
