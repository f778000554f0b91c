//go:build unix && !linux

package testserver

import "syscall"

// supported reports whether this system can run the servers.
const supported = true

// sysProcAttr runs a server as o (nil: as the test's user). deathSig is
// Linux's alone: elsewhere a server outlives a test binary that crashes.
func sysProcAttr(o *owner, deathSig syscall.Signal) *syscall.SysProcAttr {
	if o == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: o.uid, Gid: o.gid}}
}
