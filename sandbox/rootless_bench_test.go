package sandbox

import (
	"context"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctnet/ctnet/internal/lab"
	"github.com/ctnet/ctnet/usernet"
)

// iperf3Gbps prints the received throughput of an iperf3 -J report on
// stdin in Gbit/s.
const iperf3Gbps = `python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'`

// BenchmarkRootlessIperf3 measures one iperf3 TCP stream the way the
// slirp4netns and pasta baselines were measured: container → host loopback
// through the gateway address (out), the same reversed (in), and host →
// published port → container. It reports Gbit/s; run with -benchtime=1x.
func BenchmarkRootlessIperf3(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		lab.Missing(b, "needs iperf3")
	}
	sb := lab.NewSandbox(b)
	sb.AllowTUN(b)
	server := sb.Command(context.Background(), "iperf3", "-s", "-B", "127.0.0.1", "-p", "5301")
	if err := server.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		server.Process.Kill()
		server.Wait()
	})
	time.Sleep(300 * time.Millisecond)
	secs := "5"
	client := func(args string) string {
		return "iperf3 -c 10.0.2.2 -p 5301 -t " + secs + " -O 1 -J " + args + " | " + iperf3Gbps
	}
	for i := 0; i < b.N; i++ {
		run := startRootless(b, sb, driverScenario{
			Argv:              []string{"iperf3", "-s", "-p", "5201"},
			AllowHostLoopback: true,
			Ports:             []usernet.Port{{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 5401, ContainerPort: 5201}},
			Hold:              true,
			Exec:              []string{"/bin/sh", "-c", "echo out $(" + client("") + "); echo in $(" + client("-R") + ")"},
		})
		time.Sleep(200 * time.Millisecond)
		out, err := sb.Command(context.Background(), "/bin/sh", "-c",
			"iperf3 -c 127.0.0.1 -p 5401 -t "+secs+" -O 1 -J | "+iperf3Gbps).CombinedOutput()
		if err != nil {
			b.Fatalf("published iperf3: %v: %s", err, out)
		}
		fields := strings.Fields(run.Ready.ExecOutput + " published " + string(out))
		for j := 0; j+1 < len(fields); j += 2 {
			if v, err := strconv.ParseFloat(fields[j+1], 64); err == nil {
				b.ReportMetric(v, fields[j]+"_Gbit/s")
			}
		}
		b.Logf("%s", strings.Join(fields, " "))
		run.finish()
	}
}
