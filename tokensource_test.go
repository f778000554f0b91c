package pandadocauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"
)

func TestTokenSourceHotPath(t *testing.T) {
	srv := &tokenServer{expiresIn: 3600}
	ts, mt, _ := newSource(t, srv, time.Hour)
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if first.AccessToken != testAccess {
		t.Fatalf("got %q, want the initial token", first.AccessToken)
	}
	ct1, _ := ts.current(context.Background())
	ct2, _ := ts.current(context.Background())
	if ct1 != ct2 {
		t.Fatal("the cached snapshot changed between two reads of a valid token")
	}
	if ct1.header != "Bearer "+testAccess {
		t.Fatalf("header %q", ct1.header)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := ts.Token(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Token allocates %.1f times per call on the hot path, want 0", allocs)
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 0 {
		t.Errorf("%d token POSTs for a valid token, want 0", n)
	}
}

func TestTokenSourceZeroExpiryNeverRefreshes(t *testing.T) {
	t.Parallel()
	ts, mt, clock := newSource(t, &tokenServer{}, 0)
	clock.Advance(10 * 365 * 24 * time.Hour)
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != testAccess {
		t.Fatalf("Token() = %v, %v; want the initial token", tok, err)
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 0 {
		t.Errorf("%d token POSTs, want 0: a zero Expiry is valid until a 401", n)
	}
}

func TestTokenSourceConcurrentRefreshIsDeduplicated(t *testing.T) {
	t.Parallel()
	srv := &tokenServer{expiresIn: 3600, gate: make(chan struct{})}
	ts, mt, clock := newSource(t, srv, time.Hour)
	clock.Advance(2 * time.Hour) // expired

	const n = 64
	var wg sync.WaitGroup
	results := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := ts.TokenContext(context.Background())
			errs[i] = err
			if err == nil {
				results[i] = tok.AccessToken
			}
		}()
	}
	srv.waitArrived(1)
	close(srv.gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || results[i] != "at-SECRET-1" {
			t.Fatalf("caller %d: %q, %v; want at-SECRET-1", i, results[i], errs[i])
		}
	}
	if got := mt.GetCallCountInfo()[tokenCall]; got != 1 {
		t.Errorf("%d token POSTs for %d concurrent callers, want 1", got, n)
	}
}

func TestTokenSourceFailedRefreshIsShared(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	gate := make(chan struct{})
	arrived := make(chan struct{}, 1)
	mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
		arrived <- struct{}{}
		<-gate
		return httpmock.NewStringResponse(400, `{"error":"invalid_grant","error_description":"refresh token is expired"}`), nil
	})
	clock := newAutoClock()
	ts := &TokenSource{
		Config:  testConfig(mt),
		Initial: &oauth2.Token{AccessToken: testAccess, RefreshToken: testRefresh, Expiry: clock.Now().Add(-time.Minute)},
		clk:     &clockRef{clock},
	}
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = ts.Token()
		}()
	}
	<-arrived
	close(gate)
	wg.Wait()
	for i, err := range errs {
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Fatalf("caller %d: %v; want a RetrieveError with ErrorCode invalid_grant", i, err)
		}
	}
	if got := mt.GetCallCountInfo()[tokenCall]; got != 1 {
		t.Errorf("%d token POSTs for %d waiters on a failing endpoint, want 1", got, n)
	}

	// Within the back-off, calls fail fast with the same error.
	_, err := ts.Token()
	if !errors.Is(err, errs[0]) {
		t.Errorf("call within the back-off: %v, want the remembered error", err)
	}
	if got := mt.GetCallCountInfo()[tokenCall]; got != 1 {
		t.Errorf("%d token POSTs within the back-off, want 1", got)
	}
	// After it, the endpoint is asked again.
	clock.Advance(permanentFailureBackoff + time.Second)
	if _, err := ts.Token(); err == nil {
		t.Fatal("want the endpoint's error again")
	}
	if got := mt.GetCallCountInfo()[tokenCall]; got != 2 {
		t.Errorf("%d token POSTs after the back-off, want 2", got)
	}
}

func TestTokenSourceCallerContextEndsWhileWaiting(t *testing.T) {
	t.Parallel()
	srv := &tokenServer{expiresIn: 3600, gate: make(chan struct{})}
	ts, mt, clock := newSource(t, srv, time.Hour)
	clock.Advance(2 * time.Hour)

	ctx, cancel := context.WithCancel(context.Background())
	leaver := make(chan error, 1)
	go func() {
		_, err := ts.TokenContext(ctx)
		leaver <- err
	}()
	stayer := make(chan error, 1)
	go func() {
		_, err := ts.TokenContext(context.Background())
		stayer <- err
	}()
	srv.waitArrived(1)
	cancel()
	// The leaver returns while the endpoint still holds the refresh.
	if err := <-leaver; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller got %v, want context.Canceled", err)
	}
	close(srv.gate)
	if err := <-stayer; err != nil {
		t.Fatalf("the other caller failed: %v", err)
	}
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != "at-SECRET-1" {
		t.Fatalf("after the shared refresh: %v, %v", tok, err)
	}
	if got := mt.GetCallCountInfo()[tokenCall]; got != 1 {
		t.Errorf("%d token POSTs, want 1", got)
	}

	// A context already past its deadline fails at once.
	clock.Advance(2 * time.Hour)
	dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer dcancel()
	if _, err := ts.TokenContext(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("expired deadline: %v, want context.DeadlineExceeded", err)
	}
}

