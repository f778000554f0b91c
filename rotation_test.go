package pandadocauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth/internal/fakepandadoc"
)

// The tests of this file hold the promise that a refresh token that may
// have been rotated is never lost, and one rotated away is never
// presented again, under the faults that once broke it. Their server,
// newRotatingServer, revokes a grant whose spent refresh token is
// presented.

// sharedStore is a Store and Locker that replicas share: one token, one
// lock. Load and Save fail while their error is set.
type sharedStore struct {
	mem     *memStore
	lock    chan struct{} // holds a value while locked
	mu      sync.Mutex    // guards the fields below
	waiting int           // Lock calls waiting
	cond    sync.Cond     // signalled when waiting or saves change
	saves   int
	locks   int // Lock calls that took the lock
	lockErr error
	saveErr error // returned by the next Save, which stores nothing
}

func newSharedStore(tok *oauth2.Token) *sharedStore {
	s := &sharedStore{mem: &memStore{tok: tok}, lock: make(chan struct{}, 1)}
	s.cond.L = &s.mu
	s.mem.onSave = func(*oauth2.Token) {
		s.mu.Lock()
		s.saves++
		s.cond.Broadcast()
		s.mu.Unlock()
	}
	return s
}

func (s *sharedStore) Load(ctx context.Context) (*oauth2.Token, error) { return s.mem.Load(ctx) }
func (s *sharedStore) Save(ctx context.Context, t *oauth2.Token) error {
	s.mu.Lock()
	err := s.saveErr
	s.saveErr = nil
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.mem.Save(ctx, t)
}

func (s *sharedStore) Lock(ctx context.Context) (func(), error) {
	s.mu.Lock()
	if err := s.lockErr; err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.waiting++
	s.cond.Broadcast()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.waiting--
		s.mu.Unlock()
	}()
	select {
	case s.lock <- struct{}{}:
		s.mu.Lock()
		s.locks++
		s.mu.Unlock()
		var once sync.Once
		return func() { once.Do(func() { <-s.lock }) }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// waitFor blocks until cond holds of the store.
func (s *sharedStore) waitFor(cond func(s *sharedStore) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !cond(s) {
		s.cond.Wait()
	}
}

// replica is one process's TokenSource on store, on clock, a fake clock
// of its own that moves only when the test advances it.
func replica(t *testing.T, store Store, srv *fakepandadoc.Server, clock *fakeClock) *TokenSource {
	t.Helper()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, srv.RoundTrip)
	ts := &TokenSource{Config: testConfig(mt), Store: store, clk: &clockRef{clock}}
	t.Cleanup(ts.Wait)
	return ts
}

// rolledBack returns a replica that refreshed its grant's expired token
// once, and its Store, rolled back since to the token it replaced: the
// refresh token the Store holds is one the replica spent.
func rolledBack(t *testing.T) (*fakepandadoc.Server, *fakeClock, *sharedStore, *TokenSource) {
	t.Helper()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	old := expiredToken(clock, "g-rt-SECRET-0")
	store := newSharedStore(old)
	ts := replica(t, store, srv, clock)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	store.mem.mu.Lock()
	store.mem.tok = old
	store.mem.mu.Unlock()
	return srv, clock, store, ts
}

func expiredToken(clock *fakeClock, rt string) *oauth2.Token {
	return &oauth2.Token{AccessToken: "g-at-SECRET-0", RefreshToken: rt, Expiry: clock.Now().Add(-time.Minute), ExpiresIn: 3600}
}

// rotate refreshes the grant of rt as another process would, and
// returns the token that process got, with no Expiry.
func rotate(t *testing.T, srv *fakepandadoc.Server, rt string) *oauth2.Token {
	t.Helper()
	tok, ok := srv.Rotate(newest(srv, rt))
	if !ok {
		t.Fatal("another process's refresh was refused: the grant is revoked")
	}
	return &oauth2.Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresIn: tok.ExpiresIn}
}

// granted returns the token of the grant's answer that a Rewrite fault
// gets, or nil if the grant was refused.
func granted(answer fakepandadoc.Fault) *oauth2.Token {
	var a struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiresIn    int64  `json:"expires_in"`
	}
	if answer.Status != http.StatusOK || json.Unmarshal([]byte(answer.Body), &a) != nil {
		return nil
	}
	return &oauth2.Token{AccessToken: a.AccessToken, RefreshToken: a.RefreshToken, ExpiresIn: a.ExpiresIn}
}

