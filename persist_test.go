package pandadocauth

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"
)

// grantServer is a token endpoint with refresh-token rotation that
// refuses, with invalid_grant, every refresh token but the newest of
// each grant, as servers that rotate do.
type grantServer struct {
	expiresIn int
	mu        sync.Mutex        // guards the fields below
	live      map[string]string // grant name -> its newest refresh token
	n         int
	posts     []string // the refresh token of each POST
}

func newGrantServer(expiresIn int, grants map[string]string) *grantServer {
	g := &grantServer{expiresIn: expiresIn, live: map[string]string{}}
	for k, v := range grants {
		g.live[k] = v
	}
	return g
}

func (g *grantServer) responder() httpmock.Responder {
	return func(req *http.Request) (*http.Response, error) {
		req.ParseForm()
		rt := req.PostForm.Get("refresh_token")
		g.mu.Lock()
		defer g.mu.Unlock()
		g.posts = append(g.posts, rt)
		for grant, live := range g.live {
			if live == rt {
				g.n++
				next := grant + "-rt-SECRET-" + string(rune('0'+g.n))
				g.live[grant] = next
				return httpmock.NewJsonResponse(200, map[string]any{
					"access_token": grant + "-at-SECRET-" + string(rune('0'+g.n)), "refresh_token": next, "expires_in": g.expiresIn,
				})
			}
		}
		return httpmock.NewStringResponse(400, `{"error":"invalid_grant"}`), nil
	}
}

func (g *grantServer) postCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.posts)
}

func (g *grantServer) newest(grant string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.live[grant]
}

// newStoreSource returns a TokenSource on store and an auto clock, with
// the token endpoint answering through responder.
func newStoreSource(t *testing.T, store Store, responder httpmock.Responder) (*TokenSource, *fakeClock) {
	t.Helper()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, responder)
	clock := newAutoClock()
	ts := &TokenSource{Config: testConfig(mt), Store: store, clk: &clockRef{clock}}
	t.Cleanup(ts.Wait)
	return ts, clock
}

// TestRefreshFirstCallWithStore: Refresh as the first call on a source
// with only a Store makes one POST and returns a new token, not the
// stored one.
func TestRefreshFirstCallWithStore(t *testing.T) {
	t.Parallel()
	srv := newGrantServer(3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newAutoClock()
	store := &memStore{tok: &oauth2.Token{AccessToken: "g-at-SECRET-0", RefreshToken: "g-rt-SECRET-0", Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600}}
	ts, _ := newStoreSource(t, store, srv.responder())
	ts.clk = &clockRef{clock}
	tok, err := ts.Refresh(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.postCount(); n != 1 {
		t.Errorf("%d POSTs, want 1", n)
	}
	if tok.AccessToken == "g-at-SECRET-0" {
		t.Error("Refresh returned the stored token")
	}
	if s := store.stored(); s.RefreshToken != srv.newest("g") {
		t.Errorf("stored %q, want the newest refresh token", s.RefreshToken)
	}
}

// TestStoreTokenWrittenByAnotherProcessIsNewer: a replica whose Store
// holds a token that another process wrote after this one last read it
// adopts it even though it expires earlier than the token it serves
// (the refreshed token lives shorter, or the clocks are skewed).
func TestStoreTokenWrittenByAnotherProcessIsNewer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		stored func(now time.Time) *oauth2.Token // what the other process wrote
	}{
		{"valid, expiring before ours", func(now time.Time) *oauth2.Token {
			return &oauth2.Token{AccessToken: "g-at-SECRET-9", RefreshToken: "g-rt-SECRET-9", Expiry: now.Add(30 * time.Minute), ExpiresIn: 3600}
		}},
		{"expired already by our clock", func(now time.Time) *oauth2.Token {
			return &oauth2.Token{AccessToken: "g-at-SECRET-9", RefreshToken: "g-rt-SECRET-9", Expiry: now.Add(-time.Minute), ExpiresIn: 3600}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newGrantServer(3600, map[string]string{"g": "g-rt-SECRET-a"})
			clock := newAutoClock()
			store := &memStore{tok: &oauth2.Token{AccessToken: "g-at-SECRET-a", RefreshToken: "g-rt-SECRET-a", Expiry: clock.Now().Add(2 * time.Hour), ExpiresIn: 7200}}
			ts, _ := newStoreSource(t, store, srv.responder())
			ts.clk = &clockRef{clock}
			if tok, err := ts.Token(); err != nil || tok.AccessToken != "g-at-SECRET-a" {
				t.Fatalf("%v, %v", tok, err)
			}
			// Another process refreshes (rotating the refresh token) and
			// stores a token that expires before the one served here.
			srv.mu.Lock()
			srv.live["g"] = "g-rt-SECRET-9"
			srv.mu.Unlock()
			store.mu.Lock()
			store.tok = tc.stored(clock.Now())
			store.mu.Unlock()
			// Everything expires; this replica must move on, not stay
			// stuck on its rotated-away refresh token.
			clock.Advance(3 * time.Hour)
			tok, err := ts.Token()
			if err != nil {
				t.Fatalf("stuck: %v", err)
			}
			if !strings.HasPrefix(tok.AccessToken, "g-at-SECRET-") || tok.AccessToken == "g-at-SECRET-a" {
				t.Errorf("served %q", tok.AccessToken)
			}
			for _, rt := range srv.posts {
				if rt == "g-rt-SECRET-a" {
					t.Error("presented the rotated-away refresh token")
				}
			}
			if s := store.stored(); s.RefreshToken != srv.newest("g") {
				t.Errorf("stored %q, want the newest %q", s.RefreshToken, srv.newest("g"))
			}
		})
	}
}