func TestTokenSourceEarlyRefresh(t *testing.T) {
	t.Parallel()
	srv := &tokenServer{expiresIn: 3600, gate: make(chan struct{})}
	ts, mt, clock := newSource(t, srv, 10*time.Minute)
	ts.EarlyRefresh = 5 * time.Minute

	clock.Advance(4 * time.Minute) // before the window
	if tok, _ := ts.Token(); tok.AccessToken != testAccess {
		t.Fatalf("got %q", tok.AccessToken)
	}
	if srv.n.Load() != 0 {
		t.Fatal("refreshed before the early window")
	}

	clock.Advance(2 * time.Minute) // inside the window, 4 minutes left
	for range 100 {
		// Served at once while the gated refresh runs in the background.
		tok, err := ts.Token()
		if err != nil || tok.AccessToken != testAccess {
			t.Fatalf("inside the window: %v, %v; want the current token", tok, err)
		}
	}
	srv.waitArrived(1)
	for range 100 {
		ts.Token()
	}
	close(srv.gate)
	ts.Wait()
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != "at-SECRET-1" {
		t.Fatalf("after the background refresh: %v, %v", tok, err)
	}
	if got := mt.GetCallCountInfo()[tokenCall]; got != 1 {
		t.Errorf("%d token POSTs, want 1 background refresh at a time", got)
	}
}

func TestTokenSourceEarlyRefreshFailureKeepsServing(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(500, "boom"))
	clock := newAutoClock()
	logger, logs := newTestLogger()
	ts := &TokenSource{
		Config:  testConfig(mt),
		Initial: &oauth2.Token{AccessToken: testAccess, RefreshToken: testRefresh, Expiry: clock.Now().Add(10 * time.Minute)},
		Logger:  logger,
		clk:     &clockRef{clock},
	}
	t.Cleanup(ts.Wait)
	clock.Advance(6 * time.Minute)
	if tok, err := ts.Token(); err != nil || tok.AccessToken != testAccess {
		t.Fatalf("%v, %v", tok, err)
	}
	ts.Wait()
	if got := mt.GetCallCountInfo()[tokenCall]; got != maxAttempts {
		t.Fatalf("%d POSTs, want %d attempts for a 500", got, maxAttempts)
	}
	// The valid token keeps being served, and no new attempt starts
	// before the back-off ends.
	for range 10 {
		if tok, err := ts.Token(); err != nil || tok.AccessToken != testAccess {
			t.Fatalf("after a failed early refresh: %v, %v", tok, err)
		}
	}
	ts.Wait()
	if got := mt.GetCallCountInfo()[tokenCall]; got != maxAttempts {
		t.Fatalf("%d POSTs within the back-off, want %d", got, maxAttempts)
	}
	clock.Advance(minBackgroundBackoff + time.Second)
	ts.Token()
	ts.Wait()
	if got := mt.GetCallCountInfo()[tokenCall]; got != 2*maxAttempts {
		t.Fatalf("%d POSTs after the back-off, want %d", got, 2*maxAttempts)
	}
	if !strings.Contains(logs.String(), "early refresh failed") {
		t.Errorf("the failure was not logged: %s", logs)
	}
	assertNoSecret(t, "log", logs.String())
}

func TestTokenSourceShortLivedTokenWindow(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		lifetime time.Duration
		early    time.Duration
		at       time.Duration
		refresh  bool
	}{
		{"default window, long token, before it", time.Hour, 0, 54 * time.Minute, false},
		{"default window, long token, inside it", time.Hour, 0, 56 * time.Minute, true},
		{"60s token gets a 30s window, before it", time.Minute, 0, 29 * time.Second, false},
		{"60s token gets a 30s window, inside it", time.Minute, 0, 31 * time.Second, true},
		{"explicit window, short token", 10 * time.Second, time.Minute, 4 * time.Second, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts, mt, clock := newSource(t, &tokenServer{expiresIn: int(tc.lifetime / time.Second)}, tc.lifetime)
			ts.EarlyRefresh = tc.early
			clock.Advance(tc.at)
			tok, err := ts.Token()
			if err != nil || tok.AccessToken != testAccess {
				t.Fatalf("%v, %v; want the current token served", tok, err)
			}
			ts.Wait()
			if got, want := mt.GetCallCountInfo()[tokenCall], map[bool]int{false: 0, true: 1}[tc.refresh]; got != want {
				t.Errorf("%d POSTs, want %d", got, want)
			}
			if tc.refresh {
				// The refreshed token is not itself due: no loop.
				for range 10 {
					ts.Token()
				}
				ts.Wait()
				if got := mt.GetCallCountInfo()[tokenCall]; got != 1 {
					t.Errorf("%d POSTs after the refresh, want 1", got)
				}
			}
		})
	}
}

