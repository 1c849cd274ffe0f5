//go:build !linux

package ezthrottle_test

import "os/exec"

// dieWithUs: only Linux can tie a child's life to ours; elsewhere TestMain's cleanup stops it.
func dieWithUs(cmd *exec.Cmd) {}