// rotatedThenRefused is a fault that rotates the refresh token presented
// and answers refusal, given the new refresh token, in place of the
// token; a refresh token that does not work gets its invalid_grant (and
// a spent one is a reuse).
func rotatedThenRefused(refusal func(rt string) fakepandadoc.Fault) fakepandadoc.Fault {
	return fakepandadoc.Fault{Rewrite: func(answer fakepandadoc.Fault) fakepandadoc.Fault {
		tok := granted(answer)
		if tok == nil {
			return answer
		}
		return refusal(tok.RefreshToken)
	}}
}

// malformed is an answer refused as malformed (expires_in out of range)
// that carries rt.
func malformed(rt string) fakepandadoc.Fault {
	return fakepandadoc.Body(200, "application/json", `{"access_token":"g-at-SECRET-x","refresh_token":"`+rt+`","expires_in":2147483647}`)
}

// checked returns f made to answer after the grant is carried out, so
// that a refresh token presented that does not work is found out (a spent
// one is a reuse), whatever f answers.
func checked(f fakepandadoc.Fault) fakepandadoc.Fault {
	f.AfterGrant = true
	return f
}

// TestFailedLoadUnderLockFailsTheRefresh: a Load that fails under the
// Locker's lock (a lost lock, a wrong key) fails the refresh as
// transient: nothing is POSTed with the refresh token in memory, which
// the Store may have replaced.
func TestFailedLoadUnderLockFailsTheRefresh(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	store := newSharedStore(expiredToken(clock, "g-rt-SECRET-0"))
	ts := replica(t, store, srv, clock)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	store.mem.mu.Lock()
	store.mem.loadErr = errors.New("cipher: message authentication failed")
	store.mem.mu.Unlock()
	clock.Advance(2 * time.Hour)
	_, err := ts.Token()
	if err == nil || isPermanent(err) || !strings.Contains(err.Error(), "loading token from store") {
		t.Fatalf("got %v, want a transient failure to load", err)
	}
	if n := srv.TotalTokenRequests(); n != 1 {
		t.Errorf("%d POSTs, want 1 (none after the failed Load)", n)
	}
}

// TestUnsavedTokenKeepsTheLock: after a refresh whose Save failed, the
// lock is kept while the Store still holds the refresh token just
// rotated away, so another replica waits instead of presenting it, and
// then adopts the token once it is saved.
func TestUnsavedTokenKeepsTheLock(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clockA := newFakeClock()
	store := newSharedStore(expiredToken(clockA, "g-rt-SECRET-0"))
	store.mem.saveErrs = 1
	a := replica(t, store, srv, clockA)
	b := replica(t, store, srv, newFakeClock())
	if _, err := a.Token(); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		tok, err := b.Token()
		if err == nil && tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
			err = errors.New("replica b serves " + tok.RefreshToken)
		}
		got <- err
	}()
	store.waitFor(func(s *sharedStore) bool { return s.waiting == 1 }) // b waits for the lock
	clockA.Advance(saveRetryInterval)                                  // a's Save retry
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n, r := srv.TotalTokenRequests(), srv.ReusedRefreshTokens(); n != 1 || r != 0 {
		t.Errorf("%d POSTs, %d spent refresh tokens presented; want 1, 0", n, r)
	}
}

// TestAdoptedTokenNeverFallsBack: after adopting a token another replica
// stored, the refresh token it replaced is spent: a later failure of any
// kind (here a 200 HTML page) never makes it presented again.
func TestAdoptedTokenNeverFallsBack(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	store := newSharedStore(&oauth2.Token{AccessToken: "g-at-SECRET-0", RefreshToken: "g-rt-SECRET-0", Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600})
	ts := replica(t, store, srv, clock)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	other := rotate(t, srv, "g-rt-SECRET-0") // another replica refreshed and stored
	other.Expiry = clock.Now().Add(time.Hour)
	store.mem.mu.Lock()
	store.mem.tok = other
	store.mem.mu.Unlock()
	if tok, err := ts.Refresh(context.Background()); err != nil || tok.RefreshToken != other.RefreshToken {
		t.Fatalf("%v, %v; want the stored token adopted", tok, err)
	}
	srv.FailNext(checked(fakepandadoc.Body(200, "text/html", "<html>maintenance</html>")))
	if _, err := ts.Refresh(context.Background()); !errors.Is(err, ErrMalformedResponse) {
		t.Fatalf("got %v, want the HTML page's error", err)
	}
	if n, r := srv.TotalTokenRequests(), srv.ReusedRefreshTokens(); n != 1 || r != 0 {
		t.Errorf("%d POSTs, %d spent refresh tokens presented; want 1, 0", n, r)
	}
}

