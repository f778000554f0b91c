package pandadocauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
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

// Two DirStores on one directory, as two processes would have: a key
// locked through one cannot be locked through the other until unlocked,
// and other keys stay free meanwhile.
func TestDirStoreLockPerKey(t *testing.T) {
	t.Parallel()
	if !flockSupported {
		t.Skip("no flock on this system")
	}
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "tokens")
	first, second := &DirStore{Dir: dir}, &DirStore{Dir: dir}
	unlock, err := first.Lock(ctx, "ws/a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock)
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if u, err := second.Lock(dctx, "ws/a"); err == nil {
		u()
		t.Fatal("a second Lock of the key succeeded while the first held it")
	} else if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "pandadocauth: ") {
		t.Errorf("err = %v; want a pandadocauth error wrapping context.DeadlineExceeded", err)
	}
	for _, d := range []*DirStore{first, second} {
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		u, err := d.Lock(bctx, "ws/b")
		cancel()
		if err != nil {
			t.Fatalf("Lock of another key while the first is held: %v", err)
		}
		u()
	}
	got := make(chan error, 1)
	go func() {
		u, err := second.Lock(ctx, "ws/a")
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
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json.lock") || strings.ContainsAny(e.Name(), `/\`) {
			t.Errorf("unexpected file %q in the directory", e.Name())
		}
	}
	if len(entries) != 2 {
		t.Errorf("%d lock files; want 2, one per key", len(entries))
	}
	if _, err := first.Lock(ctx, ""); err == nil {
		t.Error("Lock of an empty key succeeded")
	}
	if _, err := (&DirStore{}).Lock(ctx, "a"); err == nil {
		t.Error("Lock without Dir succeeded")
	}
}

