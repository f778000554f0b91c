package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth/internal/fakepandadoc"
)

// newRotatingServer returns the token endpoint of the Store and rotation
// tests, the fake PandaDoc's engine as newTokenServer sets it up but with
// reuse detection, as servers that rotate do: it refuses, with
// invalid_grant, every refresh token but the newest of each grant, and
// revokes a grant whose rotated-away refresh token is presented. grants
// maps each grant's name to its refresh token, issue 0; the grant's
// tokens are then "<name>-at-SECRET-<n>" with "<name>-rt-SECRET-<n>".
func newRotatingServer(t *testing.T, expiresIn int, grants map[string]string) *fakepandadoc.Server {
	t.Helper()
	srv := fakepandadoc.New(fakepandadoc.Options{
		ClientID:       testClientID,
		ClientSecret:   testClientSecret,
		ExpiresIn:      expiresIn,
		Rotation:       true,
		ReuseDetection: true,
		TokenName: func(kind fakepandadoc.TokenKind, grant string, n int) string {
			return fmt.Sprintf("%s-%s-SECRET-%d", grant, kind, n)
		},
	})
	t.Cleanup(srv.Close)
	for name, rt := range grants {
		srv.AddGrant(name, rt, 0)
	}
	return srv
}

// newest returns the newest refresh token of the grant that rt belongs
// to, "" once the grant is revoked.
func newest(srv *fakepandadoc.Server, rt string) string {
	live, _ := srv.LiveRefreshToken(rt)
	return live
}

