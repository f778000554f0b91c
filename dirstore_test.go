package pandadocauth

import (
	"context"
	"errors"
	"fmt"
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
	ep := newGrantsEndpoint()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, ep.responder())
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
		if got := ep.postCount(key); got != 1 {
			t.Errorf("%s: %d refreshes; want 1", key, got)
		}
		if tok, err := seed.Load(context.Background(), key); err != nil || tok.AccessToken != "at-SECRET-"+key+"-1" {
			t.Errorf("%s: stored %v, %v; want the one refreshed token", key, tok, err)
		}
	}
}
