package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func TestFileStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "token.json")
	fs := &FileStore{Path: path}
	if tok, err := fs.Load(ctx); tok != nil || err != nil {
		t.Fatalf("Load of a missing file = %v, %v; want nil, nil", tok, err)
	}
	want := &oauth2.Token{AccessToken: testAccess, TokenType: "Bearer", RefreshToken: testRefresh, Expiry: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), ExpiresIn: 31535999}
	if err := fs.Save(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := fs.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != want.AccessToken || got.RefreshToken != want.RefreshToken || !got.Expiry.Equal(want.Expiry) || got.ExpiresIn != want.ExpiresIn {
		t.Errorf("round trip: got %+v", got)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode %o, want 600", perm)
	}
	// Concurrent saves leave one whole token and no temporary files.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := *want
			tok.AccessToken = strings.Repeat("a", i+1)
			if err := fs.Save(ctx, &tok); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if _, err := fs.Load(ctx); err != nil {
		t.Errorf("after concurrent saves: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("%d files left in the directory, want 1", len(entries))
	}
}

func TestFileStoreErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"access_token": "at-SECRET-x", "expiry": 12`), 0o600)
	empty := filepath.Join(dir, "empty.json")
	os.WriteFile(empty, []byte(`{}`), 0o600)
	misplaced := filepath.Join(dir, "misplaced.json")
	os.WriteFile(misplaced, []byte(`{"access_token":"x","expiry":"rt-SECRET-misplaced"}`), 0o600)
	for _, path := range []string{bad, empty, misplaced} {
		_, err := (&FileStore{Path: path}).Load(ctx)
		if err == nil {
			t.Errorf("%s: want an error", path)
			continue
		}
		assertNoSecret(t, "error", err.Error())
	}
	if _, err := (&FileStore{}).Load(ctx); err == nil {
		t.Error("empty Path: want an error")
	}
	if err := (&FileStore{}).Save(ctx, &oauth2.Token{}); err == nil {
		t.Error("empty Path: want an error")
	}
	// A directory in the way fails Save without leaving temporary files.
	blocked := filepath.Join(dir, "blocked")
	os.Mkdir(blocked, 0o700)
	if err := (&FileStore{Path: blocked}).Save(ctx, &oauth2.Token{AccessToken: "at-SECRET-y"}); err == nil {
		t.Error("Save over a directory: want an error")
	} else {
		assertNoSecret(t, "error", err.Error())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 4 {
		t.Errorf("%d entries in the directory, want 4: a failed Save left files", len(entries))
	}
}

// Save through a symbolic link writes to the file it points to and keeps
// the link, so that the file behind it never keeps a replaced token.
func TestFileStoreSymlink(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	real := filepath.Join(dir, "real", "token.json")
	os.MkdirAll(filepath.Dir(real), 0o700)
	os.WriteFile(real, []byte(`{"access_token":"at-old","refresh_token":"rt-old"}`), 0o600)
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(filepath.Join("real", "token.json"), link); err != nil {
		t.Skipf("symbolic links: %v", err)
	}
	// A link to a link.
	link2 := filepath.Join(dir, "link2.json")
	os.Symlink("link.json", link2)

	for i, path := range []string{link, link2} {
		fs := &FileStore{Path: path}
		access := fmt.Sprintf("at-new-%d", i)
		if err := fs.Save(ctx, &oauth2.Token{AccessToken: access, RefreshToken: "rt-new"}); err != nil {
			t.Fatal(err)
		}
		if info, err := os.Lstat(path); err != nil || info.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s is no longer a symbolic link (%v)", path, err)
		}
		got, err := (&FileStore{Path: real}).Load(ctx)
		if err != nil || got.AccessToken != access {
			t.Fatalf("the link's target holds %v, %v; want %s", got, err, access)
		}
	}
	if entries, _ := os.ReadDir(filepath.Dir(real)); len(entries) != 1 {
		t.Errorf("%d files beside the target, want 1: a temporary file was left", len(entries))
	}

	// A link to nothing: a clear error, no file created, the link kept.
	dangling := filepath.Join(dir, "dangling.json")
	os.Symlink(filepath.Join("missing", "token.json"), dangling)
	err := (&FileStore{Path: dangling}).Save(ctx, &oauth2.Token{AccessToken: "at-SECRET-z"})
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Save through a dangling link = %v; want an error about the link", err)
	} else {
		assertNoSecret(t, "error", err.Error())
	}
	if info, err := os.Lstat(dangling); err != nil || info.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the dangling link was replaced (%v)", err)
	}
	if _, err := (&FileStore{Path: dangling}).Lock(ctx); err == nil {
		t.Error("Lock through a dangling link: want an error")
	}
}

// Save flushes the directory after the rename. Not parallel: it
// replaces syncDir.
func TestFileStoreSyncsDirectory(t *testing.T) {
	dir := t.TempDir()
	var synced []string
	syncDir = func(d string) error {
		synced = append(synced, d)
		return syncDirOS(d)
	}
	defer func() { syncDir = syncDirOS }()
	if err := (&FileStore{Path: filepath.Join(dir, "token.json")}).Save(context.Background(), &oauth2.Token{AccessToken: "at"}); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 1 || synced[0] != dir {
		t.Errorf("directories flushed: %q; want [%q]", synced, dir)
	}
	// A failed flush is a failed Save.
	syncDir = func(string) error { return errors.New("disk on fire") }
	if err := (&FileStore{Path: filepath.Join(dir, "token.json")}).Save(context.Background(), &oauth2.Token{AccessToken: "at"}); err == nil {
		t.Error("Save with a failing directory flush = nil; want an error")
	}
}

// Two FileStores on one path exclude each other, as two processes do
// (TestFileStoreLockProcesses); unlock is idempotent; a Lock that cannot
// be had before its context ends fails with the context's error.
func TestFileStoreLock(t *testing.T) {
	t.Parallel()
	if !flockSupported {
		t.Skip("no flock on this system")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "token.json")
	a, b := &FileStore{Path: path}, &FileStore{Path: path}
	unlock, err := a.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if u, err := b.Lock(dctx); err == nil {
		u()
		t.Fatal("a second Lock succeeded while the first held the lock")
	} else if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "pandadocauth: ") {
		t.Errorf("err = %v; want a pandadocauth error wrapping context.DeadlineExceeded", err)
	}
	got := make(chan error, 1)
	go func() {
		u, err := b.Lock(ctx)
		if err == nil {
			u()
		}
		got <- err
	}()
	unlock()
	unlock()
	if err := <-got; err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	if info, err := os.Stat(path + ".lock"); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v, %v; want mode 600", info, err)
	}
}

// Delete removes the token file; through a symbolic link, the file it
// points to and the link, so that the token is gone and a later Save
// writes a file at Path.
func TestFileStoreDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "token.json")
	f := &FileStore{Path: path}
	if err := f.Save(ctx, &oauth2.Token{AccessToken: "at", RefreshToken: "rt"}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the second time, nothing is there
		if err := f.Delete(ctx); err != nil {
			t.Fatalf("Delete %d: %v", i, err)
		}
		if tok, err := f.Load(ctx); tok != nil || err != nil {
			t.Fatalf("Load after Delete = %v, %v; want nil, nil", tok, err)
		}
	}
	if err := (&FileStore{}).Delete(ctx); err == nil {
		t.Error("Delete without Path succeeded")
	}

	real := filepath.Join(dir, "real", "token.json")
	link := filepath.Join(dir, "link.json")
	if err := (&FileStore{Path: real}).Save(ctx, &oauth2.Token{AccessToken: "at-real"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("real", "token.json"), link); err != nil {
		t.Skipf("symbolic links: %v", err)
	}
	if err := (&FileStore{Path: link}).Delete(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{real, link} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s is left after Delete through the link (%v)", p, err)
		}
	}
	if err := (&FileStore{Path: link}).Save(ctx, &oauth2.Token{AccessToken: "at-again"}); err != nil {
		t.Errorf("Save after Delete through a link: %v", err)
	}
	dangling := filepath.Join(dir, "dangling.json")
	os.Symlink("missing.json", dangling)
	if err := (&FileStore{Path: dangling}).Delete(ctx); err != nil {
		t.Errorf("Delete of a dangling link: %v", err)
	}
	if _, err := os.Lstat(dangling); !os.IsNotExist(err) {
		t.Errorf("the dangling link is left (%v)", err)
	}
}

// Delete flushes the directory, so that the token cannot come back after
// a power loss. Not parallel: it replaces syncDir.
func TestFileStoreDeleteSyncsDirectory(t *testing.T) {
	dir := t.TempDir()
	f := &FileStore{Path: filepath.Join(dir, "token.json")}
	if err := f.Save(context.Background(), &oauth2.Token{AccessToken: "at"}); err != nil {
		t.Fatal(err)
	}
	var synced []string
	syncDir = func(d string) error {
		synced = append(synced, d)
		return syncDirOS(d)
	}
	defer func() { syncDir = syncDirOS }()
	if err := f.Delete(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 1 || synced[0] != dir {
		t.Errorf("directories flushed: %q; want [%q]", synced, dir)
	}
}
