package pandadocauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth/internal/fakepandadoc"
)

// memKeyedStore is an in-memory KeyedStore that counts its calls.
type memKeyedStore struct {
	mu       sync.Mutex // guards the fields below
	m        map[string]*oauth2.Token
	loads    map[string]int
	saves    map[string]int
	saveErrs map[string]int // the next n Saves of a key fail
}

func newMemKeyedStore() *memKeyedStore {
	return &memKeyedStore{m: map[string]*oauth2.Token{}, loads: map[string]int{}, saves: map[string]int{}, saveErrs: map[string]int{}}
}

// setSaveErrs makes the next n Saves of key fail.
func (s *memKeyedStore) setSaveErrs(key string, n int) {
	s.mu.Lock()
	s.saveErrs[key] = n
	s.mu.Unlock()
}

func (s *memKeyedStore) Load(ctx context.Context, key string) (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads[key]++
	t := s.m[key]
	if t == nil {
		return nil, nil
	}
	c := *t
	return &c, nil
}

func (s *memKeyedStore) Save(ctx context.Context, key string, t *oauth2.Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saves[key]++
	if s.saveErrs[key] > 0 {
		s.saveErrs[key]--
		return errors.New("disk full")
	}
	c := *t
	s.m[key] = &c
	return nil
}

func (s *memKeyedStore) count(m map[string]int, key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return m[key]
}

// newGrantsServer returns the token endpoint of the Grants tests, as
// newTokenServer but for the grants keys, each with the refresh token
// "rt-SECRET-<key>-0" and then tokens "at-SECRET-<key>-<n>" with
// "rt-SECRET-<key>-<n>", on now (nil: time.Now).
func newGrantsServer(t *testing.T, now func() time.Time, keys ...string) *fakepandadoc.Server {
	t.Helper()
	srv := fakepandadoc.New(fakepandadoc.Options{
		ClientID:     testClientID,
		ClientSecret: testClientSecret,
		ExpiresIn:    3600,
		Rotation:     true,
		TokenName:    testTokenName,
		Now:          now,
	})
	t.Cleanup(srv.Close)
	for _, key := range keys {
		srv.AddGrant(key, "rt-SECRET-"+key+"-0", 0)
	}
	return srv
}

// grantPosts returns how many token POSTs srv received with a refresh
// token of key's ("rt-SECRET-<key>-<n>"), working or not.
func grantPosts(srv *fakepandadoc.Server, key string) int {
	n := 0
	for _, p := range srv.TokenPosts() {
		num, ok := strings.CutPrefix(p.Form.Get("refresh_token"), "rt-SECRET-"+key+"-")
		if _, err := strconv.Atoi(num); ok && err == nil {
			n++
		}
	}
	return n
}

// revokeGrant revokes key's grant on srv: its live refresh token stops
// working.
func revokeGrant(t *testing.T, srv *fakepandadoc.Server, key string) {
	t.Helper()
	live, ok := srv.LiveRefreshToken("rt-SECRET-" + key + "-0")
	if !ok {
		t.Fatalf("%s: no live grant to revoke", key)
	}
	srv.Revoke(live)
}

// newGrants returns a Grants on a fake clock with n grants stored, each
// with a token that expires in expiresIn, their token endpoint
// (newGrantsServer), and an API that accepts every access token.
func newGrants(t *testing.T, n int, expiresIn time.Duration) (*Grants, *memKeyedStore, *fakepandadoc.Server, *httpmock.MockTransport, *fakeClock) {
	t.Helper()
	clock := newAutoClock()
	store := newMemKeyedStore()
	var keys []string
	for i := range n {
		key := fmt.Sprintf("ws%d", i)
		keys = append(keys, key)
		store.m[key] = &oauth2.Token{
			AccessToken:  fmt.Sprintf("at-SECRET-%s-0", key),
			RefreshToken: fmt.Sprintf("rt-SECRET-%s-0", key),
			Expiry:       clock.Now().Add(expiresIn),
			ExpiresIn:    int64(expiresIn / time.Second),
		}
	}
	ep := newGrantsServer(t, clock.Now, keys...)
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, ep.RoundTrip)
	mt.RegisterResponder("GET", apiURL, httpmock.NewStringResponder(200, `{}`))
	g := &Grants{Config: testConfig(mt), Store: store, clk: &clockRef{clock}}
	t.Cleanup(g.Wait)
	return g, store, ep, mt, clock
}

