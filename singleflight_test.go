package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth/internal/fakepandadoc"
	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"
)

func TestTokenSourceConcurrentRefreshIsDeduplicated(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	srv.HoldTokenRequests()
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
	waitPosts(t, srv, 1)
	srv.ReleaseTokenRequests()
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
	srv := newTokenServer(t, 3600)
	srv.Revoke(testRefresh)
	srv.HoldTokenRequests()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, srv.RoundTrip)
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
	waitPosts(t, srv, 1)
	srv.ReleaseTokenRequests()
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
	srv := newTokenServer(t, 3600)
	srv.HoldTokenRequests()
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
	waitPosts(t, srv, 1)
	cancel()
	// The leaver returns while the endpoint still holds the refresh.
	if err := <-leaver; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller got %v, want context.Canceled", err)
	}
	srv.ReleaseTokenRequests()
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
	srv := newTokenServer(t, 3600)
	srv.HoldTokenRequests()
	ts, mt, clock := newSource(t, srv, 10*time.Minute)
	ts.EarlyRefresh = 5 * time.Minute

	clock.Advance(4 * time.Minute) // before the window
	if tok, _ := ts.Token(); tok.AccessToken != testAccess {
		t.Fatalf("got %q", tok.AccessToken)
	}
	if srv.TotalTokenRequests() != 0 {
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
	waitPosts(t, srv, 1)
	for range 100 {
		ts.Token()
	}
	srv.ReleaseTokenRequests()
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
	srv := newTokenServer(t, 0, func(o *fakepandadoc.Options) { o.Now = clock.Now })
	retry := fakepandadoc.Body(429, "", "")
	retry.Header = http.Header{"Retry-After": {"7"}}
	srv.FailNext(retry)
	mt.RegisterResponder("POST", TokenURL, srv.RoundTrip)
	clock.Advance(2 * time.Hour)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	posts := srv.TokenPosts()
	if len(posts) != 2 {
		t.Fatalf("%d token POSTs, want the 429 and its retry", len(posts))
	}
	if gap := posts[1].At.Sub(posts[0].At); gap != 7*time.Second {
		t.Errorf("retried after %v of fake time, want Retry-After's 7s", gap)
	}
}

// TestTokenSourceThrottled: a 429 without Retry-After (PandaDoc sends
// none; its limit is a 60-second sliding window) is not retried within
// the refresh; it is the shared failure for a back-off of seconds that
// grows while 429s go on, and a success resets it.
func TestTokenSourceThrottled(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	throttled := fakepandadoc.Body(429, "application/json", `{"message":"Too many requests"}`)
	srv.FailAlways(throttled)
	ts, mt, clock := newSource(t, srv, time.Hour)
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
	srv.ClearFaults()
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	// After a success the back-off starts again from its least.
	if _, err := ts.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.FailAlways(throttled)
	before := posts()
	ts.Refresh(context.Background())
	clock.Advance(minThrottleBackoff)
	ts.Refresh(context.Background())
	if got := posts() - before; got != 2 {
		t.Errorf("%d POSTs after a success and %v, want 2", got, minThrottleBackoff)
	}
}

func TestTokenSourceRejectedWhileFlightFinishes(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
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
	if n := srv.TotalTokenRequests(); n != 2 {
		t.Errorf("%d refreshes, want 2", n)
	}
}

func TestTokenSourceRefreshForces(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	srv.HoldTokenRequests()
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
	srv.ReleaseTokenRequests()
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
	srv := newTokenServer(t, 3600)
	srv.HoldTokenRequests()
	ts, _, clock := newSource(t, srv, 10*time.Minute)
	clock.Advance(6 * time.Minute) // inside the early window
	if tok, _ := ts.Token(); tok.AccessToken != testAccess {
		t.Fatal("want the current token served")
	}
	waitPosts(t, srv, 1)
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
	srv.ReleaseTokenRequests()
	<-waited
	if tok := ts.cache.Load().tok; tok.AccessToken != "at-SECRET-1" {
		t.Errorf("after Wait the served token is %q, want the refreshed one", tok.AccessToken)
	}
}

func TestTokenSourceBackgroundRefreshKeepsContextValues(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	srv := newTokenServer(t, 3600)
	mt.RegisterResponder("POST", TokenURL, srv.RoundTrip)
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

// TestTokenSourceWaitCoversALeftFlight: a caller whose context ends
// while it waits leaves; Wait must still wait for the refresh it started.
func TestTokenSourceWaitCoversALeftFlight(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	srv.HoldTokenRequests()
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
	srv.ReleaseTokenRequests()
	<-waited
	if n := srv.TotalTokenRequests(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
}

// TestTokenSourceRefreshOnFirstUse: when loading the token already took a
// refresh, Refresh does not make a second one.
func TestTokenSourceRefreshOnFirstUse(t *testing.T) {
	t.Parallel()
	ts, mt, clock := newSource(t, newTokenServer(t, 3600), time.Hour)
	clock.Advance(2 * time.Hour)
	if _, err := ts.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
		t.Errorf("%d POSTs (and refresh-token rotations) for one Refresh, want 1", n)
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