// presented returns the refresh token of each of srv's token POSTs.
func presented(srv *fakepandadoc.Server) []string {
	var rts []string
	for _, p := range srv.TokenPosts() {
		rts = append(rts, p.Form.Get("refresh_token"))
	}
	return rts
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
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newAutoClock()
	store := &memStore{tok: &oauth2.Token{AccessToken: "g-at-SECRET-0", RefreshToken: "g-rt-SECRET-0", Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600}}
	ts, _ := newStoreSource(t, store, srv.RoundTrip)
	ts.clk = &clockRef{clock}
	tok, err := ts.Refresh(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.TotalTokenRequests(); n != 1 {
		t.Errorf("%d POSTs, want 1", n)
	}
	if tok.AccessToken == "g-at-SECRET-0" {
		t.Error("Refresh returned the stored token")
	}
	if s := store.stored(); s.RefreshToken != newest(srv, "g-rt-SECRET-0") {
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
			srv := newRotatingServer(t, 3600, nil)
			srv.AddGrant("g", "g-rt-SECRET-a", 8) // its next tokens are g-at-SECRET-9, g-rt-SECRET-9
			clock := newAutoClock()
			store := &memStore{tok: &oauth2.Token{AccessToken: "g-at-SECRET-a", RefreshToken: "g-rt-SECRET-a", Expiry: clock.Now().Add(2 * time.Hour), ExpiresIn: 7200}}
			ts, _ := newStoreSource(t, store, srv.RoundTrip)
			ts.clk = &clockRef{clock}
			if tok, err := ts.Token(); err != nil || tok.AccessToken != "g-at-SECRET-a" {
				t.Fatalf("%v, %v", tok, err)
			}
			// Another process refreshes (rotating the refresh token) and
			// stores a token that expires before the one served here.
			if other, ok := srv.Rotate("g-rt-SECRET-a"); !ok || other.RefreshToken != "g-rt-SECRET-9" {
				t.Fatalf("the other process's refresh: %v, %v", other, ok)
			}
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
			for _, rt := range presented(srv) {
				if rt == "g-rt-SECRET-a" {
					t.Error("presented the rotated-away refresh token")
				}
			}
			if s := store.stored(); s.RefreshToken != newest(srv, "g-rt-SECRET-a") {
				t.Errorf("stored %q, want the newest %q", s.RefreshToken, newest(srv, "g-rt-SECRET-a"))
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
	srv := newRotatingServer(t, 3600, map[string]string{"new": "new-rt-SECRET-0"})
	clock := newAutoClock()
	store := &memStore{tok: &oauth2.Token{AccessToken: "old-at-SECRET-0", RefreshToken: "old-rt-SECRET-0", Expiry: clock.Now().Add(-time.Hour)}}
	ts, _ := newStoreSource(t, store, srv.RoundTrip)
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
	if s := store.stored(); s.RefreshToken != newest(srv, "new-rt-SECRET-0") {
		t.Errorf("stored %q, want the newest %q", s.RefreshToken, newest(srv, "new-rt-SECRET-0"))
	}
}

// TestWaitRetriesFailedSave: a short-lived program that calls Wait before
// exiting does not lose a rotated refresh token whose Save failed: Wait
// retries the Save until it succeeds.
func TestWaitRetriesFailedSave(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newPumpedClock(t)
	store := &memStore{
		tok:      &oauth2.Token{AccessToken: "g-at-SECRET-0", RefreshToken: "g-rt-SECRET-0", Expiry: clock.Now().Add(-time.Minute)},
		saveErrs: 3,
	}
	ts, _ := newStoreSource(t, store, srv.RoundTrip)
	ts.clk = &clockRef{clock}
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	ts.Wait()
	if s := store.stored(); s.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("after Wait the Store holds %q, want %q", s.RefreshToken, newest(srv, "g-rt-SECRET-0"))
	}
	if n := store.saveCount(); n != 4 {
		t.Errorf("%d Saves, want 4 (1 failed, 2 failed retries, 1 success)", n)
	}
	if ts.busy() {
		t.Error("saved, yet a Save retry or the lock is still held")
	}
}

// TestWaitGivesUpOnFailingSave: Wait is bounded when Save keeps failing;
// it gives up waiting, not saving: the lock stays held and the timer
// retries until the Store takes the token.
func TestWaitGivesUpOnFailingSave(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newPumpedClock(t)
	store := &memStore{
		tok:      &oauth2.Token{AccessToken: "g-at-SECRET-0", RefreshToken: "g-rt-SECRET-0", Expiry: clock.Now().Add(-time.Minute)},
		saveErrs: 1 << 30,
	}
	logger, logs := newTestLogger()
	ts, _ := newStoreSource(t, store, srv.RoundTrip)
	ts.clk, ts.Logger = &clockRef{clock}, logger
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	start := clock.Mono()
	ts.Wait()
	// The Save-retry timer runs beside the test on the pumped clock, so
	// fake time may run on before Wait starts: only the lower bound holds.
	if d := clock.Mono() - start; d < flushTimeout {
		t.Errorf("Wait gave up after %v of fake time, want at least %v", d, flushTimeout)
	}
	if !strings.Contains(logs.String(), "still not saved") {
		t.Errorf("no log of the unsaved token: %s", logs)
	}
	if !ts.busy() {
		t.Error("Wait gave up, and the Save retries and the lock went with it")
	}
	store.mu.Lock()
	store.saveErrs = 0 // the Store is back
	store.mu.Unlock()
	// The retries go on: a Wait (bounded in fake time, which the retry
	// timer moves on) ends with the token saved.
	for ts.cache.Load().unsaved {
		ts.Wait()
	}
	if s := store.stored(); s.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("the Store holds %q, want %q", s.RefreshToken, newest(srv, "g-rt-SECRET-0"))
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

func TestTokenSourceSavesBeforeUse(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, _, clock := newSource(t, srv, time.Hour)
	var servedAtSave string
	store := &memStore{}
	store.onSave = func(tok *oauth2.Token) {
		servedAtSave = ts.cache.Load().tok.AccessToken
	}
	ts.Store = store
	clock.Advance(2 * time.Hour)
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken != "rt-SECRET-1" {
		t.Fatalf("refresh token %q, want the rotated one", tok.RefreshToken)
	}
	if servedAtSave != testAccess {
		t.Errorf("when Save ran, %q was already served; the new token must be saved before use", servedAtSave)
	}
	if s := store.stored(); s == nil || s.RefreshToken != "rt-SECRET-1" {
		t.Errorf("stored %v; want the rotated refresh token", s)
	}
	if got := postForm(srv, 0)["refresh_token"]; got != testRefresh {
		t.Errorf("refreshed with %q", got)
	}
}

func TestTokenSourceSaveFailureIsRetried(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, _, _ := newSource(t, srv, time.Hour)
	clock := newFakeClock() // timers fire only when the test advances it
	ts.clk = &clockRef{clock}
	store := &memStore{saveErrs: 2}
	logger, logs := newTestLogger()
	ts.Store, ts.Logger = store, logger
	clock.Advance(2 * time.Hour)

	tok, err := ts.Token()
	if err != nil || tok.AccessToken != "at-SECRET-1" {
		t.Fatalf("a failed Save must not lose the token: %v, %v", tok, err)
	}
	if !strings.Contains(logs.String(), "saving the new token failed") {
		t.Errorf("the Save failure was not logged: %s", logs)
	}
	// calls serves the token n times, letting any Save retry finish.
	calls := func(n int) {
		for range n {
			if tok, _ := ts.Token(); tok.AccessToken != "at-SECRET-1" {
				t.Fatal("lost the new token")
			}
			settle(ts)
		}
	}
	steps := []struct {
		advance time.Duration
		saves   int
	}{
		{0, 1},                      // within a second of the failure: no retry
		{saveRetryInterval, 2},      // one retry, which fails
		{saveRetryInterval, 2},      // the wait doubles: not yet
		{saveRetryInterval, 3},      // the next retry succeeds
		{10 * saveRetryInterval, 3}, // saved: no more retries
	}
	for i, st := range steps {
		clock.Advance(st.advance)
		calls(20)
		if got := store.saveCount(); got != st.saves {
			t.Fatalf("step %d: %d Saves, want %d", i, got, st.saves)
		}
	}
	if s := store.stored(); s == nil || s.RefreshToken != "rt-SECRET-1" {
		t.Fatalf("stored %v after the retry succeeded", s)
	}
	assertNoSecret(t, "log", logs.String())
}

func TestTokenSourceUnsavedTokenOutranksStore(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, _, clock := newSource(t, srv, time.Hour)
	store := &memStore{saveErrs: 100, tok: &oauth2.Token{AccessToken: testAccess, RefreshToken: testRefresh}}
	ts.Store = store
	clock.Advance(2 * time.Hour)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	ts.Wait()
	// The second refresh used the rotated token, not the stale stored one.
	if got := postForm(srv, 1)["refresh_token"]; got != "rt-SECRET-1" {
		t.Errorf("second refresh used %q, want rt-SECRET-1", got)
	}
}

func TestTokenSourceStore(t *testing.T) {
	t.Parallel()
	t.Run("loads when Initial is nil", func(t *testing.T) {
		t.Parallel()
		clock := newAutoClock()
		store := &memStore{tok: &oauth2.Token{AccessToken: "at-SECRET-9", RefreshToken: "rt-SECRET-9", Expiry: clock.Now().Add(time.Hour)}}
		mt := httpmock.NewMockTransport()
		ts := &TokenSource{Config: testConfig(mt), Store: store, clk: &clockRef{clock}}
		tok, err := ts.Token()
		if err != nil || tok.AccessToken != "at-SECRET-9" {
			t.Fatalf("%v, %v", tok, err)
		}
		if n := mt.GetTotalCallCount(); n != 0 {
			t.Errorf("%d POSTs", n)
		}
	})
	t.Run("adopts a valid token another process stored", func(t *testing.T) {
		t.Parallel()
		ts, mt, clock := newSource(t, newTokenServer(t, 3600), time.Hour)
		store := &memStore{}
		ts.Store = store
		clock.Advance(2 * time.Hour)
		store.tok = &oauth2.Token{AccessToken: "at-SECRET-other", RefreshToken: "rt-SECRET-other", Expiry: clock.Now().Add(time.Hour)}
		tok, err := ts.Token()
		if err != nil || tok.AccessToken != "at-SECRET-other" {
			t.Fatalf("%v, %v; want the stored token adopted", tok, err)
		}
		if n := mt.GetCallCountInfo()[tokenCall]; n != 0 {
			t.Errorf("%d POSTs, want 0", n)
		}
	})
	t.Run("refreshes with a newer stored refresh token", func(t *testing.T) {
		t.Parallel()
		srv := newTokenServer(t, 3600)
		ts, _, clock := newSource(t, srv, time.Hour)
		store := &memStore{}
		ts.Store = store
		clock.Advance(2 * time.Hour)
		// Another process rotated the refresh token and stored the new one:
		// the endpoint refuses the initial one now.
		other, ok := srv.Rotate(testRefresh)
		if !ok {
			t.Fatal("the endpoint refused the initial refresh token")
		}
		store.tok = &oauth2.Token{AccessToken: other.AccessToken, RefreshToken: other.RefreshToken, Expiry: clock.Now().Add(-time.Minute)}
		if _, err := ts.Token(); err != nil {
			t.Fatal(err)
		}
		if got := postForm(srv, 0)["refresh_token"]; got != other.RefreshToken {
			t.Errorf("refreshed with %q, want the stored %q", got, other.RefreshToken)
		}
	})
	t.Run("nothing anywhere", func(t *testing.T) {
		t.Parallel()
		ts := &TokenSource{Config: testConfig(httpmock.NewMockTransport()), Store: &memStore{}}
		if _, err := ts.Token(); !errors.Is(err, ErrNoToken) {
			t.Errorf("%v, want ErrNoToken", err)
		}
		ts = &TokenSource{Config: testConfig(httpmock.NewMockTransport())}
		if _, err := ts.Token(); !errors.Is(err, ErrNoToken) {
			t.Errorf("%v, want ErrNoToken", err)
		}
	})
	t.Run("failing Load with no token is an error", func(t *testing.T) {
		t.Parallel()
		ts := &TokenSource{Config: testConfig(httpmock.NewMockTransport()), Store: &memStore{loadErr: errors.New("db down")}}
		if _, err := ts.Token(); err == nil || !strings.Contains(err.Error(), "db down") {
			t.Errorf("%v, want the Load error", err)
		}
	})
	t.Run("failing Load at refresh keeps the cached refresh token", func(t *testing.T) {
		t.Parallel()
		srv := newTokenServer(t, 3600)
		ts, _, clock := newSource(t, srv, time.Hour)
		ts.Store = &memStore{loadErr: errors.New("db down")}
		clock.Advance(2 * time.Hour)
		if tok, err := ts.Token(); err != nil || tok.AccessToken != "at-SECRET-1" {
			t.Fatalf("%v, %v", tok, err)
		}
	})
	t.Run("no refresh token", func(t *testing.T) {
		t.Parallel()
		clock := newAutoClock()
		mt := httpmock.NewMockTransport()
		ts := &TokenSource{Config: testConfig(mt), Initial: &oauth2.Token{AccessToken: testAccess, Expiry: clock.Now().Add(-time.Second)}, clk: &clockRef{clock}}
		if _, err := ts.Token(); !errors.Is(err, ErrNoRefreshToken) {
			t.Errorf("%v, want ErrNoRefreshToken", err)
		}
		if n := mt.GetTotalCallCount(); n != 0 {
			t.Errorf("%d POSTs", n)
		}
	})
	t.Run("nil Config", func(t *testing.T) {
		t.Parallel()
		ts := &TokenSource{Initial: &oauth2.Token{AccessToken: testAccess, Expiry: time.Now().Add(-time.Second), RefreshToken: testRefresh}}
		if _, err := ts.Token(); err == nil {
			t.Error("want an error")
		}
	})
}

// lockingStore is a memStore with a Locker whose unlock waits for a gate,
// to hold a flight open after it published its token.
type lockingStore struct {
	*memStore
	unlocking chan struct{} // receives when unlock is entered
	gate      chan struct{} // unlock returns once closed
}

func (l *lockingStore) Lock(ctx context.Context) (func(), error) {
	return func() {
		l.unlocking <- struct{}{}
		<-l.gate
	}, nil
}

func TestTokenSourceStaleStoreFallsBackToNewerGrant(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600) // it refuses the old grant's refresh token
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, srv.RoundTrip)
	clock := newAutoClock()
	// Initial comes from a new login; the Store still holds an old one.
	store := &memStore{tok: &oauth2.Token{AccessToken: "at-SECRET-old", RefreshToken: "rt-SECRET-old", Expiry: clock.Now().Add(-time.Hour)}}
	ts := &TokenSource{
		Config:  testConfig(mt),
		Initial: &oauth2.Token{AccessToken: testAccess, RefreshToken: testRefresh, Expiry: clock.Now().Add(-time.Minute)},
		Store:   store,
		clk:     &clockRef{clock},
	}
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != "at-SECRET-1" {
		t.Fatalf("%v, %v; want the newer grant in memory refreshed (refresh tokens tried: %q)", tok, err, presented(srv))
	}
	if s := store.stored(); s == nil || s.RefreshToken != "rt-SECRET-1" {
		t.Errorf("stored %v, want the new token", s)
	}
}

func TestTokenSourceLocker(t *testing.T) {
	t.Parallel()
	t.Run("one lock per refresh, store re-read under it", func(t *testing.T) {
		t.Parallel()
		srv := newTokenServer(t, 3600)
		ts, _, clock := newSource(t, srv, time.Hour)
		store := &lockStore{memStore: &memStore{}}
		ts.Store = store
		clock.Advance(2 * time.Hour)
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := ts.Token(); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if store.locks != 1 || store.loadsHeld != 1 || store.held {
			t.Errorf("locks %d, loads under the lock %d, still held %v; want 1, 1, false", store.locks, store.loadsHeld, store.held)
		}
	})
	t.Run("adopts what another process stored under the lock", func(t *testing.T) {
		t.Parallel()
		ts, mt, clock := newSource(t, newTokenServer(t, 3600), time.Hour)
		clock.Advance(2 * time.Hour)
		store := &lockStore{memStore: &memStore{tok: &oauth2.Token{AccessToken: "at-SECRET-other", RefreshToken: "rt-SECRET-other", Expiry: clock.Now().Add(time.Hour)}}}
		ts.Store = store
		if tok, err := ts.Token(); err != nil || tok.AccessToken != "at-SECRET-other" {
			t.Fatalf("%v, %v", tok, err)
		}
		if n := mt.GetCallCountInfo()[tokenCall]; n != 0 || store.held {
			t.Errorf("%d POSTs, lock held %v; want 0, false", n, store.held)
		}
	})
	t.Run("unlocks when the refresh fails", func(t *testing.T) {
		t.Parallel()
		ts, mt, clock := newSource(t, nil, time.Hour)
		mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(400, `{"error":"invalid_grant"}`))
		store := &lockStore{memStore: &memStore{}}
		ts.Store = store
		clock.Advance(2 * time.Hour)
		if _, err := ts.Token(); err == nil {
			t.Fatal("want an error")
		}
		if store.held {
			t.Error("the lock is still held")
		}
	})
	t.Run("a lock error is returned", func(t *testing.T) {
		t.Parallel()
		ts, mt, clock := newSource(t, newTokenServer(t, 0), time.Hour)
		ts.Store = &lockStore{memStore: &memStore{}, lockErr: errors.New("db gone")}
		clock.Advance(2 * time.Hour)
		_, err := ts.Token()
		if err == nil || !strings.Contains(err.Error(), "refresh lock") || !strings.Contains(err.Error(), "db gone") {
			t.Errorf("%v, want the lock error", err)
		}
		if n := mt.GetCallCountInfo()[tokenCall]; n != 0 {
			t.Errorf("%d POSTs without the lock", n)
		}
	})
}