func grantGet(t *testing.T, rt http.RoundTripper, key string) (*http.Response, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(WithGrant(context.Background(), key), "GET", apiURL, nil)
	resp, err := rt.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

// TestGrantsSelection: a request carries its grant in its context; one
// without fails before anything is sent; a grant is loaded from the
// Store on first use, once.
func TestGrantsSelection(t *testing.T) {
	t.Parallel()
	g, store, _, mt, _ := newGrants(t, 2, time.Hour)
	var auths []string
	var mu sync.Mutex
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		mu.Lock()
		auths = append(auths, req.Header.Get("Authorization"))
		mu.Unlock()
		return mt.RoundTrip(req)
	})
	rt := g.Transport(base)
	body := &closeCounter{Reader: strings.NewReader("x")}
	req, _ := http.NewRequest("POST", apiURL, body)
	if _, err := rt.RoundTrip(req); !errors.Is(err, ErrNoGrant) {
		t.Errorf("%v, want ErrNoGrant", err)
	}
	if n := body.closed.Load(); n != 1 {
		t.Errorf("body closed %d times", n)
	}
	if len(auths) != 0 {
		t.Error("a request without a grant was sent")
	}
	if n := store.count(store.loads, "ws0"); n != 0 {
		t.Errorf("%d loads before first use", n)
	}
	for range 3 {
		for _, key := range []string{"ws0", "ws1"} {
			if resp, err := grantGet(t, rt, key); err != nil || resp.StatusCode != 200 {
				t.Fatalf("%s: %v, %v", key, resp, err)
			}
		}
	}
	for _, key := range []string{"ws0", "ws1"} {
		if n := store.count(store.loads, key); n != 1 {
			t.Errorf("%s: %d loads, want 1", key, n)
		}
	}
	if auths[0] != "Bearer at-SECRET-ws0-0" || auths[1] != "Bearer at-SECRET-ws1-0" {
		t.Errorf("sent %v", auths[:2])
	}
	if g.Source("ws0") != g.Source("ws0") || g.Source("ws0") == g.Source("ws1") {
		t.Error("Source is not one per key")
	}
}

// TestGrantsOneRefreshPerGrant: many concurrent requests on many expired
// grants make exactly one refresh per grant, each saved under its key.
func TestGrantsOneRefreshPerGrant(t *testing.T) {
	t.Parallel()
	const grants, perGrant = 8, 25
	g, store, ep, _, clock := newGrants(t, grants, time.Hour)
	rt := g.Transport(nil)
	rt.(*grantsTransport).base = g.Config.HTTPClient.Transport.(*httpmock.MockTransport)
	clock.Advance(2 * time.Hour)
	var wg sync.WaitGroup
	for i := range grants {
		for range perGrant {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if resp, err := grantGet(t, rt, fmt.Sprintf("ws%d", i)); err != nil || resp.StatusCode != 200 {
					t.Errorf("%v, %v", resp, err)
				}
			}()
		}
	}
	wg.Wait()
	for i := range grants {
		key := fmt.Sprintf("ws%d", i)
		if n := grantPosts(ep, key); n != 1 {
			t.Errorf("%s: %d refreshes, want 1", key, n)
		}
		if s := store.m[key]; s.RefreshToken != "rt-SECRET-"+key+"-1" {
			t.Errorf("%s: stored %q", key, s.RefreshToken)
		}
	}
}

// TestGrantsRefreshesDoNotWaitOnEachOther: a grant whose refresh hangs
// does not hold up another grant's.
func TestGrantsRefreshesDoNotWaitOnEachOther(t *testing.T) {
	t.Parallel()
	g, _, ep, mt, clock := newGrants(t, 2, time.Hour)
	hold := make(chan struct{})
	arrived := make(chan struct{})
	inner := ep.RoundTrip
	mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
		req.ParseForm()
		if strings.Contains(req.PostForm.Get("refresh_token"), "ws0") {
			close(arrived)
			<-hold
		}
		return inner(req)
	})
	clock.Advance(2 * time.Hour)
	slow := make(chan error)
	go func() {
		_, err := g.Source("ws0").Token()
		slow <- err
	}()
	<-arrived
	if tok, err := g.Source("ws1").Token(); err != nil || tok.AccessToken != "at-SECRET-ws1-1" {
		t.Errorf("ws1 while ws0 refreshes: %v, %v", tok, err)
	}
	close(hold)
	if err := <-slow; err != nil {
		t.Error(err)
	}
}

// TestGrantsRevoked: a revoked grant fails with an error wrapping the
// RetrieveError, is reported once (Logger and OnRevoked) however often
// it fails, and other grants are not affected.
func TestGrantsRevoked(t *testing.T) {
	t.Parallel()
	g, _, ep, _, clock := newGrants(t, 2, time.Hour)
	logger, logs := newTestLogger()
	g.Logger = logger
	var reports atomic.Int32
	g.OnRevoked = func(key string, err error) {
		var re *oauth2.RetrieveError
		if key != "ws0" || !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Errorf("OnRevoked(%q, %v)", key, err)
		}
		reports.Add(1)
	}
	revokeGrant(t, ep, "ws0")
	clock.Advance(2 * time.Hour)
	for range 3 {
		_, err := g.Source("ws0").Token()
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Fatalf("%v, want a RetrieveError with invalid_grant", err)
		}
		if _, err := g.Source("ws1").Token(); err != nil {
			t.Fatalf("ws1: %v", err)
		}
		clock.Advance(permanentFailureBackoff) // the next call asks again
	}
	if n := grantPosts(ep, "ws0"); n != 3 {
		t.Errorf("%d POSTs for the revoked grant, want 3 (one per failure back-off)", n)
	}
	g.Wait() // OnRevoked runs on a goroutine of its own
	if n := reports.Load(); n != 1 {
		t.Errorf("OnRevoked called %d times, want 1", n)
	}
	if n := strings.Count(logs.String(), "grant revoked"); n != 1 {
		t.Errorf("%d log lines of the revocation, want 1: %s", n, logs)
	}
	if !strings.Contains(logs.String(), "grant=ws0") {
		t.Errorf("the log does not name the grant: %s", logs)
	}
	assertNoSecret(t, "log", logs.String())
}

