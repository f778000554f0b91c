package pandadocauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/oauth2"
)

// DirStore is a KeyedStore that keeps each grant's token in its own file
// in directory Dir, written as FileStore writes (atomically, mode 0600).
// A key becomes a file name that cannot leave Dir and that no other key's
// name equals, even where the file system ignores letter case (macOS and
// Windows, by default): every byte other than lowercase ASCII letters,
// digits, '-' and '_' is escaped as %XX, upper case letters included (so
// no '/', no '..', and "Acme" is "%41cme"), and the name ends in
// ".token.json". A key whose name would be longer than 200 bytes is named
// by its SHA-256 instead. It is a KeyedLocker too: each key is locked as
// its FileStore is (see FileStore.Lock), so processes sharing Dir refresh
// each grant once, and one grant's lock never blocks another's.
//
// Files that earlier versions wrote, named after the key with its letter
// case kept and ending in ".json", are still read: Load falls back to
// such a file, only if its directory entry has that exact name (so that,
// on a file system that ignores case, "Acme" never reads what "acme"
// wrote), and the next Save or Delete of the key removes it. Processes
// sharing Dir should run the same version: an older one locks and writes
// the files of the older names.
//
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
	t, err := f.Load(ctx)
	if t != nil || err != nil {
		return t, err
	}
	old, err := d.legacyFile(key)
	if err != nil {
		return nil, err
	}
	if old != nil {
		if t, err := old.Load(ctx); t != nil || err != nil {
			return t, err
		}
	}
	// A Save of key, which writes the new name before it removes the
	// earlier one, may have moved the token between the reads above.
	return f.Load(ctx)
}

// Save writes key's token, and then removes the file of an earlier
// version's name for key, if there is one.
func (d *DirStore) Save(ctx context.Context, key string, t *oauth2.Token) error {
	f, err := d.file(key)
	if err != nil {
		return err
	}
	if err := f.Save(ctx, t); err != nil {
		return err
	}
	// What it holds is older than what was just saved, which Load reads
	// first: a file left behind is harmless until Delete, which tries
	// again.
	if old, err := d.legacyFile(key); old != nil && err == nil {
		old.Delete(ctx)
	}
	return nil
}

// Delete removes key's token file, and that of an earlier version's name
// for key, for example when the customer disconnects. Deleting a key
// without a file is not an error. The lock file stays (see
// FileStore.Delete).
func (d *DirStore) Delete(ctx context.Context, key string) error {
	f, err := d.file(key)
	if err != nil {
		return err
	}
	if err := f.Delete(ctx); err != nil {
		return err
	}
	old, err := d.legacyFile(key)
	if err != nil {
		return err
	}
	if old != nil {
		return old.Delete(ctx)
	}
	return nil
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
	if err := d.check(key); err != nil {
		return nil, err
	}
	return &FileStore{Path: filepath.Join(d.Dir, fileName(key))}, nil
}

func (d *DirStore) check(key string) error {
	if d.Dir == "" {
		return errors.New("pandadocauth: DirStore.Dir is empty")
	}
	if key == "" {
		return errors.New("pandadocauth: DirStore: empty key")
	}
	return nil
}

// legacyFile is the FileStore of the file that an earlier version wrote
// for key, or nil if there is none.
func (d *DirStore) legacyFile(key string) (*FileStore, error) {
	name := legacyFileName(key)
	ok, err := hasEntry(d.Dir, name, os.Lstat)
	if !ok || err != nil {
		return nil, err
	}
	return &FileStore{Path: filepath.Join(d.Dir, name)}, nil
}

// hasEntry reports whether directory dir has an entry named exactly name,
// letter case included, also on a file system that ignores case, where
// lstat finds the entry under any case. lstat is os.Lstat, or its
// stand-in in a test.
func hasEntry(dir, name string, lstat func(string) (fs.FileInfo, error)) (bool, error) {
	info, err := lstat(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("pandadocauth: reading token directory: %w", err)
	}
	// name has letters (it ends in ".json"): if the name with every
	// letter's case swapped finds the same file, this file system
	// ignores case here, and only the directory's listing tells which
	// name the entry has.
	swapped, err := lstat(filepath.Join(dir, swapCase(name)))
	if err != nil || !os.SameFile(info, swapped) {
		return true, nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return false, fmt.Errorf("pandadocauth: reading token directory: %w", err)
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(1024)
		for _, n := range names {
			if n == name {
				return true, nil
			}
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("pandadocauth: reading token directory: %w", err)
		}
	}
}

// swapCase returns s with the case of its ASCII letters swapped.
func swapCase(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case 'A' <= c && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
	}
	return string(b)
}

// maxNameBytes bounds a file name made from a key, below the 255 bytes
// of common file systems, with room for FileStore's temporary suffix.
const maxNameBytes = 200

// fileSuffix ends every token file's name. Its inner dot sets the names
// apart from those of earlier versions, which have one dot.
const fileSuffix = ".token.json"

// fileName is the file name of key: injective, even to a file system that
// ignores letter case, and never a path. Outside its escapes a name has
// no upper case letter, and inside them no lower case one, so two names
// that differ only in case never both come out of it.
func fileName(key string) string {
	name := escapeKey(key, func(c byte) bool { return 'a' <= c && c <= 'z' })
	if len(name)+len(fileSuffix) > maxNameBytes {
		sum := sha256.Sum256([]byte(key))
		// "%%" never comes out of the escaping, whose '%' is always
		// followed by two hex digits, so the two forms differ.
		name = "%%sha256-" + hex.EncodeToString(sum[:])
	}
	return name + fileSuffix
}

// legacyFileName is the file name that versions before fileName wrote for
// key: with upper case letters kept, and ".json".
func legacyFileName(key string) string {
	name := escapeKey(key, func(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' })
	if len(name)+len(".json") > maxNameBytes {
		sum := sha256.Sum256([]byte(key))
		name = "%%sha256-" + hex.EncodeToString(sum[:])
	}
	return name + ".json"
}

// escapeKey writes digits, '-', '_' and the letters keep accepts as they
// are, and every other byte as %XX, in upper case hex.
func escapeKey(key string, keep func(byte) bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case keep(c), '0' <= c && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}
