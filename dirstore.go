package pandadocauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"

	"golang.org/x/oauth2"
)

// DirStore is a KeyedStore that keeps each grant's token in its own file
// in directory Dir, written as FileStore writes (atomically, mode 0600).
// A key becomes a file name that cannot leave Dir: every byte other than
// ASCII letters, digits, '-' and '_' is escaped as %XX (so no '/', no
// '..'), and a key whose name would be longer than 200 bytes is named by
// its SHA-256 instead. It is a KeyedLocker too: each key is locked as
// its FileStore is (see FileStore.Lock), so processes sharing Dir
// refresh each grant once, and one grant's lock never blocks another's.
// The zero value is not usable: set Dir.
type DirStore struct {
	// Dir is the directory holding the token files.
	Dir string
}

var (
	_ KeyedStore  = (*DirStore)(nil)
	_ KeyedLocker = (*DirStore)(nil)
)

// Load reads key's token. A key without a file is (nil, nil).
func (d *DirStore) Load(ctx context.Context, key string) (*oauth2.Token, error) {
	f, err := d.file(key)
	if err != nil {
		return nil, err
	}
	return f.Load(ctx)
}

// Save writes key's token.
func (d *DirStore) Save(ctx context.Context, key string, t *oauth2.Token) error {
	f, err := d.file(key)
	if err != nil {
		return err
	}
	return f.Save(ctx, t)
}

// Lock takes the exclusive lock of key's token file, as FileStore.Lock
// does: an OS file lock (flock) on the file's name plus ".lock", in Dir,
// that dies with the process holding it. It waits until the lock is free
// or ctx ends (then the error satisfies errors.Is(err, ctx.Err())). Keys
// have locks of their own. unlock may be called more than once; calls
// after the first do nothing. Where flock is missing (Windows, for
// example), Lock does not serialise processes.
func (d *DirStore) Lock(ctx context.Context, key string) (unlock func(), err error) {
	f, err := d.file(key)
	if err != nil {
		return nil, err
	}
	return f.Lock(ctx)
}

// file is the FileStore of key.
func (d *DirStore) file(key string) (*FileStore, error) {
	if d.Dir == "" {
		return nil, errors.New("pandadocauth: DirStore.Dir is empty")
	}
	if key == "" {
		return nil, errors.New("pandadocauth: DirStore: empty key")
	}
	return &FileStore{Path: filepath.Join(d.Dir, fileName(key))}, nil
}

// maxNameBytes bounds a file name made from a key, below the 255 bytes
// of common file systems, with room for FileStore's temporary suffix.
const maxNameBytes = 200

// fileName is the file name of key: injective, and never a path.
func fileName(key string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	name := b.String()
	if len(name)+len(".json") > maxNameBytes {
		sum := sha256.Sum256([]byte(key))
		// '%' cannot start an escaped name's hash form otherwise: "%%"
		// never comes out of the escaping above, so the two forms differ.
		name = "%%sha256-" + hex.EncodeToString(sum[:])
	}
	return name + ".json"
}