// TestGrantsEviction: past MaxGrants, grants not used recently are
// evicted and rebuilt from the Store on next use; an unsaved one is
// never evicted.
func TestGrantsEviction(t *testing.T) {
	t.Parallel()
	g, store, _, mt, clock := newGrants(t, 6, time.Hour)
	clock.Manual() // the failing Save's retry timer must not move time
	g.MaxGrants = 3
	rt := g.Transport(mt)
	store.saveErrs["ws0"] = 1 << 30                   // ws0's refreshed token stays unsaved
	t.Cleanup(func() { store.setSaveErrs("ws0", 0) }) // before g.Wait: it saves then
	clock.Advance(2 * time.Hour)
	for i := range 6 {
		if resp, err := grantGet(t, rt, fmt.Sprintf("ws%d", i)); err != nil || resp.StatusCode != 200 {
			t.Fatal(resp, err)
		}
	}
	g.mu.RLock()
	n := len(g.m)
	_, kept := g.m["ws0"]
	g.mu.RUnlock()
	if n > 3 {
		t.Errorf("%d grants in memory, want at most 3", n)
	}
	if !kept {
		t.Error("the unsaved grant was evicted")
	}
	// ws1 was evicted: its next use loads it from the Store again, with
	// the token it saved.
	loads := store.count(store.loads, "ws1")
	var sent string
	rt = g.Transport(roundTripFunc(func(req *http.Request) (*http.Response, error) {
		sent = req.Header.Get("Authorization")
		return mt.RoundTrip(req)
	}))
	if resp, err := grantGet(t, rt, "ws1"); err != nil || resp.StatusCode != 200 || sent != "Bearer at-SECRET-ws1-1" {
		t.Fatalf("%v, %v, sent %q", resp, err, sent)
	}
	if got := store.count(store.loads, "ws1"); got != loads+1 {
		t.Errorf("%d loads, want %d: an evicted grant is rebuilt from the Store", got, loads+1)
	}
}

// TestGrantsRefreshCap: grants expiring together refresh at most
// MaxRefreshes at a time, one POST each.
func TestGrantsRefreshCap(t *testing.T) {
	t.Parallel()
	const grants, limit = 12, 3
	g, _, ep, _, clock := newGrants(t, grants, time.Hour)
	g.MaxRefreshes = limit
	ep.HoldTokenRequests()
	clock.Advance(2 * time.Hour)
	var wg sync.WaitGroup
	for i := range grants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := g.Source(fmt.Sprintf("ws%d", i)).Token(); err != nil {
				t.Error(err)
			}
		}()
	}
	// Let the POSTs through one at a time, each after the next slot
	// filled up: never more than the cap in flight.
	ctx := context.Background()
	waitPosts(t, ep, limit)
	for i := range grants - limit {
		if err := ep.PassTokenRequest(ctx); err != nil {
			t.Fatal(err)
		}
		waitPosts(t, ep, limit+i+1)
	}
	ep.ReleaseTokenRequests()
	wg.Wait()
	if n := ep.MaxConcurrentTokenRequests(); n != limit {
		t.Errorf("%d POSTs at once, want the cap %d", n, limit)
	}
	if total := ep.TotalTokenRequests(); total != grants {
		t.Errorf("%d POSTs, want %d", total, grants)
	}
}

// TestIdleGrantsHoldNothing: grants and sources at rest hold no
// goroutine and no timer, after first use, an early refresh, a refresh
// on expiry and a 401.
func TestIdleGrantsHoldNothing(t *testing.T) {
	// Not parallel: it looks at the process's goroutines. VerifyNone
	// waits, a bounded while, for goroutines that are ending.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g, _, _, mt, clock := newGrants(t, 50, 10*time.Minute)
	rt := g.Transport(mt)
	for i := range 50 {
		if resp, err := grantGet(t, rt, fmt.Sprintf("ws%d", i)); err != nil || resp.StatusCode != 200 {
			t.Fatal(resp, err)
		}
	}
	clock.Advance(6 * time.Minute) // early window: background refreshes
	for i := range 50 {
		grantGet(t, rt, fmt.Sprintf("ws%d", i))
	}
	g.Wait()
	clock.Advance(2 * time.Hour) // expired: refreshes on the request path
	for i := range 50 {
		grantGet(t, rt, fmt.Sprintf("ws%d", i))
	}
	g.Wait()
	clock.mu.Lock()
	pending := len(clock.timers)
	clock.mu.Unlock()
	if pending != 0 {
		t.Errorf("%d timers at rest", pending)
	}
}

// TestGrantsRevokedOnceAcrossEviction: a revoked grant that is evicted
// and rebuilt is not reported again.
func TestGrantsRevokedOnceAcrossEviction(t *testing.T) {
	t.Parallel()
	g, _, ep, mt, clock := newGrants(t, 3, time.Hour)
	g.MaxGrants = 1
	rt := g.Transport(mt)
	var reports atomic.Int32
	g.OnRevoked = func(key string, err error) { reports.Add(1) }
	revokeGrant(t, ep, "ws0")
	clock.Advance(2 * time.Hour)
	for range 3 {
		if _, err := grantGet(t, rt, "ws0"); err == nil {
			t.Fatal("want invalid_grant")
		}
		grantGet(t, rt, "ws1") // these push ws0 out
		grantGet(t, rt, "ws2")
		clock.Advance(permanentFailureBackoff)
	}
	g.Wait()
	if n := reports.Load(); n != 1 {
		t.Errorf("OnRevoked called %d times for one revocation, want 1", n)
	}
}

