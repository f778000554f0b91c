package testserver

import "syscall"

// supported reports whether this system can run the servers.
const supported = true

// sysProcAttr runs a server as o (nil: as the test's user) and sends it
// deathSig if the test binary dies first.
func sysProcAttr(o *owner, deathSig syscall.Signal) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Pdeathsig: deathSig}
	if o != nil {
		attr.Credential = &syscall.Credential{Uid: o.uid, Gid: o.gid}
	}
	return attr
}
