package ezthrottle_test

import (
	"os/exec"
	"syscall"
)

// dieWithUs makes a child (the server, the target) get SIGKILL when the test binary dies, even
// by a panic or `go test -timeout`, which skip TestMain's cleanup: no orphans on a shared machine.
func dieWithUs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