// TestGrantsOnRevokedMayUseTheGrant: OnRevoked runs after the failed
// refresh has released its callers, so it may wait for the grant.
func TestGrantsOnRevokedMayUseTheGrant(t *testing.T) {
	t.Parallel()
	g, _, ep, _, clock := newGrants(t, 1, time.Hour)
	revokeGrant(t, ep, "ws0")
	called := make(chan error, 1)
	g.OnRevoked = func(key string, _ error) {
		g.Source(key).Wait()
		_, err := g.Source(key).Token()
		called <- err
	}
	clock.Advance(2 * time.Hour)
	if _, err := g.Source("ws0").Token(); err == nil {
		t.Fatal("want invalid_grant")
	}
	g.Wait() // waits for OnRevoked too
	select {
	case err := <-called:
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) {
			t.Errorf("inside OnRevoked: %v, want the remembered invalid_grant", err)
		}
	default:
		t.Error("Wait returned before OnRevoked did")
	}
}

// TestGrantsNoEvictionInUse: a grant whose request is under way is not
// evicted, so a 401 on it is recovered by the grant in memory, with one
// refresh.
func TestGrantsNoEvictionInUse(t *testing.T) {
	t.Parallel()
	g, _, ep, mt, _ := newGrants(t, 2, time.Hour)
	g.MaxGrants = 1
	arrived := make(chan struct{})
	hold := make(chan struct{})
	var once sync.Once
	mt.RegisterResponder("GET", apiURL, func(req *http.Request) (*http.Response, error) {
		if req.Header.Get("Authorization") == "Bearer at-SECRET-ws0-0" {
			once.Do(func() {
				close(arrived)
				<-hold
			})
			return httpmock.NewStringResponse(401, `{}`), nil
		}
		return httpmock.NewStringResponse(200, `{}`), nil
	})
	rt := g.Transport(mt)
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := grantGet(t, rt, "ws0")
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	<-arrived
	ws0 := g.Source("ws0")
	if resp, err := grantGet(t, rt, "ws1"); err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	if g.Source("ws0") != ws0 {
		t.Error("ws0 was evicted while its request was under way")
	}
	close(hold)
	if resp := <-done; resp == nil || resp.StatusCode != 200 {
		t.Errorf("the 401 was not recovered: %v", resp)
	}
	if n := grantPosts(ep, "ws0"); n != 1 {
		t.Errorf("%d refreshes of ws0, want 1", n)
	}
}

// TestGrantsRevokedOnceAcrossEvictionWithLiveToken: a revoked grant
// whose stored access token has not expired is loaded again after each
// eviction (the load succeeds: the token looks valid), rejected by the
// API, refused by the endpoint; it is reported once. A new token in the
// Store (the customer connected again) ends the report: a revocation of
// that one is reported again.
func TestGrantsRevokedOnceAcrossEvictionWithLiveToken(t *testing.T) {
	t.Parallel()
	g, store, ep, _, clock := newGrants(t, 3, time.Hour)
	g.MaxGrants = 1
	api := httpmock.NewMockTransport()
	api.RegisterResponder("GET", apiURL, func(req *http.Request) (*http.Response, error) {
		if strings.HasPrefix(req.Header.Get("Authorization"), "Bearer at-SECRET-ws0-") {
			return httpmock.NewStringResponse(401, `{"type":"authentication_error"}`), nil
		}
		return httpmock.NewStringResponse(200, `{}`), nil
	})
	rt := g.Transport(api)
	var reports atomic.Int32
	g.OnRevoked = func(key string, err error) {
		if key != "ws0" {
			t.Errorf("OnRevoked(%q)", key)
		}
		reports.Add(1)
	}
	revokeGrant(t, ep, "ws0")
	revoke := func(rounds int) {
		t.Helper()
		for range rounds {
			_, err := grantGet(t, rt, "ws0")
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
				t.Fatalf("%v, want the refresh's invalid_grant", err)
			}
			grantGet(t, rt, "ws1") // these push ws0 out
			grantGet(t, rt, "ws2")
			g.mu.RLock()
			_, kept := g.m["ws0"]
			g.mu.RUnlock()
			if kept {
				t.Fatal("ws0 was not evicted")
			}
			clock.Advance(permanentFailureBackoff)
		}
	}
	revoke(3)
	g.Wait()
	if n := reports.Load(); n != 1 {
		t.Errorf("OnRevoked called %d times for one revocation, want 1", n)
	}
	if n := grantPosts(ep, "ws0"); n != 3 {
		t.Errorf("%d refreshes of ws0, want 3 (one per rebuild)", n)
	}

	// The customer connects again; the new grant is revoked too.
	store.Save(context.Background(), "ws0", &oauth2.Token{
		AccessToken:  "at-SECRET-ws0-100",
		RefreshToken: "rt-SECRET-ws0-100",
		Expiry:       clock.Now().Add(time.Hour),
		ExpiresIn:    3600,
	})
	ep.AddGrant("ws0", "rt-SECRET-ws0-100", 100)
	ep.Revoke("rt-SECRET-ws0-100")
	revoke(2)
	g.Wait()
	if n := reports.Load(); n != 2 {
		t.Errorf("OnRevoked called %d times after a second grant was revoked, want 2", n)
	}
}

