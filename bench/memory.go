package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ctnet/ctnet/internal/proc"
)

// monitorArg is the first argument of the supervisor `ctnet run -d` leaves running
// per container (cmd/ctnet).
const monitorArg = "__ctnet_monitor"

// memoryResult is the resident memory of the supervisors ctnet keeps per detached
// container, in KiB.
type memoryResult struct {
	Processes     int     `json:"processes"`
	RSSKiB        int     `json:"rss_kib"`
	PSSKiB        int     `json:"pss_kib"`
	RSSPerKiB     float64 `json:"rss_per_container_kib"`
	PSSPerKiB     float64 `json:"pss_per_container_kib"`
	PrivateKiB    int     `json:"private_kib"`
	PrivatePerKiB float64 `json:"private_per_container_kib"`
}

// measureSupervisors sums smaps_rollup over the supervisors of the ctnet binary exe.
func measureSupervisors(exe string) (memoryResult, error) {
	var r memoryResult
	for _, pid := range proc.OfExecutable(exe) {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := bytes.Split(cmdline, []byte{0})
		if len(args) < 2 || string(args[1]) != monitorArg {
			continue
		}
		f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue // it ended meanwhile
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 2 {
				continue
			}
			kib, _ := strconv.Atoi(fields[1])
			switch fields[0] {
			case "Rss:":
				r.RSSKiB += kib
			case "Pss:":
				r.PSSKiB += kib
			case "Private_Clean:", "Private_Dirty:":
				r.PrivateKiB += kib
			}
		}
		f.Close()
		r.Processes++
	}
	if r.Processes == 0 {
		return r, fmt.Errorf("no %s process of %s found", monitorArg, exe)
	}
	r.RSSPerKiB = float64(r.RSSKiB) / float64(r.Processes)
	r.PSSPerKiB = float64(r.PSSKiB) / float64(r.Processes)
	r.PrivatePerKiB = float64(r.PrivateKiB) / float64(r.Processes)
	return r, nil
}
