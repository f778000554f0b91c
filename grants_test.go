package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"
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

// grantsEndpoint issues tokens for many grants: a grant's refresh token
// "rt-SECRET-<key>-<n>" gets "at-SECRET-<key>-<n+1>" and
// "rt-SECRET-<key>-<n+1>"; a revoked grant gets invalid_grant.
type grantsEndpoint struct {
	gate     chan struct{} // if set, every POST waits for it
	arrived  chan string   // if set, receives each POST's grant key
	mu       sync.Mutex    // guards the fields below
	posts    map[string]int
	revoked  map[string]bool
	inFlight int
	maxIn    int
}

func newGrantsEndpoint() *grantsEndpoint {
	return &grantsEndpoint{posts: map[string]int{}, revoked: map[string]bool{}}
}

func (e *grantsEndpoint) responder() httpmock.Responder {
	return func(req *http.Request) (*http.Response, error) {
		req.ParseForm()
		rt := strings.TrimPrefix(req.PostForm.Get("refresh_token"), "rt-SECRET-")
		i := strings.LastIndex(rt, "-")
		key, n := rt[:i], rt[i+1:]
		e.mu.Lock()
		e.posts[key]++
		e.inFlight++
		e.maxIn = max(e.maxIn, e.inFlight)
		revoked := e.revoked[key]
		e.mu.Unlock()
		if e.arrived != nil {
			e.arrived <- key
		}
		if e.gate != nil {
			<-e.gate
		}
		e.mu.Lock()
		e.inFlight--
		e.mu.Unlock()
		if revoked {
			return httpmock.NewStringResponse(400, `{"error":"invalid_grant"}`), nil
		}
		next, _ := strconv.Atoi(n)
		next++
		return httpmock.NewJsonResponse(200, map[string]any{
			"access_token":  fmt.Sprintf("at-SECRET-%s-%d", key, next),
			"refresh_token": fmt.Sprintf("rt-SECRET-%s-%d", key, next),
			"expires_in":    3600,
		})
	}
}

func (e *grantsEndpoint) postCount(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.posts[key]
}

// newGrants returns a Grants on a fake clock with n grants stored, each
// with a token that expires in expiresIn, and an API that accepts every
// access token but the revoked ones.
func newGrants(t *testing.T, n int, expiresIn time.Duration) (*Grants, *memKeyedStore, *grantsEndpoint, *httpmock.MockTransport, *fakeClock) {
	t.Helper()
	clock := newAutoClock()
	store := newMemKeyedStore()
	for i := range n {
		key := fmt.Sprintf("ws%d", i)
		store.m[key] = &oauth2.Token{
			AccessToken:  fmt.Sprintf("at-SECRET-%s-0", key),
			RefreshToken: fmt.Sprintf("rt-SECRET-%s-0", key),
			Expiry:       clock.Now().Add(expiresIn),
			ExpiresIn:    int64(expiresIn / time.Second),
		}
	}
	ep := newGrantsEndpoint()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, ep.responder())
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
		if n := ep.postCount(key); n != 1 {
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
	inner := ep.responder()
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
	ep.revoked["ws0"] = true
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
	if n := ep.postCount("ws0"); n != 3 {
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
	g, store, _, _, clock := newGrants(t, 6, time.Hour)
	g.MaxGrants = 3
	store.saveErrs["ws0"] = 1 << 30 // ws0's refreshed token stays unsaved
	clock.Advance(2 * time.Hour)
	if _, err := g.Source("ws0").Token(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 6; i++ {
		if _, err := g.Source(fmt.Sprintf("ws%d", i)).Token(); err != nil {
			t.Fatal(err)
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
	tok, err := g.Source("ws1").Token()
	if err != nil || tok.AccessToken != "at-SECRET-ws1-1" {
		t.Fatalf("%v, %v", tok, err)
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
	ep.gate = make(chan struct{})
	ep.arrived = make(chan string, grants)
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
	for range limit {
		<-ep.arrived
	}
	for range grants - limit {
		ep.gate <- struct{}{}
		<-ep.arrived
	}
	close(ep.gate)
	wg.Wait()
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.maxIn != limit {
		t.Errorf("%d POSTs at once, want the cap %d", ep.maxIn, limit)
	}
	total := 0
	for _, n := range ep.posts {
		total += n
	}
	if total != grants {
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
	g, _, ep, _, clock := newGrants(t, 3, time.Hour)
	g.MaxGrants = 1
	var reports atomic.Int32
	g.OnRevoked = func(key string, err error) { reports.Add(1) }
	ep.revoked["ws0"] = true
	clock.Advance(2 * time.Hour)
	for range 3 {
		if _, err := g.Source("ws0").Token(); err == nil {
			t.Fatal("want invalid_grant")
		}
		g.Source("ws1").Token() // these push ws0 out
		g.Source("ws2").Token()
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
	ep.revoked["ws0"] = true
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
	if n := ep.postCount("ws0"); n != 1 {
		t.Errorf("%d refreshes of ws0, want 1", n)
	}
}