// waitBlockedIn waits until a goroutine other than the caller's is
// blocked in a function whose name ends with fn (polling the goroutine
// stacks: the race detector sees no synchronisation in that), or fails
// after a minute.
func waitBlockedIn(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			header, _, _ := strings.Cut(g, "\n")
			if strings.Contains(g, fn+"(") && !strings.Contains(header, "[running]") && !strings.Contains(header, "[runnable]") {
				return
			}
		}
		runtime.Gosched()
	}
	t.Fatalf("no goroutine blocked in %s", fn)
}

// TestGrantsWaitBesideTraffic: Wait may run while requests go on and
// revocations start OnRevoked calls; it waits for the calls under way,
// and the race detector finds nothing (a sync.WaitGroup whose Add from
// zero runs beside its Wait is a misuse it reports).
func TestGrantsWaitBesideTraffic(t *testing.T) {
	t.Parallel()
	g, _, ep, _, clock := newGrants(t, 2, time.Hour)
	release := make(chan struct{})
	var ws0Done atomic.Bool
	reported := make(chan string, 2)
	g.OnRevoked = func(key string, err error) {
		if key == "ws0" {
			<-release
			ws0Done.Store(true)
		}
		reported <- key
	}
	revokeGrant(t, ep, "ws0")
	revokeGrant(t, ep, "ws1")
	clock.Advance(2 * time.Hour)
	if _, err := g.Source("ws0").Token(); err == nil {
		t.Fatal("want invalid_grant")
	}
	waited := make(chan bool)
	go func() {
		g.Wait() // beside the traffic below
		waited <- ws0Done.Load()
	}()
	waitBlockedIn(t, "pandadocauth.(*Grants).Wait")
	close(release)
	if key := <-reported; key != "ws0" {
		t.Fatalf("reported %q", key)
	}
	// Another revocation while that Wait may still be returning.
	if _, err := g.Source("ws1").Token(); err == nil {
		t.Fatal("want invalid_grant")
	}
	if !<-waited {
		t.Error("Wait returned before the OnRevoked call under way did")
	}
	g.Wait()
	select {
	case key := <-reported:
		if key != "ws1" {
			t.Errorf("reported %q", key)
		}
	default:
		t.Error("Wait returned before OnRevoked(ws1) did")
	}
}

// TestGrantsSourceInUse: a TokenSource that Source handed out is never
// evicted, so the grant is never rebuilt beside it: Source keeps
// returning it, and one POST refreshes the grant. After Forget it is
// done: it neither refreshes nor saves, and Source builds the grant
// afresh.
func TestGrantsSourceInUse(t *testing.T) {
	t.Parallel()
	g, store, ep, mt, clock := newGrants(t, 3, time.Hour)
	g.MaxGrants = 1
	rt := g.Transport(mt)
	held := g.Source("ws0")
	if _, err := held.Token(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		for _, key := range []string{"ws1", "ws2"} {
			if resp, err := grantGet(t, rt, key); err != nil || resp.StatusCode != 200 {
				t.Fatal(resp, err)
			}
		}
	}
	if g.Source("ws0") != held {
		t.Fatal("the held source's grant was evicted and rebuilt")
	}
	clock.Advance(2 * time.Hour)
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := grantGet(t, rt, "ws0"); err != nil || resp.StatusCode != 200 {
				t.Error(resp, err)
			}
		}()
	}
	tok, err := held.Token()
	wg.Wait()
	if err != nil || tok.AccessToken != "at-SECRET-ws0-1" {
		t.Fatalf("%v, %v", tok, err)
	}
	if n := grantPosts(ep, "ws0"); n != 1 {
		t.Errorf("%d refreshes of ws0 through the held source and requests, want 1", n)
	}

	g.Forget("ws0")
	reconnected := &oauth2.Token{AccessToken: "at-SECRET-ws0-50", RefreshToken: "rt-SECRET-ws0-50", Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600}
	store.Save(context.Background(), "ws0", reconnected)
	if _, err := held.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "forgotten") {
		t.Errorf("a forgotten source's Refresh: %v, want an error saying it was forgotten", err)
	}
	if n := grantPosts(ep, "ws0"); n != 1 {
		t.Errorf("%d refreshes of ws0, want 1: a forgotten source asks the endpoint nothing", n)
	}
	if s := store.m["ws0"]; s.RefreshToken != reconnected.RefreshToken {
		t.Errorf("the Store holds %q, want the reconnected token", s.RefreshToken)
	}
	fresh := g.Source("ws0")
	if fresh == held {
		t.Fatal("Source returned the forgotten source")
	}
	if tok, err := fresh.Token(); err != nil || tok.AccessToken != reconnected.AccessToken {
		t.Errorf("%v, %v; want the reconnected token", tok, err)
	}
}

