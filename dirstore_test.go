package pandadocauth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

func TestDirStoreKeysStayInDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := &DirStore{Dir: filepath.Join(dir, "tokens")}
	keys := []string{"ws-1", "../escape", "..", ".", "a/b", `a\b`, "/abs", "CON", "naïve", "x%2Fy", "x/y", strings.Repeat("k", 500), strings.Repeat("k", 501)}
	for _, key := range keys {
		tok := &oauth2.Token{AccessToken: "at-" + key, RefreshToken: "rt"}
		if err := d.Save(context.Background(), key, tok); err != nil {
			t.Fatalf("%q: %v", key, err)
		}
	}
	entries, err := os.ReadDir(d.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(keys) {
		t.Errorf("%d files for %d keys: keys collided", len(entries), len(keys))
	}
	outside, _ := os.ReadDir(dir)
	if len(outside) != 1 {
		t.Errorf("files outside the directory: %v", outside)
	}
	for _, key := range keys {
		tok, err := d.Load(context.Background(), key)
		if err != nil || tok.AccessToken != "at-"+key {
			t.Errorf("%q: %v, %v", key, tok, err)
		}
		if name := fileName(key); len(name) > maxNameBytes || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
			t.Errorf("%q: file name %q", key, name)
		}
	}
	if tok, err := d.Load(context.Background(), "missing"); tok != nil || err != nil {
		t.Errorf("missing key: %v, %v", tok, err)
	}
	if err := d.Save(context.Background(), "", &oauth2.Token{AccessToken: "x"}); err == nil {
		t.Error("an empty key was accepted")
	}
}
