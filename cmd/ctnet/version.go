package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func (a *app) versionCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show ctnet's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := versionInfo{clientVersion: clientVersion{Version: "unknown", GoVersion: runtime.Version(), Os: runtime.GOOS, Arch: runtime.GOARCH}}
			if info, ok := debug.ReadBuildInfo(); ok {
				v.Version = versionOf(info)
			}
			v.Client = v.clientVersion
			if format != "" {
				return writeTemplate(a.stdout, format, []any{v})
			}
			fmt.Fprintf(a.stdout, "Version:     %s\nGo version:  %s\nOS/Arch:     %s/%s\n", v.Version, v.GoVersion, v.Os, v.Arch)
			return nil
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Go template (e.g. '{{.Version}}', Docker's '{{.Client.Version}}', or '{{json .}}')")
	return cmd
}

// versionInfo is what `version --format` reads: the fields by their names, and again
// under Client, where Docker's are ('{{.Client.Version}}'; ctnet has no server).
type versionInfo struct {
	clientVersion
	Client clientVersion
}

// clientVersion has Docker's field names.
type clientVersion struct {
	Version   string
	GoVersion string
	Os        string
	Arch      string
}