// TestGrantsForget: after a revocation, the app saves the customer's
// new token and forgets the grant: the next request uses the new token
// at once, though the failure would be remembered for a while, and a
// later revocation is reported again. A refresh under way when Forget is
// called ends, its token unsaved (the Store keeps what the app saved),
// and Wait waits for it.
func TestGrantsForget(t *testing.T) {
	t.Parallel()
	g, store, ep, mt, clock := newGrants(t, 2, time.Hour)
	var sent atomic.Value
	rt := g.Transport(roundTripFunc(func(req *http.Request) (*http.Response, error) {
		sent.Store(req.Header.Get("Authorization"))
		return mt.RoundTrip(req)
	}))
	var reports atomic.Int32
	g.OnRevoked = func(string, error) { reports.Add(1) }
	revokeGrant(t, ep, "ws0")
	clock.Advance(2 * time.Hour)
	if _, err := grantGet(t, rt, "ws0"); err == nil {
		t.Fatal("want invalid_grant")
	}
	g.Wait()
	ep.AddGrant("ws0", "rt-SECRET-ws0-7", 7) // the customer connected again
	store.Save(context.Background(), "ws0", &oauth2.Token{AccessToken: "at-SECRET-ws0-7", RefreshToken: "rt-SECRET-ws0-7", Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600})
	g.Forget("ws0")
	g.Forget("never-seen") // nothing to forget
	if resp, err := grantGet(t, rt, "ws0"); err != nil || resp.StatusCode != 200 || sent.Load() != "Bearer at-SECRET-ws0-7" {
		t.Fatalf("after Forget: %v, %v, sent %v", resp, err, sent.Load())
	}
	ep.Revoke("rt-SECRET-ws0-7")
	clock.Advance(2 * time.Hour)
	grantGet(t, rt, "ws0")
	g.Wait()
	if n := reports.Load(); n != 2 {
		t.Errorf("OnRevoked called %d times, want 2: Forget forgets the report too", n)
	}

	// Forget during a refresh of ws1.
	ep.HoldTokenRequests()
	posts := ep.TotalTokenRequests()
	done := make(chan error, 1)
	go func() {
		_, err := grantGet(t, rt, "ws1")
		done <- err
	}()
	waitPosts(t, ep, posts+1)
	g.Forget("ws1")
	kept := &oauth2.Token{AccessToken: "at-SECRET-ws1-9", RefreshToken: "rt-SECRET-ws1-9", Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600}
	store.Save(context.Background(), "ws1", kept)
	g.mu.RLock()
	forgotten := append([]*grant(nil), g.leaving...)
	g.mu.RUnlock()
	if len(forgotten) != 1 || forgotten[0].key != "ws1" {
		t.Fatalf("kept for Wait: %v, want the forgotten ws1", forgotten)
	}
	ep.ReleaseTokenRequests()
	g.Wait()
	if forgotten[0].busy() {
		t.Error("Wait returned before the forgotten grant's refresh ended")
	}
	if err := <-done; err != nil {
		t.Errorf("the request whose refresh was under way: %v", err)
	}
	if s := store.m["ws1"]; s.RefreshToken != kept.RefreshToken {
		t.Errorf("the Store holds %q, want what the app saved after Forget", s.RefreshToken)
	}
	g.mu.RLock()
	leaving := len(g.leaving)
	g.mu.RUnlock()
	g.Forget("ws0") // lets go of forgotten grants whose work has ended
	g.mu.RLock()
	if len(g.leaving) != 0 {
		t.Errorf("%d forgotten grants still kept (%d before)", len(g.leaving), leaving)
	}
	g.mu.RUnlock()
}

// nilKeyedStore is a KeyedStore without tokens that keeps nothing.
type nilKeyedStore struct{ loads atomic.Int64 }

func (s *nilKeyedStore) Load(context.Context, string) (*oauth2.Token, error) {
	s.loads.Add(1)
	return nil, nil
}

func (s *nilKeyedStore) Save(context.Context, string, *oauth2.Token) error { return nil }

// TestGrantsUnknownKeysKeepNoState: requests for 20,000 made-up keys
// (say, a workspace ID from a URL) fail with an error that names the key
// and the fix, and leave no grant and no memory behind.
func TestGrantsUnknownKeysKeepNoState(t *testing.T) {
	// Not parallel: it measures the heap.
	for _, tc := range []struct{ maxGrants, keys int }{{0, 20000}, {100, 2000}} {
		maxGrants, keys := tc.maxGrants, tc.keys
		t.Run(fmt.Sprintf("MaxGrants=%d", maxGrants), func(t *testing.T) {
			store := &nilKeyedStore{}
			mt := httpmock.NewMockTransport()
			g := &Grants{Config: testConfig(mt), Store: store, MaxGrants: maxGrants, clk: &clockRef{newAutoClock()}}
			rt := g.Transport(mt)
			if _, err := grantGet(t, rt, "warm-up"); err == nil {
				t.Fatal("want an error")
			}
			known := joins.sources()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := range keys {
				key := fmt.Sprintf("made-up-%d", i)
				_, err := grantGet(t, rt, key)
				if i%5000 == 0 {
					if !errors.Is(err, ErrNoToken) {
						t.Fatalf("%v, want ErrNoToken", err)
					}
					msg := err.Error()
					if !strings.Contains(msg, strconv.Quote(key)) || !strings.Contains(msg, "Grants.Store") || strings.Contains(msg, "TokenSource.Initial") {
						t.Errorf("%q: want the key and the fix for a Grants user", msg)
					}
				}
			}
			joins.forgetAllBut(known) // the test hook's own memory of sources
			runtime.GC()
			runtime.ReadMemStats(&after)
			g.mu.RLock()
			inMemory, ring, revoked := len(g.m), len(g.ring), len(g.revoked)
			g.mu.RUnlock()
			if inMemory != 0 || ring != 0 || revoked != 0 {
				t.Errorf("%d grants, %d in the ring, %d revoked kept for keys without a token", inMemory, ring, revoked)
			}
			retained := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("heap retained after %d unknown keys: %d B", keys, retained)
			if retained > 1<<20 {
				t.Errorf("%d B retained by %d keys without a token, want under 1 MiB", retained, keys)
			}
			if n := store.loads.Load(); n != int64(keys)+1 {
				t.Errorf("%d Store loads, want %d", n, keys+1)
			}
			if n := mt.GetTotalCallCount(); n != 0 {
				t.Errorf("%d requests sent", n)
			}
			runtime.KeepAlive(g)
		})
	}
}