// TestRotatedTokenInRefusedAnswerIsKept: a 200 refused as malformed
// (expires_in out of range) still carries the rotated refresh token: it
// is saved, and the next refresh presents it, not the one it replaced.
func TestRotatedTokenInRefusedAnswerIsKept(t *testing.T) {
	t.Parallel()
	for name, answer := range map[string]func(rt string) fakepandadoc.Fault{
		"expires_in out of range": malformed,
		"500 with a token": func(rt string) fakepandadoc.Fault {
			return fakepandadoc.Body(500, "application/json", `{"error":"server_error","refresh_token":"`+rt+`"}`)
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
			clock := newFakeClock()
			store := newSharedStore(expiredToken(clock, "g-rt-SECRET-0"))
			ts := replica(t, store, srv, clock)
			srv.FailNext(rotatedThenRefused(answer))
			if _, err := ts.Token(); err == nil {
				t.Fatal("want the refused answer's error")
			}
			if s := store.mem.stored(); s.RefreshToken != newest(srv, "g-rt-SECRET-0") || s.AccessToken != "" {
				t.Errorf("stored %+v, want the rotated refresh token alone", s)
			}
			clock.Advance(time.Minute) // past the back-off
			tok, err := ts.Token()
			if err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
				t.Fatalf("%v, %v; want a token from the rotated refresh token", tok, err)
			}
			if r := srv.ReusedRefreshTokens(); r != 0 {
				t.Errorf("%d spent refresh tokens presented", r)
			}
		})
	}
}

// TestFailedSaveRetriedWithoutRequests: a failed Save is retried on a
// timer, not only when a later request comes by, so an idle replica
// does not keep the only copy of the rotated token.
func TestFailedSaveRetriedWithoutRequests(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	store := newSharedStore(expiredToken(clock, "g-rt-SECRET-0"))
	store.mem.saveErrs = 2
	ts := replica(t, store, srv, clock)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	for i, wait := range []time.Duration{saveRetryInterval, 2 * saveRetryInterval} {
		clock.WaitTimers(1)
		clock.Advance(wait)
		store.waitFor(func(s *sharedStore) bool { return s.saves == i+2 })
	}
	settle(ts)
	if s := store.mem.stored(); s.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("the Store holds %q, want %q", s.RefreshToken, newest(srv, "g-rt-SECRET-0"))
	}
	if ts.busy() {
		t.Error("saved, yet the retry timer or the lock is kept")
	}
}

// TestStoreRollbackIsNotAdopted: a Store that goes back to a token whose
// refresh token this process spent (a Redis restart from its snapshot)
// is not believed: the newer token is saved again and refreshed.
func TestStoreRollbackIsNotAdopted(t *testing.T) {
	t.Parallel()
	srv, clock, store, ts := rolledBack(t)
	clock.Advance(2 * time.Hour)
	tok, err := ts.Token()
	if err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Fatalf("%v, %v", tok, err)
	}
	if n, r := srv.TotalTokenRequests(), srv.ReusedRefreshTokens(); n != 2 || r != 0 {
		t.Errorf("%d POSTs, %d spent refresh tokens presented; want 2, 0", n, r)
	}
	if s := store.mem.stored(); s.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("the Store holds %q, want %q", s.RefreshToken, newest(srv, "g-rt-SECRET-0"))
	}
}

// TestDeadlineFailureIsTransient: a token request cut by the flight's own
// deadline is an outage, not a refusal.
func TestDeadlineFailureIsTransient(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
		<-req.Context().Done()
		return nil, req.Context().Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	_, aerr := testConfig(mt).refreshAttempt(ctx, testRefresh, time.Now)
	if aerr == nil || !aerr.transient {
		t.Fatalf("got %+v, want a transient failure", aerr)
	}
	if isPermanent(classify(aerr)) {
		t.Error("classified as permanent")
	}
}

