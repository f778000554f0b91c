package pandadocauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

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

// FileStore is a Store that keeps the token in one JSON file at Path.
// Save writes atomically (a temporary file in the same directory, then a
// rename) with mode 0600, creating the directory with mode 0700 if needed,
// so a reader never sees a half-written token. The zero value is not
// usable: set Path.
type FileStore struct {
	// Path is the file holding the token.
	Path string
}

var _ Store = (*FileStore)(nil)

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

// Save writes t to the file atomically with mode 0600.
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
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pandadocauth: creating token directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.Path)+".*.tmp")
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
	if err := os.Rename(tmpName, f.Path); err != nil {
		return fmt.Errorf("pandadocauth: writing token file: %w", err)
	}
	ok = true
	return nil
}