// Two Grants sharing a directory through DirStores of their own, as two
// processes would: with every token expired, both serve every grant at
// once, and each grant is refreshed once: the second adopts what the
// first saved under the grant's lock.
func TestDirStoreGrantsRefreshOnce(t *testing.T) {
	t.Parallel()
	if !flockSupported {
		t.Skip("no flock on this system")
	}
	const n, perGrant = 20, 3
	dir := t.TempDir()
	var keys []string
	for i := range n {
		keys = append(keys, fmt.Sprintf("ws%d", i))
	}
	ep := newGrantsServer(t, nil, keys...)
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, ep.RoundTrip)
	mt.RegisterResponder("GET", apiURL, httpmock.NewStringResponder(200, `{}`))
	seed := &DirStore{Dir: dir}
	for i := range n {
		key := fmt.Sprintf("ws%d", i)
		if err := seed.Save(context.Background(), key, &oauth2.Token{
			AccessToken:  "at-SECRET-" + key + "-0",
			RefreshToken: "rt-SECRET-" + key + "-0",
			Expiry:       time.Now().Add(-time.Minute),
		}); err != nil {
			t.Fatal(err)
		}
	}
	var transports []http.RoundTripper
	for range 2 {
		g := &Grants{Config: testConfig(mt), Store: &DirStore{Dir: dir}}
		t.Cleanup(g.Wait)
		transports = append(transports, g.Transport(mt))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n*perGrant)
	for i := range n {
		for _, rt := range transports {
			for range perGrant {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := grantGet(t, rt, fmt.Sprintf("ws%d", i)); err != nil {
						errs <- err
					}
				}()
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range n {
		key := fmt.Sprintf("ws%d", i)
		if got := grantPosts(ep, key); got != 1 {
			t.Errorf("%s: %d refreshes; want 1", key, got)
		}
		if tok, err := seed.Load(context.Background(), key); err != nil || tok.AccessToken != "at-SECRET-"+key+"-1" {
			t.Errorf("%s: stored %v, %v; want the one refreshed token", key, tok, err)
		}
	}
}

// The file names, as a specification: upper case letters and every byte
// but lowercase letters, digits, '-' and '_' escaped; ".token.json".
func TestDirStoreFileNames(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("K", 70) // 210 bytes escaped
	sum := sha256.Sum256([]byte(long))
	tests := []struct{ key, name, legacy string }{
		{"acme", "acme.token.json", "acme.json"},
		{"Acme", "%41cme.token.json", "Acme.json"},
		{"ACME", "%41%43%4D%45.token.json", "ACME.json"},
		{"ws-1_b", "ws-1_b.token.json", "ws-1_b.json"},
		{"x/y", "x%2Fy.token.json", "x%2Fy.json"},
		{"..", "%2E%2E.token.json", "%2E%2E.json"},
		{"naïve", "na%C3%AFve.token.json", "na%C3%AFve.json"},
		{long, "%%sha256-" + hex.EncodeToString(sum[:]) + ".token.json", long + ".json"},
	}
	for _, tt := range tests {
		if got := fileName(tt.key); got != tt.name {
			t.Errorf("fileName(%q) = %q; want %q", tt.key, got, tt.name)
		}
		if got := legacyFileName(tt.key); got != tt.legacy {
			t.Errorf("legacyFileName(%q) = %q; want %q", tt.key, got, tt.legacy)
		}
	}
}

// Keys that differ only in letter case get names that differ in more
// than letter case, so that a file system that ignores case (macOS's and
// Windows's by default) keeps them apart: one customer's token never
// serves another.
func TestDirStoreKeysDifferingInCase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := &DirStore{Dir: t.TempDir()}
	keys := []string{"acme", "Acme", "ACME", "aCmE", "acmE", "%41cme", "x/y", "X/Y", "x/Y", "2F", "2f",
		strings.Repeat("k", 100), strings.Repeat("K", 100), strings.Repeat("k", 99) + "K"}
	names := map[string]string{} // lower-cased name: key
	for _, key := range keys {
		name := fileName(key)
		if prev, ok := names[strings.ToLower(name)]; ok {
			t.Errorf("keys %q and %q have names %q and %q, which a file system that ignores case takes for one",
				prev, key, fileName(prev), name)
		}
		names[strings.ToLower(name)] = key
		if err := d.Save(ctx, key, &oauth2.Token{AccessToken: "at-" + key}); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range keys {
		if tok, err := d.Load(ctx, key); err != nil || tok.AccessToken != "at-"+key {
			t.Errorf("Load(%q) = %v, %v; want its own token", key, tok, err)
		}
	}
}

// A file that an earlier version wrote, under the key's name with its
// case kept, is still found; the next Save moves the token to the new
// name and removes the old file.
func TestDirStoreReadsEarlierNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	d := &DirStore{Dir: dir}
	long := strings.Repeat("W", 300)
	sum := sha256.Sum256([]byte(long))
	earlier := map[string]string{ // key: the name an earlier version gave its file
		"Acme": "Acme.json",
		"ws-1": "ws-1.json",
		"a/B":  "a%2FB.json",
		long:   "%%sha256-" + hex.EncodeToString(sum[:]) + ".json",
	}
	for key, name := range earlier {
		if err := (&FileStore{Path: filepath.Join(dir, name)}).Save(ctx, &oauth2.Token{AccessToken: "at-old-" + key, RefreshToken: "rt-old"}); err != nil {
			t.Fatal(err)
		}
	}
	for key, name := range earlier {
		tok, err := d.Load(ctx, key)
		if err != nil || tok == nil || tok.AccessToken != "at-old-"+key {
			t.Fatalf("Load(%.10q) = %v, %v; want the token in %.20s", key, tok, err, name)
		}
	}
	// No other key reads them: not the same letters in another case.
	for _, key := range []string{"acme", "ACME", "WS-1", "a/b"} {
		if tok, err := d.Load(ctx, key); tok != nil || err != nil {
			t.Errorf("Load(%q) = %v, %v; want nil, nil", key, tok, err)
		}
	}
	for key, name := range earlier {
		if err := d.Save(ctx, key, &oauth2.Token{AccessToken: "at-new-" + key, RefreshToken: "rt-new"}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("the earlier file %.20s is left after Save (%v)", name, err)
		}
		if tok, err := d.Load(ctx, key); err != nil || tok.AccessToken != "at-new-"+key {
			t.Errorf("Load(%.10q) after Save = %v, %v", key, tok, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(earlier) {
		t.Errorf("%d files for %d keys", len(entries), len(earlier))
	}
}

// foldingLstat is os.Lstat as a file system that ignores letter case
// answers it: any entry whose name equals the asked one but for case.
func foldingLstat(path string) (fs.FileInfo, error) {
	dir, name := filepath.Split(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if strings.EqualFold(e.Name(), name) {
			return os.Lstat(filepath.Join(dir, e.Name()))
		}
	}
	return nil, &fs.PathError{Op: "lstat", Path: path, Err: fs.ErrNotExist}
}

// Where the file system ignores case, an earlier version's file is found
// only under its exact name, by the directory's listing: "acme" does not
// read the "Acme.json" of "Acme". Where it does not, the entry is what
// Lstat finds.
func TestHasEntry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"Acme.json", "b.json", "B.json"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name           string
		folding, exact bool
	}{
		{"Acme.json", true, true},
		{"acme.json", false, false},
		{"ACME.JSON", false, false},
		{"b.json", true, true},
		{"B.json", true, true},
		{"missing.json", false, false},
	}
	for _, tt := range tests {
		if got, err := hasEntry(dir, tt.name, foldingLstat); got != tt.folding || err != nil {
			t.Errorf("ignoring case: hasEntry(%q) = %v, %v; want %v", tt.name, got, err, tt.folding)
		}
		if got, err := hasEntry(dir, tt.name, os.Lstat); got != tt.exact || err != nil {
			t.Errorf("hasEntry(%q) = %v, %v; want %v", tt.name, got, err, tt.exact)
		}
	}
}

// Delete removes one key's token, under both names, and nothing else;
// deleting what is not there is not an error.
func TestDirStoreDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	d := &DirStore{Dir: dir}
	for _, key := range []string{"a", "b", "A"} {
		if err := d.Save(ctx, key, &oauth2.Token{AccessToken: "at-" + key}); err != nil {
			t.Fatal(err)
		}
	}
	// "C" has only an earlier version's file; "c", a new one.
	if err := (&FileStore{Path: filepath.Join(dir, "C.json")}).Save(ctx, &oauth2.Token{AccessToken: "at-C"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Save(ctx, "c", &oauth2.Token{AccessToken: "at-c"}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"a", "C", "a", "never-stored"} {
		if err := d.Delete(ctx, key); err != nil {
			t.Fatalf("Delete(%q): %v", key, err)
		}
		if tok, err := d.Load(ctx, key); tok != nil || err != nil {
			t.Errorf("Load(%q) after Delete = %v, %v; want nil, nil", key, tok, err)
		}
	}
	for _, key := range []string{"b", "A", "c"} {
		if tok, err := d.Load(ctx, key); err != nil || tok.AccessToken != "at-"+key {
			t.Errorf("Load(%q) after another key's Delete = %v, %v", key, tok, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("%d files after Delete; want 3", len(entries))
	}
	if err := d.Delete(ctx, ""); err == nil {
		t.Error("Delete of an empty key succeeded")
	}
	if err := (&DirStore{}).Delete(ctx, "a"); err == nil {
		t.Error("Delete without Dir succeeded")
	}
}