// TestStoreFreshGrantInMemoryIsNeverLost: Initial, fresh from Exchange,
// next to a leftover of an older grant in the Store. The Store's token is
// tried first (this source cannot tell a leftover from another process's
// write); when it fails, Initial's refresh token is still tried, and the
// Store ends up with the newest refresh token.
func TestStoreFreshGrantInMemoryIsNeverLost(t *testing.T) {
	t.Parallel()
	// The old grant was revoked by the new consent.
	srv := newGrantServer(3600, map[string]string{"new": "new-rt-SECRET-0"})
	clock := newAutoClock()
	store := &memStore{tok: &oauth2.Token{AccessToken: "old-at-SECRET-0", RefreshToken: "old-rt-SECRET-0", Expiry: clock.Now().Add(-time.Hour)}}
	ts, _ := newStoreSource(t, store, srv.responder())
	ts.clk = &clockRef{clock}
	ts.Initial = &oauth2.Token{AccessToken: "new-at-SECRET-0", RefreshToken: "new-rt-SECRET-0", Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600}
	if tok, err := ts.Token(); err != nil || tok.AccessToken != "new-at-SECRET-0" {
		t.Fatalf("%v, %v", tok, err)
	}
	clock.Advance(2 * time.Hour)
	tok, err := ts.Token()
	if err != nil {
		t.Fatalf("the fresh grant was lost: %v", err)
	}
	if !strings.HasPrefix(tok.AccessToken, "new-at-") {
		t.Errorf("served %q, want the new grant's", tok.AccessToken)
	}
	if s := store.stored(); s.RefreshToken != srv.newest("new") {
		t.Errorf("stored %q, want the newest %q", s.RefreshToken, srv.newest("new"))
	}
}

// TestWaitRetriesFailedSave: a short-lived program that calls Wait before
// exiting does not lose a rotated refresh token whose Save failed: Wait
// retries the Save until it succeeds.
func TestWaitRetriesFailedSave(t *testing.T) {
	t.Parallel()
	srv := newGrantServer(3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newAutoClock()
	store := &memStore{
		tok:      &oauth2.Token{AccessToken: "g-at-SECRET-0", RefreshToken: "g-rt-SECRET-0", Expiry: clock.Now().Add(-time.Minute)},
		saveErrs: 3,
	}
	ts, _ := newStoreSource(t, store, srv.responder())
	ts.clk = &clockRef{clock}
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	if s := store.stored(); s.RefreshToken == srv.newest("g") {
		t.Fatal("the first Save should have failed")
	}
	ts.Wait()
	if s := store.stored(); s.RefreshToken != srv.newest("g") {
		t.Errorf("after Wait the Store holds %q, want %q", s.RefreshToken, srv.newest("g"))
	}
	if n := store.saveCount(); n != 4 {
		t.Errorf("%d Saves, want 4 (1 failed, 2 failed retries, 1 success)", n)
	}
	// The retries are a second apart, in fake time.
	for _, d := range clock.Waits() {
		if d != saveRetryInterval {
			t.Errorf("waited %v between Save retries, want %v", d, saveRetryInterval)
		}
	}
}

// TestWaitGivesUpOnFailingSave: Wait is bounded when Save keeps failing.
func TestWaitGivesUpOnFailingSave(t *testing.T) {
	t.Parallel()
	srv := newGrantServer(3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newAutoClock()
	store := &memStore{
		tok:      &oauth2.Token{AccessToken: "g-at-SECRET-0", RefreshToken: "g-rt-SECRET-0", Expiry: clock.Now().Add(-time.Minute)},
		saveErrs: 1 << 30,
	}
	logger, logs := newTestLogger()
	ts, _ := newStoreSource(t, store, srv.responder())
	ts.clk, ts.Logger = &clockRef{clock}, logger
	start := clock.Mono()
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	ts.Wait()
	if d := clock.Mono() - start; d < flushTimeout || d > flushTimeout+2*saveRetryInterval {
		t.Errorf("Wait took %v of fake time, want about %v", d, flushTimeout)
	}
	if !strings.Contains(logs.String(), "giving up saving") {
		t.Errorf("no log of the lost Save: %s", logs)
	}
	assertNoSecret(t, "log", logs.String())
}

// TestStoreExpiredTokenFailingEndpoint: a Store holding an expired token
// and an endpoint refusing its refresh token: every call after the
// failure back-off gets the endpoint's answer again, not ErrNoToken.
func TestStoreExpiredTokenFailingEndpoint(t *testing.T) {
	t.Parallel()
	clock := newAutoClock()
	store := &memStore{tok: &oauth2.Token{AccessToken: "at-SECRET-0", RefreshToken: "rt-SECRET-0", Expiry: clock.Now().Add(-time.Hour)}}
	ts, _ := newStoreSource(t, store, httpmock.NewStringResponder(400, `{"error":"invalid_grant"}`))
	ts.clk = &clockRef{clock}
	for i := range 3 {
		_, err := ts.Token()
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Fatalf("call %d: %v, want invalid_grant", i, err)
		}
		clock.Advance(permanentFailureBackoff)
	}
}