// TestGrantsTokenlessSourceTakesItsPlaceAgain: a source that Source
// handed out for a key without a token is dropped from memory; once a
// token is stored, it takes its place again if no other source serves
// the key, and refuses to refresh if another does.
func TestGrantsTokenlessSourceTakesItsPlaceAgain(t *testing.T) {
	t.Parallel()
	g, store, ep, mt, clock := newGrants(t, 0, time.Hour)
	early := g.Source("new")
	if _, err := early.Token(); !errors.Is(err, ErrNoToken) {
		t.Fatalf("%v, want ErrNoToken", err)
	}
	g.mu.RLock()
	n := len(g.m)
	g.mu.RUnlock()
	if n != 0 {
		t.Errorf("%d grants kept for a key without a token", n)
	}
	store.Save(context.Background(), "new", &oauth2.Token{AccessToken: "at-SECRET-new-0", RefreshToken: "rt-SECRET-new-0", Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600})
	clock.Advance(permanentFailureBackoff) // the remembered failure
	if tok, err := early.Token(); err != nil || tok.AccessToken != "at-SECRET-new-0" {
		t.Fatalf("%v, %v", tok, err)
	}
	if g.Source("new") != early {
		t.Error("the source did not take its place again")
	}

	other := g.Source("other")
	if _, err := other.Token(); !errors.Is(err, ErrNoToken) {
		t.Fatalf("%v, want ErrNoToken", err)
	}
	store.Save(context.Background(), "other", &oauth2.Token{AccessToken: "at-SECRET-other-0", RefreshToken: "rt-SECRET-other-0", Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600})
	if resp, err := grantGet(t, g.Transport(mt), "other"); err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	clock.Advance(permanentFailureBackoff)
	if _, err := other.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "another TokenSource") {
		t.Errorf("%v, want an error saying another source serves the grant", err)
	}
	if n := grantPosts(ep, "other"); n != 0 {
		t.Errorf("%d refreshes by the replaced source, want 0", n)
	}
}

// TestGrantsEmptyCredentials: a Grants whose Config lacks the client ID
// or secret refreshes nothing: the error names the field.
func TestGrantsEmptyCredentials(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id, secret, want string
	}{
		{"", testClientSecret, "Config.ClientID is empty"},
		{testClientID, "", "Config.ClientSecret is empty"},
		{"", "", "Config.ClientID and Config.ClientSecret are empty"},
	} {
		g, _, ep, mt, clock := newGrants(t, 1, time.Hour)
		g.Config.ClientID, g.Config.ClientSecret = tc.id, tc.secret
		clock.Advance(2 * time.Hour)
		_, err := grantGet(t, g.Transport(mt), "ws0")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v, want %q", err, tc.want)
		} else {
			assertNoSecret(t, "error", err.Error())
		}
		if n := grantPosts(ep, "ws0"); n != 0 {
			t.Errorf("%d token POSTs without credentials", n)
		}
	}
}

// leakyKeyedStore is a KeyedStore that holds tokens in exported fields,
// as an app's own store might: printing it prints them.
type leakyKeyedStore struct {
	Tokens map[string]oauth2.Token
}

func (s leakyKeyedStore) Load(_ context.Context, key string) (*oauth2.Token, error) {
	t, ok := s.Tokens[key]
	if !ok {
		return nil, nil
	}
	return &t, nil
}

func (s leakyKeyedStore) Save(context.Context, string, *oauth2.Token) error { return nil }

