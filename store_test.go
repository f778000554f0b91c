package pandadocauth

import (
	"context"
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
