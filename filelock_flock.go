//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockPollMax is the longest pause between two attempts to take a busy
// file lock. flock cannot wait on a context, so a busy lock is polled.
const lockPollMax = 50 * time.Millisecond

// flockSupported reports whether FileStore.Lock serialises processes.
const flockSupported = true

// lockFile takes an exclusive flock on path, creating the file with
// mode 0600, and returns the function that releases it (by closing the
// file). It waits until the lock is free or ctx ends.
func lockFile(ctx context.Context, path string) (release func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pandadocauth: opening lock file: %w", err)
	}
	pause := time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("pandadocauth: locking %s: %w", path, err)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("pandadocauth: waiting for the lock of %s: %w", path, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, lockPollMax)
	}
}

// syncDirOS flushes the directory dir, making a rename in it durable.
func syncDirOS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