// TestTokenSourceInitialNewerThanStore: Initial just returned by
// Exchange, the Store still holding the previous grant's token. The
// Store is behind, so its token is not adopted over Initial's.
func TestTokenSourceInitialNewerThanStore(t *testing.T) {
	t.Parallel()
	srv := newGrantlessServer(t, 3600)
	srv.AddGrant("", "rt-SECRET-new", 0)
	srv.AddGrant("old", "rt-SECRET-old", 0)
	srv.Revoke("rt-SECRET-old") // the old grant is revoked
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, srv.RoundTrip)
	clock := newAutoClock()
	store := &memStore{tok: &oauth2.Token{AccessToken: "at-SECRET-old", RefreshToken: "rt-SECRET-old", Expiry: clock.Now().Add(50 * time.Minute)}}
	ts := &TokenSource{
		Config:  testConfig(mt),
		Initial: &oauth2.Token{AccessToken: "at-SECRET-new", RefreshToken: "rt-SECRET-new", Expiry: clock.Now().Add(time.Hour)},
		Store:   store, clk: &clockRef{clock},
	}
	t.Cleanup(ts.Wait)
	ts.Token()
	// The stored token is adopted: this source cannot tell a leftover
	// from a token another process stored.
	tok, err := ts.Refresh(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ts.Invalidate(tok) // the old grant was revoked by the re-login
	tok, err = ts.Token()
	if err != nil {
		t.Fatalf("%v: rt-SECRET-new, the live grant, is lost (stored: %s)", err, store.stored().RefreshToken)
	}
	if tok.AccessToken != "at-SECRET-1" {
		t.Errorf("served %q, want the new grant's refreshed token", tok.AccessToken)
	}
	if s := store.stored(); s.RefreshToken != "rt-SECRET-1" {
		t.Errorf("stored %q, want the newest refresh token", s.RefreshToken)
	}
}