// TestRefreshReportsFailedSave: Refresh says so when the token it
// returns could not be saved.
func TestRefreshReportsFailedSave(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	store := newSharedStore(&oauth2.Token{AccessToken: "g-at-SECRET-0", RefreshToken: "g-rt-SECRET-0", Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600})
	store.mem.saveErrs = 1
	ts := replica(t, store, srv, clock)
	tok, err := ts.Refresh(context.Background())
	if !errors.Is(err, ErrNotSaved) || tok == nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Fatalf("%v, %v; want the new token and ErrNotSaved", tok, err)
	}
	assertNoSecret(t, "error", err.Error())
}

// TestErrorBodyRedactedThenCut: a secret echoed across the read limit is
// redacted whole before the body is cut, and a failure keeps only a
// bounded excerpt of the answer.
func TestErrorBodyRedactedThenCut(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"secret across the read limit": strings.Repeat("x", maxBodyBytes-8) + testRefresh + strings.Repeat("y", 100),
		"secret across the excerpt":    strings.Repeat("x", maxErrorBody-8) + testClientSecret + strings.Repeat("y", 100),
		"a whole error page":           `{"error":"server_error"}` + strings.Repeat(" ", 2*maxBodyBytes),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			mt := httpmock.NewMockTransport()
			mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(400, body))
			_, aerr := testConfig(mt).refreshAttempt(context.Background(), testRefresh, time.Now)
			var re *oauth2.RetrieveError
			if aerr == nil || !errors.As(aerr.err, &re) {
				t.Fatalf("got %+v, want a RetrieveError", aerr)
			}
			if len(re.Body) > maxErrorBody {
				t.Errorf("the error keeps %d bytes of the answer, want at most %d", len(re.Body), maxErrorBody)
			}
			for _, secret := range []string{testRefresh, testClientSecret} {
				if bytes.Contains(re.Body, []byte(secret[:8])) {
					t.Errorf("part of a secret survived in the body's excerpt")
				}
			}
		})
	}
}

// TestStoredTokenEndsRememberedRevocation: after invalid_grant, a token
// newly saved in the Store (the customer connected again) is used on the
// next request, not refused from memory for the back-off.
func TestStoredTokenEndsRememberedRevocation(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-live"})
	clock := newFakeClock()
	store := newSharedStore(expiredToken(clock, "g-rt-SECRET-revoked"))
	ts := replica(t, store, srv, clock)
	if _, err := ts.Token(); !isInvalidGrant(err) {
		t.Fatalf("got %v, want invalid_grant", err)
	}
	if _, err := ts.Token(); !isInvalidGrant(err) {
		t.Fatalf("got %v, want invalid_grant remembered", err)
	}
	posts := srv.TotalTokenRequests()
	store.mem.mu.Lock()
	store.mem.tok = &oauth2.Token{AccessToken: "g-at-SECRET-new", RefreshToken: "g-rt-SECRET-live", Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600}
	store.mem.mu.Unlock()
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != "g-at-SECRET-new" {
		t.Fatalf("%v, %v; want the newly stored token", tok, err)
	}
	if n := srv.TotalTokenRequests(); n != posts {
		t.Errorf("%d POSTs after the new token was stored, want none", n-posts)
	}
}

// TestLostLockIsTakenAgain: a Save refused because the lock was lost
// (its lease expired) is retried at once under the lock taken again,
// never under the lost one.
func TestLostLockIsTakenAgain(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	store := newSharedStore(expiredToken(clock, "g-rt-SECRET-0"))
	store.saveErr = fmt.Errorf("store: %w", ErrLockLost)
	ts := replica(t, store, srv, clock)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	if s := store.mem.stored(); s.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("the Store holds %q, want %q", s.RefreshToken, newest(srv, "g-rt-SECRET-0"))
	}
	store.mu.Lock()
	locks := store.locks
	store.mu.Unlock()
	if locks != 2 {
		t.Errorf("%d locks taken, want 2 (the lost one, then the one the retry saved under)", locks)
	}
	if ts.busy() {
		t.Error("saved, yet the lock is kept")
	}
}