func TestTokenSourceBlocksOnlyNearExpiry(t *testing.T) {
	t.Parallel()
	srv := &tokenServer{expiresIn: 3600}
	ts, _, clock := newSource(t, srv, 10*time.Minute)
	// Within blockingSkew of expiry the old token is no longer served.
	clock.Advance(10*time.Minute - blockingSkew + time.Second)
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != "at-SECRET-1" {
		t.Fatalf("%v, %v; want a new token", tok, err)
	}
}

func TestTokenSourceRetries(t *testing.T) {
	t.Parallel()
	ok := httpmock.NewStringResponder(200, `{"access_token":"at-SECRET-1","expires_in":3600,"refresh_token":"rt-SECRET-1"}`)
	cases := []struct {
		name      string
		responder httpmock.Responder
		posts     int
		wantErr   bool
		transient bool
	}{
		{"503 then success", httpmock.NewStringResponder(503, "busy").Once().Then(ok), 2, false, false},
		{"network error then success", httpmock.NewErrorResponder(errors.New("connection reset by peer")).Once().Then(ok), 2, false, false},
		{"429 with Retry-After then success", httpmock.NewStringResponder(429, "slow down").HeaderSet(map[string][]string{"Retry-After": {"2"}}).Once().Then(ok), 2, false, false},
		{"429 without Retry-After is not retried at once", httpmock.NewStringResponder(429, "slow down").Once().Then(ok), 1, true, true},
		{"408 then success", httpmock.NewStringResponder(408, "timeout").Once().Then(ok), 2, false, false},
		{"500 every time", httpmock.NewStringResponder(500, "boom"), maxAttempts, true, true},
		{"invalid_grant is not retried", httpmock.NewStringResponder(400, `{"error":"invalid_grant"}`), 1, true, false},
		{"invalid_client is not retried", httpmock.NewStringResponder(401, `{"error":"invalid_client"}`), 1, true, false},
		{"Retry-After past the deadline gives up", httpmock.NewStringResponder(429, "").HeaderSet(map[string][]string{"Retry-After": {"3600"}}), 1, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts, mt, clock := newSource(t, nil, time.Hour)
			mt.RegisterResponder("POST", TokenURL, tc.responder)
			clock.Advance(2 * time.Hour)
			tok, err := ts.Token()
			if got := mt.GetCallCountInfo()[tokenCall]; got != tc.posts {
				t.Errorf("%d POSTs, want %d", got, tc.posts)
			}
			if tc.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				if isPermanent(err) == tc.transient {
					t.Errorf("transient = %v, want %v", !isPermanent(err), tc.transient)
				}
				assertNoSecret(t, "error", err.Error())
				return
			}
			if err != nil || tok.AccessToken != "at-SECRET-1" {
				t.Fatalf("%v, %v", tok, err)
			}
		})
	}
}

func TestTokenSourceHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	ts, mt, clock := newSource(t, nil, time.Hour)
	var gap time.Duration
	var first time.Duration
	calls := 0
	mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
		calls++
		if calls == 1 {
			first = clock.Mono()
			r := httpmock.NewStringResponse(429, "")
			r.Header.Set("Retry-After", "7")
			return r, nil
		}
		gap = clock.Mono() - first
		return httpmock.NewStringResponse(200, `{"access_token":"at-SECRET-1"}`), nil
	})
	clock.Advance(2 * time.Hour)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	if gap != 7*time.Second {
		t.Errorf("retried after %v of fake time, want Retry-After's 7s", gap)
	}
}

// TestTokenSourceThrottled: a 429 without Retry-After (PandaDoc sends
// none; its limit is a 60-second sliding window) is not retried within
// the refresh; it is the shared failure for a back-off of seconds that
// grows while 429s go on, and a success resets it.
func TestTokenSourceThrottled(t *testing.T) {
	t.Parallel()
	ts, mt, clock := newSource(t, nil, time.Hour)
	var throttle atomic.Bool
	throttle.Store(true)
	mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
		if throttle.Load() {
			return httpmock.NewStringResponse(429, `{"message":"Too many requests"}`), nil
		}
		return httpmock.NewStringResponse(200, `{"access_token":"at-SECRET-1","refresh_token":"rt-SECRET-1","expires_in":3600}`), nil
	})
	clock.Advance(2 * time.Hour)
	posts := func() int { return mt.GetCallCountInfo()[tokenCall] }
	for i, backoff := range []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute} {
		if _, err := ts.Token(); err == nil || isPermanent(err) {
			t.Fatalf("round %d: %v, want a transient error", i, err)
		}
		if got := posts(); got != i+1 {
			t.Fatalf("round %d: %d POSTs, want %d (one per back-off)", i, got, i+1)
		}
		clock.Advance(backoff - time.Millisecond)
		if _, err := ts.Token(); err == nil {
			t.Fatalf("round %d: no error within the %v back-off", i, backoff)
		}
		if got := posts(); got != i+1 {
			t.Fatalf("round %d: a POST within the %v back-off", i, backoff)
		}
		clock.Advance(time.Millisecond)
	}
	throttle.Store(false)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	// After a success the back-off starts again from its least.
	if _, err := ts.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	throttle.Store(true)
	before := posts()
	ts.Refresh(context.Background())
	clock.Advance(minThrottleBackoff)
	ts.Refresh(context.Background())
	if got := posts() - before; got != 2 {
		t.Errorf("%d POSTs after a success and %v, want 2", got, minThrottleBackoff)
	}
}

