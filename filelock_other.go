//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package pandadocauth

import (
	"context"
	"fmt"
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

// syncDirOS does nothing: not every system can flush a directory (Windows
// cannot open one as a file).
func syncDirOS(dir string) error { return nil }