// TestRepairSaveLosingLockStops: when the Store went back to a spent
// token and saving the current one again fails for a lost lock, the step
// ends: no refresh runs without the lock.
func TestRepairSaveLosingLockStops(t *testing.T) {
	t.Parallel()
	srv, clock, store, ts := rolledBack(t)
	store.mu.Lock()
	store.saveErr = fmt.Errorf("store: %w", ErrLockLost)
	store.mu.Unlock()
	clock.Advance(2 * time.Hour)
	if _, err := ts.Token(); !errors.Is(err, ErrLockLost) || isPermanent(err) {
		t.Fatalf("got %v, want a transient failure for the lost lock", err)
	}
	if n, r := srv.TotalTokenRequests(), srv.ReusedRefreshTokens(); n != 1 || r != 0 {
		t.Errorf("%d POSTs, %d spent refresh tokens presented; want 1, 0", n, r)
	}
}

// TestInitialFallbackOnlyForOlderLeftover: a Store never read before
// that holds a token issued after Initial holds its successor, not an
// older grant's leftover: when that token's refresh is refused,
// Initial's refresh token, spent by the process that stored it, is not
// tried. That holds when the process that stored it had its clock
// behind, and when the successor lives shorter than Initial, so that
// it expires first.
func TestInitialFallbackOnlyForOlderLeftover(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		expiry    time.Duration // the successor's Expiry less Initial's
		expiresIn int64         // the successor's lifetime
	}{
		{"issued after", 30 * time.Second, 3600},
		{"stored with a clock 20s behind", -20 * time.Second, 3600},
		{"shorter-lived", -30*time.Minute + 10*time.Second, 1800},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
			clock := newFakeClock()
			initial := expiredToken(clock, "g-rt-SECRET-0")
			successor := rotate(t, srv, "g-rt-SECRET-0") // another process refreshed Initial's
			successor.Expiry = initial.Expiry.Add(tc.expiry)
			successor.ExpiresIn = tc.expiresIn
			store := newSharedStore(successor)
			ts := replica(t, store, srv, clock)
			ts.Initial = initial
			srv.FailNext(checked(fakepandadoc.Body(400, "application/json", `{"error":"invalid_grant"}`)))
			if _, err := ts.Token(); !isInvalidGrant(err) {
				t.Fatalf("got %v, want invalid_grant", err)
			}
			if n, r := srv.TotalTokenRequests(), srv.ReusedRefreshTokens(); n != 1 || r != 0 {
				t.Errorf("%d POSTs, %d spent refresh tokens presented; want 1, 0", n, r)
			}
		})
	}
}

// TestFailedRepairKeepsTheLock: when the Store went back to a spent token
// and saving the current one again fails, the current token counts as
// unsaved: the lock stays held and the Save is retried, and no refresh
// runs before it is saved.
func TestFailedRepairKeepsTheLock(t *testing.T) {
	t.Parallel()
	srv, clock, store, ts := rolledBack(t)
	store.mem.mu.Lock()
	store.mem.saveErrs = 1
	store.mem.mu.Unlock()
	clock.Advance(2 * time.Hour)
	if _, err := ts.Token(); err == nil || isPermanent(err) {
		t.Fatalf("got %v, want a transient failure to save again", err)
	}
	if !ts.busy() || len(store.lock) != 1 {
		t.Fatal("the token the Store lost is not kept unsaved under the lock")
	}
	clock.WaitTimers(1)
	clock.Advance(saveRetryInterval)
	store.waitFor(func(s *sharedStore) bool { return s.saves >= 3 }) // the refresh's, the failed one, the retry's (and the refresh after it)
	settle(ts)
	if s := store.mem.stored(); s.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Fatalf("the Store holds %q after the retry, want %q", s.RefreshToken, newest(srv, "g-rt-SECRET-0"))
	}
	clock.Advance(time.Minute) // past the back-off
	tok, err := ts.Token()
	if err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Fatalf("%v, %v", tok, err)
	}
	if n, r := srv.TotalTokenRequests(), srv.ReusedRefreshTokens(); n != 2 || r != 0 {
		t.Errorf("%d POSTs, %d spent refresh tokens presented; want 2, 0", n, r)
	}
}
