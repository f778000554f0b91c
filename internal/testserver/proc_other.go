//go:build !unix

package testserver

import "syscall"

// supported reports whether this system can run the servers: the servers
// listen on Unix sockets, and run as another user where needed.
const supported = false

func sysProcAttr(o *owner, deathSig syscall.Signal) *syscall.SysProcAttr { return nil }
