//go:build !linux

package host

import "os/exec"

// setPdeathsig has no equivalent here; go-plugin's managed cleanup still stops plugins on a clean exit.
func setPdeathsig(*exec.Cmd) {}
