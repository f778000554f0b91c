//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package pandadocauth

import (
	"context"
	"fmt"
	"os"
)

// flockSupported reports whether FileStore.Lock serialises processes.
const flockSupported = false

// lockFile does nothing on systems without flock: FileStore.Lock does
// not serialise processes there (see FileStore).
func lockFile(ctx context.Context, path string) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pandadocauth: waiting for the lock of %s: %w", path, err)
	}
	return func() {}, nil
}

// syncDirOS flushes the directory where the system allows it, and
// ignores the error where it does not (Windows cannot flush a directory).
func syncDirOS(dir string) error {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
