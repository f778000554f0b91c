package pandadocauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/oauth2"
)

// Store persists a grant's token across restarts and processes. A
// TokenSource saves every token it obtains before any request uses it, so
// a rotated refresh token is never lost, and it reads the Store again
// before each refresh, so a token that another process stored is adopted
// instead of refreshed again.
//
// Implementations must be safe for concurrent use.
type Store interface {
	// Load returns the stored token, or (nil, nil) when nothing is
	// stored yet.
	Load(ctx context.Context) (*oauth2.Token, error)
	// Save stores t, replacing what was stored.
	Save(ctx context.Context, t *oauth2.Token) error
}

// Locker serialises refreshes of one grant across processes. When a
// TokenSource's Store also implements Locker, a refresh runs as: Lock,
// read the Store again, adopt the stored token if another process already
// refreshed it, else refresh and Save, then unlock. Within one process
// refreshes are already deduplicated, so a process takes the lock at most
// once per refresh.
//
// Lock blocks until the lock is held or ctx ends. A lock must not outlive
// a crashed holder (for example a PostgreSQL advisory lock, which dies
// with its session).
type Locker interface {
	Lock(ctx context.Context) (unlock func(), err error)
}

// FileStore is a Store and a Locker that keeps the token in one JSON
// file at Path, for one process or several on one machine (cron jobs,
// command-line runs) sharing a grant.
//
// Save writes atomically (a temporary file in the same directory, then a
// rename) with mode 0600, creating the directory with mode 0700 if
// needed, so a reader never sees a half-written token. It then flushes
// the file and its directory to disk (fsync), so that a power loss cannot
// bring back a token that a refresh replaced. When Path is a symbolic
// link, Save writes to the file it points to and leaves the link in
// place; a link to nothing is an error.
//
// Lock takes an exclusive OS file lock (flock) on a lock file beside the
// token file, Path (after symbolic links) plus ".lock", which it creates
// and never removes. Processes sharing the file therefore refresh the
// grant once: a TokenSource takes the lock, reads the file again, and
// adopts the token another process saved. The lock dies with the process
// that holds it. On systems without flock (Windows, for example), Lock
// only returns a no-op unlock, and processes are not serialised.
//
// The zero value is not usable: set Path. A FileStore is safe for
// concurrent use.
type FileStore struct {
	// Path is the file holding the token.
	Path string
}

var (
	_ Store  = (*FileStore)(nil)
	_ Locker = (*FileStore)(nil)
)

// Load reads the token from the file. A missing file is (nil, nil).
func (f *FileStore) Load(ctx context.Context) (*oauth2.Token, error) {
	if f.Path == "" {
		return nil, errors.New("pandadocauth: FileStore.Path is empty")
	}
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pandadocauth: reading token file: %w", err)
	}
	var t oauth2.Token
	if err := json.Unmarshal(b, &t); err != nil {
		// Not wrapped: a time.Time parse error quotes the value it read,
		// and a damaged file may have a token where the expiry should be.
		return nil, fmt.Errorf("pandadocauth: token file %s is not a token (invalid JSON)", f.Path)
	}
	if t.AccessToken == "" && t.RefreshToken == "" {
		return nil, fmt.Errorf("pandadocauth: token file %s holds no token", f.Path)
	}
	return &t, nil
}

// target returns the file that Save replaces: Path, or the file it
// links to when it is a symbolic link.
func (f *FileStore) target() (string, error) {
	info, err := os.Lstat(f.Path)
	if err != nil || info.Mode()&fs.ModeSymlink == 0 {
		// Missing (Save creates it) or not a link.
		return f.Path, nil
	}
	target, err := filepath.EvalSymlinks(f.Path)
	if err != nil {
		return "", fmt.Errorf("pandadocauth: token file %s is a symbolic link that cannot be followed (Save writes to the file it points to): %w", f.Path, err)
	}
	return target, nil
}

// Save writes t to the file atomically with mode 0600, and flushes it
// to disk.
func (f *FileStore) Save(ctx context.Context, t *oauth2.Token) error {
	if f.Path == "" {
		return errors.New("pandadocauth: FileStore.Path is empty")
	}
	if t == nil {
		return errors.New("pandadocauth: FileStore.Save: nil token")
	}
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return fmt.Errorf("pandadocauth: encoding token: %w", err)
	}
	path, err := f.target()
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pandadocauth: creating token directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("pandadocauth: writing token file: %w", err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	// CreateTemp already uses 0600; Chmod makes it explicit and portable.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("pandadocauth: writing token file: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("pandadocauth: writing token file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("pandadocauth: writing token file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pandadocauth: writing token file: %w", err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("pandadocauth: writing token file: %w", err)
	}
	ok = true
	// The rename is durable once the directory is flushed.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("pandadocauth: flushing token directory: %w", err)
	}
	return nil
}

// Delete removes the token file, for example when the customer
// disconnects, and flushes its directory to disk, so that a power loss
// cannot bring the token back. When Path is a symbolic link, Delete
// removes the file it points to and then the link, so that a later Save
// writes a file at Path. Deleting a missing file is not an error. The
// lock file stays, as Lock leaves it: a process may hold or wait for its
// lock. Delete does not take the lock; take it first to keep a refresh
// in another process from saving the token again.
func (f *FileStore) Delete(ctx context.Context) error {
	if f.Path == "" {
		return errors.New("pandadocauth: FileStore.Path is empty")
	}
	info, err := os.Lstat(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pandadocauth: deleting token file: %w", err)
	}
	if info.Mode()&fs.ModeSymlink != 0 {
		// A link to nothing holds no token: only the link goes.
		if target, err := filepath.EvalSymlinks(f.Path); err == nil {
			if err := removeFile(target); err != nil {
				return err
			}
		}
	}
	return removeFile(f.Path)
}

// removeFile removes path, if it exists, and flushes its directory.
func removeFile(path string) error {
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pandadocauth: deleting token file: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("pandadocauth: flushing token directory: %w", err)
	}
	return nil
}

// syncDir flushes a directory to disk; a variable so that tests can see
// it called.
var syncDir = syncDirOS

// Lock takes the exclusive lock of the token file, waiting until it is
// free or ctx ends (then the error satisfies errors.Is(err, ctx.Err())),
// and returns the function that releases it. unlock may be called more
// than once; calls after the first do nothing.
func (f *FileStore) Lock(ctx context.Context) (unlock func(), err error) {
	if f.Path == "" {
		return nil, errors.New("pandadocauth: FileStore.Path is empty")
	}
	path, err := f.target()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("pandadocauth: creating token directory: %w", err)
	}
	release, err := lockFile(ctx, path+".lock")
	if err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(release) }, nil
}