// lockStore is a memStore that implements Locker and records its use.
type lockStore struct {
	*memStore
	lockErr error
	mu      sync.Mutex // guards the fields below
	held    bool
	locks   int
	// loadsHeld counts Loads made while the lock was held.
	loadsHeld int
}

func (l *lockStore) Lock(ctx context.Context) (func(), error) {
	if l.lockErr != nil {
		return nil, l.lockErr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held {
		return nil, errors.New("lock taken twice")
	}
	l.held = true
	l.locks++
	return func() {
		l.mu.Lock()
		l.held = false
		l.mu.Unlock()
	}, nil
}

func (l *lockStore) Load(ctx context.Context) (*oauth2.Token, error) {
	l.mu.Lock()
	if l.held {
		l.loadsHeld++
	}
	l.mu.Unlock()
	return l.memStore.Load(ctx)
}

// TestStoredRefreshTokenSurvivesTransientFailure: an early refresh finds
// a token another process stored that is not usable (only its refresh
// token); the refresh with it fails transiently. The newer refresh token
// must still be the one used next, never the rotated-away one in memory.
func TestStoredRefreshTokenSurvivesTransientFailure(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 7200, nil)
	srv.AddGrant("g", "g-rt-SECRET-a", 8) // its next tokens are g-at-SECRET-9, g-rt-SECRET-9
	clock := newAutoClock()
	store := &memStore{tok: &oauth2.Token{AccessToken: "g-at-SECRET-a", RefreshToken: "g-rt-SECRET-a", Expiry: clock.Now().Add(2 * time.Hour), ExpiresIn: 7200}}
	ts, _ := newStoreSource(t, store, srv.RoundTrip)
	ts.clk = &clockRef{clock}
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	// Another process rotates the refresh token and stores only it.
	if other, ok := srv.Rotate("g-rt-SECRET-a"); !ok || other.RefreshToken != "g-rt-SECRET-9" {
		t.Fatalf("the other process's refresh: %v, %v", other, ok)
	}
	store.mu.Lock()
	store.tok = &oauth2.Token{RefreshToken: "g-rt-SECRET-9"}
	store.mu.Unlock()
	clock.Advance(2*time.Hour - 4*time.Minute)                     // the early window
	srv.FailNext(fakepandadoc.Body(429, "application/json", `{}`)) // the endpoint throttles this one refresh
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	settle(ts)
	clock.Advance(time.Hour)
	if _, err := ts.Token(); err != nil {
		t.Fatalf("the newer refresh token was dropped: %v", err)
	}
	for _, rt := range presented(srv) {
		if rt == "g-rt-SECRET-a" {
			t.Errorf("presented the rotated-away refresh token: %q", presented(srv))
		}
	}
}