// TestGrantsPrinting: a Grants printed with fmt, log/slog or
// encoding/json shows a summary, not its internals, and no secret.
func TestGrantsPrinting(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("GET", apiURL, httpmock.NewStringResponder(200, `{}`))
	store := leakyKeyedStore{Tokens: map[string]oauth2.Token{
		"ws0": {AccessToken: "at-SECRET-ws0-0", RefreshToken: "rt-SECRET-ws0-0", Expiry: time.Now().Add(time.Hour)},
	}}
	g := &Grants{Config: testConfig(mt), Store: store, OnRevoked: func(string, error) {}}
	defer g.Wait()
	if resp, err := grantGet(t, g.Transport(mt), "ws0"); err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	want := `pandadocauth.Grants{ClientID: "client-id-1", grants in memory: 1, revoked: 0, MaxGrants: no bound, MaxRefreshes: 16}`
	if got := g.String(); got != want {
		t.Errorf("String() = %s\nwant       %s", got, want)
	}
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("grants", "grants", g)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("grants", "grants", g)
	b, err := json.Marshal(g)
	if err != nil {
		t.Errorf("json.Marshal: %v", err)
	}
	for what, out := range map[string]string{
		"%v":        fmt.Sprintf("%v", g),
		"%+v":       fmt.Sprintf("%+v", g),
		"%#v":       fmt.Sprintf("%#v", g),
		"%s":        fmt.Sprintf("%s", g),
		"slog text": text.String(),
		"slog JSON": js.String(),
		"JSON":      string(b),
	} {
		assertNoSecret(t, what, out)
		if !strings.Contains(out, "pandadocauth.Grants{") || strings.Contains(out, "ws0") {
			t.Errorf("%s: %s, want the summary", what, out)
		}
	}
}

// failingKeyedStore is a KeyedStore whose Load fails.
type failingKeyedStore struct{ nilKeyedStore }

func (s *failingKeyedStore) Load(context.Context, string) (*oauth2.Token, error) {
	s.loads.Add(1)
	return nil, errors.New("store down")
}

// TestGrantsTokenlessKeysEvictNothing: with MaxGrants, keys without a
// token (or whose Store cannot be read) neither stay in memory nor push
// out the grants that have a token.
func TestGrantsTokenlessKeysEvictNothing(t *testing.T) {
	t.Parallel()
	g, store, _, mt, _ := newGrants(t, 3, time.Hour)
	g.MaxGrants = 3
	rt := g.Transport(mt)
	held := map[string]*TokenSource{}
	for i := range 3 {
		key := fmt.Sprintf("ws%d", i)
		if resp, err := grantGet(t, rt, key); err != nil || resp.StatusCode != 200 {
			t.Fatal(resp, err)
		}
		g.mu.RLock()
		held[key] = &g.m[key].TokenSource
		g.mu.RUnlock()
	}
	for i := range 50 {
		if _, err := grantGet(t, rt, fmt.Sprintf("made-up-%d", i)); !errors.Is(err, ErrNoToken) {
			t.Fatalf("%v, want ErrNoToken", err)
		}
	}
	g.mu.RLock()
	n := len(g.m)
	for key, s := range held {
		if gr := g.m[key]; gr == nil || &gr.TokenSource != s {
			t.Errorf("%s was pushed out by keys without a token", key)
		}
	}
	g.mu.RUnlock()
	if n != 3 {
		t.Errorf("%d grants in memory, want the 3 with a token", n)
	}
	for key := range held {
		if n := store.count(store.loads, key); n != 1 {
			t.Errorf("%s loaded %d times, want 1", key, n)
		}
	}

	// A Store that cannot be read keeps no grant in memory either.
	failing := &failingKeyedStore{}
	g2 := &Grants{Config: testConfig(mt), Store: failing, clk: &clockRef{newAutoClock()}}
	for i := range 50 {
		if _, err := grantGet(t, g2.Transport(mt), fmt.Sprintf("made-up-%d", i)); err == nil || !strings.Contains(err.Error(), "store down") {
			t.Fatalf("%v, want the Store's error", err)
		}
	}
	g2.mu.RLock()
	defer g2.mu.RUnlock()
	if len(g2.m) != 0 {
		t.Errorf("%d grants kept for keys whose Store failed", len(g2.m))
	}
}

// lockingKeyedStore is a memKeyedStore that is a KeyedLocker too.
type lockingKeyedStore struct {
	*memKeyedStore
	locks atomic.Int32
}

func (s *lockingKeyedStore) Lock(context.Context, string) (func(), error) {
	s.locks.Add(1)
	return func() {}, nil
}

// TestGrantsForgetUnsaved: a grant forgotten while its token is unsaved
// (its Store refused the Save) ends its Save retries at once, without
// writing or locking the Store, so Wait does not wait for them; nor does
// it refresh again.
func TestGrantsForgetUnsaved(t *testing.T) {
	t.Parallel()
	g, mem, ep, _, clock := newGrants(t, 1, time.Hour)
	clock.Manual() // the failing Save's retry timer must not move time
	store := &lockingKeyedStore{memKeyedStore: mem}
	g.Store = store
	mem.saveErrs["ws0"] = 1 << 30
	clock.Advance(2 * time.Hour)
	held := g.Source("ws0")
	if _, err := held.Token(); err != nil {
		t.Fatal(err)
	}
	if !held.busy() {
		t.Fatal("the token's Save did not fail")
	}
	saves, locks := mem.count(mem.saves, "ws0"), store.locks.Load()
	g.Forget("ws0")
	g.Wait()
	if held.busy() {
		t.Error("the forgotten grant still has work for Wait")
	}
	if n := mem.count(mem.saves, "ws0"); n != saves {
		t.Errorf("%d Saves after Forget, want none", n-saves)
	}
	if n := store.locks.Load(); n != locks {
		t.Errorf("%d Locks after Forget, want none", n-locks)
	}
	if _, err := held.Refresh(context.Background()); err == nil {
		t.Error("a forgotten source refreshed")
	}
	if n := grantPosts(ep, "ws0"); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
}