func TestTokenSourceBadResponses(t *testing.T) {
	t.Parallel()
	huge := `{"access_token":"at-SECRET-1","pad":"` + strings.Repeat("x", maxBodyBytes) + `"}`
	cases := []struct {
		name      string
		status    int
		body      string
		malformed bool   // errors.Is ErrMalformedResponse
		code      string // RetrieveError.ErrorCode
		expiresIn int64  // for valid ones
	}{
		{"HTML page", 200, "<html><body>maintenance</body></html>", true, "", 0},
		{"empty body", 200, "", true, "", 0},
		{"truncated JSON", 200, `{"access_token":"at-SEC`, true, "", 0},
		{"JSON array", 200, `[1,2]`, true, "", 0},
		{"no access_token", 200, `{"token_type":"Bearer","expires_in":3600}`, true, "", 0},
		{"negative expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":-5}`, true, "", 0},
		{"huge expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":1e15}`, true, "", 0},
		{"non-numeric expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":"soon"}`, true, "", 0},
		{"boolean expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":true}`, true, "", 0},
		{"body over 1 MiB", 200, huge, true, "", 0},
		{"200 carrying error", 200, `{"error":"invalid_grant","error_description":"nope"}`, false, "invalid_grant", 0},
		{"400 HTML", 400, "<html>bad</html>", false, "", 0},
		{"numeric string expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":"3600"}`, false, "", 3600},
		{"float expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":31535999.0}`, false, "", 31535999},
		{"null expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":null}`, false, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mt := httpmock.NewMockTransport()
			mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(tc.status, tc.body))
			tok, err := testConfig(mt).Refresh(context.Background(), testRefresh)
			valid := !tc.malformed && tc.code == "" && tc.status == 200
			if valid {
				if err != nil {
					t.Fatalf("want a token, got %v", err)
				}
				if tok.ExpiresIn != tc.expiresIn || (tc.expiresIn == 0) != tok.Expiry.IsZero() {
					t.Errorf("ExpiresIn %d, Expiry %v; want %d", tok.ExpiresIn, tok.Expiry, tc.expiresIn)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error, got token %+v", tok)
			}
			if tok != nil {
				t.Error("a token came back with the error")
			}
			if got := errors.Is(err, ErrMalformedResponse); got != tc.malformed {
				t.Errorf("errors.Is(err, ErrMalformedResponse) = %v: %v", got, err)
			}
			var re *oauth2.RetrieveError
			if tc.code != "" && (!errors.As(err, &re) || re.ErrorCode != tc.code) {
				t.Errorf("want a RetrieveError with code %q, got %v", tc.code, err)
			}
			if !strings.HasPrefix(err.Error(), "pandadocauth: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			assertNoSecret(t, "error", err.Error())
		})
	}
}

func TestTokenSourceKeepsRefreshTokenWhenOmitted(t *testing.T) {
	t.Parallel()
	store := &memStore{}
	ts, _, clock := newSource(t, &tokenServer{expiresIn: 3600, noRotate: true}, time.Hour)
	ts.Store = store
	clock.Advance(2 * time.Hour)
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "at-SECRET-1" || tok.RefreshToken != testRefresh {
		t.Fatalf("got access %q refresh %q; want the old refresh token kept", tok.AccessToken, tok.RefreshToken)
	}
	if s := store.stored(); s == nil || s.RefreshToken != testRefresh {
		t.Fatalf("stored %+v; want the kept refresh token", s)
	}
}

func TestTokenSourceSavesBeforeUse(t *testing.T) {
	t.Parallel()
	srv := &tokenServer{expiresIn: 3600}
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
	if got := srv.form(0)["refresh_token"]; got != testRefresh {
		t.Errorf("refreshed with %q", got)
	}
}

func TestTokenSourceSaveFailureIsRetried(t *testing.T) {
	t.Parallel()
	srv := &tokenServer{expiresIn: 3600}
	ts, _, clock := newSource(t, srv, time.Hour)
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
		{saveRetryInterval / 2, 2},  // still within a second of it
		{saveRetryInterval / 2, 3},  // the next retry succeeds
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
	srv := &tokenServer{expiresIn: 3600}
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
	if got := srv.form(1)["refresh_token"]; got != "rt-SECRET-1" {
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
		ts, mt, clock := newSource(t, &tokenServer{expiresIn: 3600}, time.Hour)
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
		srv := &tokenServer{expiresIn: 3600}
		ts, _, clock := newSource(t, srv, time.Hour)
		store := &memStore{}
		ts.Store = store
		clock.Advance(2 * time.Hour)
		store.tok = &oauth2.Token{AccessToken: "at-SECRET-other", RefreshToken: "rt-SECRET-other", Expiry: clock.Now().Add(-time.Minute)}
		if _, err := ts.Token(); err != nil {
			t.Fatal(err)
		}
		if got := srv.form(0)["refresh_token"]; got != "rt-SECRET-other" {
			t.Errorf("refreshed with %q, want the stored rt-SECRET-other", got)
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
		srv := &tokenServer{expiresIn: 3600}
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

func TestTokenSourceInvalidate(t *testing.T) {
	t.Parallel()
	srv := &tokenServer{expiresIn: 3600}
	ts, mt, _ := newSource(t, srv, time.Hour)
	old, _ := ts.Token()
	if !ts.Invalidate(old) {
		t.Fatal("Invalidate of the current token returned false")
	}
	if ts.Invalidate(old) {
		t.Error("a second Invalidate of the same token returned true")
	}
	fresh, err := ts.Token()
	if err != nil || fresh.AccessToken != "at-SECRET-1" {
		t.Fatalf("%v, %v", fresh, err)
	}
	// A late rejection of the replaced token changes nothing.
	if ts.Invalidate(old) {
		t.Error("Invalidate of a replaced token returned true")
	}
	if tok, _ := ts.Token(); tok != fresh {
		t.Error("a late Invalidate threw away the newer token")
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
		t.Errorf("%d POSTs, want 1", n)
	}
}

func TestTokenSourceNoSecretInStrings(t *testing.T) {
	t.Parallel()
	ts, _, _ := newSource(t, &tokenServer{}, time.Hour)
	ts.Token()
	conf := *ts.Config
	for _, s := range []string{
		fmt.Sprint(ts), fmt.Sprintf("%+v", ts), fmt.Sprintf("%#v", ts), fmt.Sprintf("%v", *ts.Config),
		fmt.Sprintf("%+v", conf), fmt.Sprintf("%#v", &conf), fmt.Sprint(APIKeyTransport{Key: "key-SECRET"}),
		fmt.Sprintf("%+v", &APIKeyTransport{Key: "key-SECRET"}),
	} {
		assertNoSecret(t, "String", s)
	}
}

func TestTokenSourceRedactsEndpointErrors(t *testing.T) {
	t.Parallel()
	echo := `{"error":"invalid_grant","error_description":"refresh token ` + testRefresh + ` of client ` + testClientSecret + ` is revoked"}`
	for _, status := range []int{400, 200} {
		mt := httpmock.NewMockTransport()
		mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(status, echo))
		_, err := testConfig(mt).Refresh(context.Background(), testRefresh)
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) {
			t.Fatalf("status %d: %v, want a RetrieveError", status, err)
		}
		assertNoSecret(t, "error", err.Error())
		assertNoSecret(t, "RetrieveError", re.Error())
		assertNoSecret(t, "RetrieveError.Body", string(re.Body))
		assertNoSecret(t, "RetrieveError.ErrorDescription", re.ErrorDescription)
	}
	// The same without an error code: the body is what RetrieveError
	// prints.
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(502, "<p>upstream said "+testClientSecret+"</p>"))
	_, err := testConfig(mt).Refresh(context.Background(), testRefresh)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != 502 {
		t.Fatalf("%v", err)
	}
	assertNoSecret(t, "RetrieveError", re.Error())
	assertNoSecret(t, "error", err.Error())
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

func TestTokenSourceRejectedWhileFlightFinishes(t *testing.T) {
	t.Parallel()
	srv := &tokenServer{expiresIn: 3600}
	ts, _, clock := newSource(t, srv, time.Hour)
	store := &lockingStore{memStore: &memStore{}, unlocking: make(chan struct{}), gate: make(chan struct{})}
	ts.Store = store
	clock.Advance(2 * time.Hour)

	first := make(chan *oauth2.Token)
	go func() {
		tok, _ := ts.Token()
		first <- tok
	}()
	<-store.unlocking // at-SECRET-1 is published; the flight is still open
	rejected, _ := ts.Token()
	if rejected.AccessToken != "at-SECRET-1" {
		t.Fatalf("got %q", rejected.AccessToken)
	}
	ts.Invalidate(rejected) // the API answered 401 to it
	second := make(chan *oauth2.Token)
	go func() {
		tok, _ := ts.Token()
		second <- tok
	}()
	waitForWaiters(t, ts, 2) // both callers are waiting on the open flight
	close(store.gate)
	go func() { <-store.unlocking }() // the second flight's unlock
	// Neither caller is handed the token rejected meanwhile.
	for _, ch := range []chan *oauth2.Token{first, second} {
		if tok := <-ch; tok == nil || tok.AccessToken != "at-SECRET-2" {
			t.Errorf("got %v; want at-SECRET-2, not the rejected token", tok)
		}
	}
	if n := srv.n.Load(); n != 2 {
		t.Errorf("%d refreshes, want 2", n)
	}
}

func TestTokenSourceRefreshForces(t *testing.T) {
	t.Parallel()
	srv := &tokenServer{expiresIn: 3600, gate: make(chan struct{})}
	ts, mt, _ := newSource(t, srv, time.Hour)
	ts.Token() // loaded
	store := &memStore{}
	ts.Store = store
	const n = 20
	var wg sync.WaitGroup
	got := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := ts.Refresh(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = tok.AccessToken
		}()
	}
	waitForWaiters(t, ts, n) // all in one forced refresh
	close(srv.gate)
	wg.Wait()
	if posts := mt.GetCallCountInfo()[tokenCall]; posts != 1 {
		t.Errorf("%d POSTs for %d concurrent Refresh calls, want 1", posts, n)
	}
	for i, a := range got {
		if a == testAccess || a == "" {
			t.Errorf("caller %d got %q, want a new token", i, a)
		}
	}
	if s := store.stored(); s == nil || s.AccessToken == testAccess {
		t.Errorf("stored %v, want the new token saved", s)
	}
	if tok, _ := ts.Token(); tok.AccessToken == testAccess {
		t.Error("the forced token is not served")
	}
}

func TestTokenSourceWaitCoversBackgroundWork(t *testing.T) {
	t.Parallel()
	srv := &tokenServer{expiresIn: 3600, gate: make(chan struct{})}
	ts, _, clock := newSource(t, srv, 10*time.Minute)
	clock.Advance(6 * time.Minute) // inside the early window
	if tok, _ := ts.Token(); tok.AccessToken != testAccess {
		t.Fatal("want the current token served")
	}
	srv.waitArrived(1)
	waited := make(chan struct{})
	go func() {
		ts.Wait()
		close(waited)
	}()
	waitForWaiters(t, ts, 1) // Wait has joined the background flight
	select {
	case <-waited:
		t.Fatal("Wait returned while the background refresh was under way")
	default:
	}
	close(srv.gate)
	<-waited
	if tok := ts.cache.Load().tok; tok.AccessToken != "at-SECRET-1" {
		t.Errorf("after Wait the served token is %q, want the refreshed one", tok.AccessToken)
	}
}

func TestTokenSourceNoSecretInLogsOrJSON(t *testing.T) {
	t.Parallel()
	ts, _, _ := newSource(t, &tokenServer{}, time.Hour)
	ts.Token()
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	logger.Info("start", "source", ts, "config", ts.Config, "configValue", *ts.Config, "apikey", APIKeyTransport{Key: "key-SECRET"})
	slog.New(slog.NewTextHandler(&buf, nil)).Info("start", "source", ts, "config", ts.Config, "apikey", &APIKeyTransport{Key: "key-SECRET"})
	for _, v := range []any{ts, ts.Config, *ts.Config, APIKeyTransport{Key: "key-SECRET"}, &APIKeyTransport{Key: "key-SECRET"}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%T): %v", v, err)
		}
		buf.Write(b)
	}
	if !strings.Contains(buf.String(), testClientID) {
		t.Errorf("the client ID should still show: %s", buf.String())
	}
	assertNoSecret(t, "log and JSON output", buf.String())
}

func TestTokenEndpointRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
		r := httpmock.NewStringResponse(307, "")
		r.Header.Set("Location", "https://evil.example/steal")
		return r, nil
	})
	mt.RegisterResponder("POST", "https://evil.example/steal", httpmock.NewStringResponder(200, `{"access_token":"at-SECRET-evil"}`))
	_, err := testConfig(mt).Refresh(context.Background(), testRefresh)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != 307 {
		t.Errorf("%v, want the 307 as a RetrieveError", err)
	}
	if n := mt.GetCallCountInfo()["POST https://evil.example/steal"]; n != 0 {
		t.Errorf("the credentials were re-sent to the redirect target %d times", n)
	}
}

func TestTokenSourceStaleStoreFallsBackToNewerGrant(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	var used []string
	mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
		req.ParseForm()
		rt := req.PostForm.Get("refresh_token")
		used = append(used, rt)
		if rt != testRefresh {
			return httpmock.NewStringResponse(400, `{"error":"invalid_grant"}`), nil
		}
		return httpmock.NewStringResponse(200, `{"access_token":"at-SECRET-1","refresh_token":"rt-SECRET-1","expires_in":3600}`), nil
	})
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
		t.Fatalf("%v, %v; want the newer grant in memory refreshed (refresh tokens tried: %q)", tok, err, used)
	}
	if s := store.stored(); s == nil || s.RefreshToken != "rt-SECRET-1" {
		t.Errorf("stored %v, want the new token", s)
	}
}

func TestTokenSourceBackgroundRefreshKeepsContextValues(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	srv := &tokenServer{expiresIn: 3600}
	mt.RegisterResponder("POST", TokenURL, srv.responder())
	clock := newAutoClock()
	ts := &TokenSource{
		// No HTTPClient: the context's is used.
		Config:  &Config{ClientID: testClientID, ClientSecret: testClientSecret},
		Initial: &oauth2.Token{AccessToken: testAccess, RefreshToken: testRefresh, Expiry: clock.Now().Add(2 * time.Minute), ExpiresIn: 3600},
		clk:     &clockRef{clock},
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: mt})
	if _, err := ts.TokenContext(ctx); err != nil {
		t.Fatal(err)
	}
	ts.Wait()
	if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
		t.Errorf("%d POSTs through the context's client, want 1", n)
	}
}

func TestTokenSourceFailFastHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	ts, mt, clock := newSource(t, nil, time.Hour)
	mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(429, "").HeaderSet(http.Header{"Retry-After": {"120"}}))
	clock.Advance(2 * time.Hour)
	if _, err := ts.Token(); err == nil {
		t.Fatal("want an error")
	}
	clock.Advance(30 * time.Second)
	if _, err := ts.Token(); err == nil {
		t.Fatal("want the remembered error")
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
		t.Errorf("%d POSTs within Retry-After, want 1", n)
	}
	clock.Advance(91 * time.Second)
	ts.Token()
	if n := mt.GetCallCountInfo()[tokenCall]; n != 2 {
		t.Errorf("%d POSTs after Retry-After, want 2", n)
	}
}

func TestTokenEndpointErrorBodyKeepsNoToken(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(200, `{"error":"invalid_grant","access_token":"at-SECRET-9","refresh_token":"rt-SECRET-9"}`))
	_, err := testConfig(mt).Refresh(context.Background(), testRefresh)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("%v", err)
	}
	assertNoSecret(t, "RetrieveError.Body", string(re.Body))
}

func TestTokenSourceInitialFirst(t *testing.T) {
	t.Parallel()
	ts, mt, _ := newSource(t, &tokenServer{}, time.Hour)
	store := &memStore{tok: &oauth2.Token{AccessToken: "at-SECRET-stored", Expiry: time.Now().Add(time.Hour)}}
	ts.Store = store
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != testAccess {
		t.Fatalf("%v, %v; want Initial", tok, err)
	}
	if store.loads != 0 || mt.GetTotalCallCount() != 0 {
		t.Errorf("%d Loads and %d POSTs before a refresh was due, want 0", store.loads, mt.GetTotalCallCount())
	}
}

func TestTokenSourceEarlyRefreshOff(t *testing.T) {
	t.Parallel()
	ts, mt, clock := newSource(t, &tokenServer{expiresIn: 3600}, time.Hour)
	ts.EarlyRefresh = -1
	clock.Advance(time.Hour - blockingSkew - time.Second)
	if tok, _ := ts.Token(); tok.AccessToken != testAccess {
		t.Fatal("want the current token")
	}
	ts.Wait()
	if n := mt.GetCallCountInfo()[tokenCall]; n != 0 {
		t.Errorf("%d POSTs with early refresh off, want 0", n)
	}
	clock.Advance(2 * time.Second)
	if tok, _ := ts.Token(); tok.AccessToken != "at-SECRET-1" {
		t.Error("want a new token at expiry")
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

func TestTokenSourceLocker(t *testing.T) {
	t.Parallel()
	t.Run("one lock per refresh, store re-read under it", func(t *testing.T) {
		t.Parallel()
		srv := &tokenServer{expiresIn: 3600}
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
		ts, mt, clock := newSource(t, &tokenServer{expiresIn: 3600}, time.Hour)
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
		ts, mt, clock := newSource(t, &tokenServer{}, time.Hour)
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

// TestTokenSourceWaitCoversALeftFlight: a caller whose context ends
// while it waits leaves; Wait must still wait for the refresh it started.
func TestTokenSourceWaitCoversALeftFlight(t *testing.T) {
	t.Parallel()
	srv := &tokenServer{expiresIn: 3600, gate: make(chan struct{})}
	ts, _, clock := newSource(t, srv, time.Hour)
	ts.Token() // Initial loaded
	clock.Advance(2 * time.Hour)

	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error)
	go func() {
		_, err := ts.TokenContext(ctx)
		left <- err
	}()
	waitForWaiters(t, ts, 1)
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want context.Canceled", err)
	}
	waited := make(chan struct{})
	go func() {
		ts.Wait()
		close(waited)
	}()
	waitForWaiters(t, ts, 2) // Wait has joined the flight the caller left
	select {
	case <-waited:
		t.Error("Wait returned while the refresh the caller left was under way")
	default:
	}
	close(srv.gate)
	<-waited
	if n := srv.n.Load(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
}

// TestTokenSourceFarFutureExpiry: a deadline beyond what a Duration holds
// saturates instead of wrapping to "expired".
func TestTokenSourceFarFutureExpiry(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	ts := &TokenSource{Config: testConfig(mt), Initial: &oauth2.Token{
		AccessToken: testAccess, TokenType: "Bearer",
		Expiry: time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC),
	}} // real clock
	t.Cleanup(ts.Wait)
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != testAccess {
		t.Fatalf("%v, %v; want the valid Initial token", tok, err)
	}
}

// TestTokenSourceEarlyRefreshOffShortToken: with early refresh off, a
// token that lives less than twice blockingSkew is still usable at once.
func TestTokenSourceEarlyRefreshOffShortToken(t *testing.T) {
	t.Parallel()
	ts, mt, clock := newSource(t, &tokenServer{expiresIn: 5}, time.Hour)
	ts.EarlyRefresh = -1
	clock.Advance(2 * time.Hour)
	for range 5 {
		if _, err := ts.Token(); err != nil {
			t.Fatal(err)
		}
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
		t.Errorf("%d POSTs for 5 calls at one instant, want 1", n)
	}
}

// TestTokenSourceRefreshOnFirstUse: when loading the token already took a
// refresh, Refresh does not make a second one.
func TestTokenSourceRefreshOnFirstUse(t *testing.T) {
	t.Parallel()
	ts, mt, clock := newSource(t, &tokenServer{expiresIn: 3600}, time.Hour)
	clock.Advance(2 * time.Hour)
	if _, err := ts.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
		t.Errorf("%d POSTs (and refresh-token rotations) for one Refresh, want 1", n)
	}
}

// TestTokenSourceInitialNewerThanStore: Initial just returned by
// Exchange, the Store still holding the previous grant's token. The
// Store is behind, so its token is not adopted over Initial's.
func TestTokenSourceInitialNewerThanStore(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
		req.ParseForm()
		if req.PostForm.Get("refresh_token") != "rt-SECRET-old" { // the old grant is revoked
			return httpmock.NewStringResponse(200, `{"access_token":"at-SECRET-1","refresh_token":"rt-SECRET-1","expires_in":3600}`), nil
		}
		return httpmock.NewStringResponse(400, `{"error":"invalid_grant"}`), nil
	})
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

// TestTokenEndpointRedactsEscapedSecrets: an endpoint echoing a secret
// form-encoded or JSON-escaped does not leak it through RetrieveError.
func TestTokenEndpointRedactsEscapedSecrets(t *testing.T) {
	t.Parallel()
	const rt = "rt-SECRET/0+x"
	for name, responder := range map[string]httpmock.Responder{
		"502 echoing the form": func(req *http.Request) (*http.Response, error) {
			b, _ := io.ReadAll(req.Body)
			return httpmock.NewStringResponse(502, "<p>bad request: "+string(b)+"</p>"), nil
		},
		"400 JSON-escaped": httpmock.NewStringResponder(400, `{"error":"invalid_grant","error_description":"refresh token rt-SECRET\/0+x is revoked"}`),
	} {
		mt := httpmock.NewMockTransport()
		mt.RegisterResponder("POST", TokenURL, responder)
		_, err := testConfig(mt).Refresh(context.Background(), rt)
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) {
			t.Fatalf("%s: %v", name, err)
		}
		if s := re.Error() + string(re.Body); strings.Contains(s, "rt-SECRET") {
			t.Errorf("%s: RetrieveError leaks the refresh token: %s", name, s)
		}
	}
}

// TestRefreshSameAccessTokenReissued: an endpoint that answers a refresh
// with the same access token (and a rotated refresh token) gets one POST
// per Refresh, not two: Refresh counts generations, not strings.
func TestRefreshSameAccessTokenReissued(t *testing.T) {
	t.Parallel()
	ts, mt, _ := newSource(t, nil, time.Hour)
	n := 0
	mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
		n++
		return httpmock.NewJsonResponse(200, map[string]any{"access_token": testAccess, "refresh_token": fmt.Sprintf("rt-SECRET-%d", n), "expires_in": 3600})
	})
	for i := 1; i <= 3; i++ {
		tok, err := ts.Refresh(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := mt.GetCallCountInfo()[tokenCall]; got != i {
			t.Fatalf("after %d Refresh calls: %d POSTs (rotations)", i, got)
		}
		if tok.RefreshToken != fmt.Sprintf("rt-SECRET-%d", i) {
			t.Errorf("Refresh %d returned refresh token %q", i, tok.RefreshToken)
		}
	}
}

// TestTokenSourceCopiedByValueLeaksNothing: a TokenSource copied by value
// has no redacting methods (they have pointer receivers), so its fields
// are encoded as they are: Initial must not be. (go vet's copylocks check
// reports such copies in code; reflect makes one here.)
func TestTokenSourceCopiedByValueLeaksNothing(t *testing.T) {
	t.Parallel()
	ts, _, _ := newSource(t, &tokenServer{}, time.Hour)
	ts.Token()
	copied := reflect.ValueOf(ts).Elem().Interface() // a TokenSource, not a *TokenSource
	b, err := json.Marshal(copied)
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecret(t, "json.Marshal of a copy", string(b))
	for name, h := range map[string]func(io.Writer) slog.Handler{
		"JSON": func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) },
		"text": func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) },
	} {
		var buf syncBuffer
		slog.New(h(&buf)).Info("source", "ts", copied)
		assertNoSecret(t, "slog "+name+" of a copy", buf.String())
	}
	assertNoSecret(t, "%+v of a copy", fmt.Sprintf("%+v %#v %v", copied, copied, copied))
}
