package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth/internal/fakepandadoc"
)

// TestSaveRetryBacksOffWhileLoadFails: the Save retry of an unsaved
// token reads the Store first; when that read fails (the Store is down,
// as it often is when a Save has just failed), the next retry still
// waits, instead of being armed with no wait and running again at once,
// a flight and a Store read after another with no time passing.
func TestSaveRetryBacksOffWhileLoadFails(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	store := newSharedStore(expiredToken(clock, "g-rt-SECRET-0"))
	store.mem.saveErrs = 1
	ts := replica(t, store, srv, clock)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	setLoadErr(store, errors.New("dial tcp 10.0.0.7:6379: connect: connection refused"))
	defer setLoadErr(store, nil) // before the cleanup's Wait, which saves then

	clock.WaitTimers(1)
	clock.Advance(saveRetryInterval) // the first Save retry; its Load fails
	clock.WaitTimers(1)              // the next retry is armed
	if w := lastWait(clock); w < saveRetryInterval {
		t.Errorf("after a Save retry whose Load failed, the next is armed %v later, want at least %v", w, saveRetryInterval)
	}
	before := loadsOf(store)
	const rounds = 20
	for range rounds {
		clock.Advance(0) // fires only what is due now
		clock.WaitTimers(1)
	}
	if n := loadsOf(store) - before; n != 0 {
		t.Errorf("%d Store reads (each its own flight) while no time passed; want 0", n)
	}
}

// TestRotatedTokenInRefusedAnswerAfterReloadIsKept: when a refresh is
// refused for good and the Store, read again, holds another process's
// token, the refresh with that token's refresh token may be refused too,
// with a new refresh token in the answer. That one is kept and saved, as
// on the first try, and never thrown away; the refresh token it replaced
// is never presented again.
func TestRotatedTokenInRefusedAnswerAfterReloadIsKept(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	store := &memStore{tok: expiredToken(clock, "g-rt-SECRET-0")}
	ts, _ := newStoreSource(t, store, srv.RoundTrip)
	ts.clk = &clockRef{clock}
	srv.FailNext(
		// The first refresh's rotation is another process's, answered
		// first: it stores a token that this process's clock (skewed)
		// finds expired. This process gets a maintenance page.
		fakepandadoc.Fault{Rewrite: func(answer fakepandadoc.Fault) fakepandadoc.Fault {
			other := granted(answer)
			if other == nil {
				return answer
			}
			other.Expiry = clock.Now().Add(-time.Minute)
			store.mu.Lock()
			store.tok = other
			store.mu.Unlock()
			return fakepandadoc.Body(200, "text/html", "<html>maintenance</html>")
		}},
		// The refresh with the other process's refresh token is rotated,
		// then refused as malformed.
		rotatedThenRefused(malformed),
	)
	if _, err := ts.Token(); !errors.Is(err, ErrMalformedResponse) {
		t.Fatalf("got %v, want the refused answer's error", err)
	}
	if n := srv.TotalTokenRequests(); n != 2 {
		t.Fatalf("%d POSTs, want 2 (the first refresh token, then the stored one)", n)
	}
	if s := store.stored(); s.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("the Store holds %q, want the rotated %q from the refused answer", s.RefreshToken, newest(srv, "g-rt-SECRET-0"))
	}
	clock.Advance(time.Minute) // past the back-off
	tok, err := ts.Token()
	if err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("%v, %v; want a token from the rotated refresh token", tok, err)
	}
	if r := srv.ReusedRefreshTokens(); r != 0 {
		t.Errorf("%d spent refresh tokens presented; the grant is revoked", r)
	}
}

// TestStoreRollbackIsNotAdoptedAfterRotations: a Store that goes back to
// a snapshot taken some rotations ago (a Redis restart from an old RDB
// file) hands back a refresh token this process spent. However many
// rotations ago that was, up to the four spent refresh tokens a source
// remembers (persister.spent), the token is not adopted: the refresh
// token in memory, the newest, is not given up, and the spent one is
// never presented. A rollback further back than that is not recognised.
func TestStoreRollbackIsNotAdoptedAfterRotations(t *testing.T) {
	t.Parallel()
	for _, rotations := range []int{1, 2, 3, len(persister{}.spent)} {
		t.Run(fmt.Sprintf("rotations=%d", rotations), func(t *testing.T) {
			t.Parallel()
			srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
			clock := newFakeClock()
			snap := &oauth2.Token{AccessToken: "g-at-SECRET-0", RefreshToken: "g-rt-SECRET-0", Expiry: clock.Now().Add(time.Hour), ExpiresIn: 3600}
			store := newSharedStore(snap)
			ts := replica(t, store, srv, clock)
			if _, err := ts.Token(); err != nil {
				t.Fatal(err)
			}
			for range rotations {
				if _, err := ts.Refresh(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			old := *snap
			store.mem.mu.Lock()
			store.mem.tok = &old // rolled back
			store.mem.mu.Unlock()
			clock.Advance(2 * time.Hour)
			tok, err := ts.Token()
			if err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
				t.Errorf("%v, %v; want a token from the newest refresh token", tok, err)
			}
			if r := srv.ReusedRefreshTokens(); r != 0 {
				t.Errorf("%d spent refresh tokens presented; the grant is revoked", r)
			}
		})
	}
}

// TestLostLockOnSaveIsTakenAgainAtOnce: a Save refused because the lock
// was lost (its lease ran out during a slow POST, and nobody took it) is
// retried under the lock taken again before the flight ends. Until then
// the Store holds the refresh token just rotated away, and a replica that
// takes the free lock meanwhile presents it.
func TestLostLockOnSaveIsTakenAgainAtOnce(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clockA := newFakeClock()
	store := newSharedStore(expiredToken(clockA, "g-rt-SECRET-0"))
	store.saveErr = fmt.Errorf("store: %w", ErrLockLost)
	a := replica(t, store, srv, clockA)
	b := replica(t, store, srv, newFakeClock())
	if _, err := a.Token(); err != nil {
		t.Fatal(err)
	}
	tok, err := b.Token()
	if err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("replica b: %v, %v; want the token replica a obtained", tok, err)
	}
	if r := srv.ReusedRefreshTokens(); r != 0 {
		t.Errorf("%d spent refresh tokens presented; the grant is revoked", r)
	}
}

// TestRecheckIsNotAReportedRefresh: while a revoked grant's failure is
// remembered, each call reads the Store for a token saved since (none
// here). Those reads are not refreshes: the Observer is told of the one
// refresh that failed, not of a failed refresh per call.
func TestRecheckIsNotAReportedRefresh(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-live"})
	clock := newFakeClock()
	store := newSharedStore(expiredToken(clock, "g-rt-SECRET-revoked"))
	ts := replica(t, store, srv, clock)
	rec := &recorder{}
	ts.Observer = rec.observer()
	const calls = 5
	for range 1 + calls {
		if _, err := ts.Token(); !isInvalidGrant(err) {
			t.Fatalf("got %v, want invalid_grant", err)
		}
	}
	if n := srv.TotalTokenRequests(); n != 1 {
		t.Errorf("%d POSTs, want 1", n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.starts) != 1 || len(rec.dones) != 1 {
		t.Errorf("%d refresh starts and %d refresh failures reported for 1 refresh and %d calls that found nothing new; want 1 and 1", len(rec.starts), len(rec.dones), calls)
	}
}

// setLoadErr makes store's Load fail with err (nil: succeed).
func setLoadErr(store *sharedStore, err error) {
	store.mem.mu.Lock()
	store.mem.loadErr = err
	store.mem.mu.Unlock()
}

// loadsOf is how many times store's Load was called.
func loadsOf(store *sharedStore) int {
	store.mem.mu.Lock()
	defer store.mem.mu.Unlock()
	return store.mem.loads
}

// lastWait is the duration of the timer clock started last.
func lastWait(clock *fakeClock) time.Duration {
	w := clock.Waits()
	return w[len(w)-1]
}

// TestWaitGivingUpKeepsTheLock: Wait gives up saving after 30 seconds of
// failed Saves, but the source goes on serving the unsaved token (Wait
// may be called while requests go on, between batches say), and the
// Store still holds the refresh token it replaced. The lock stays held
// and the Save goes on being retried, so that a replica that needs a
// refresh waits and then adopts the saved token, instead of taking a
// free lock and presenting the spent refresh token.
func TestWaitGivingUpKeepsTheLock(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clockA := newPumpedClock(t)
	store := newSharedStore(expiredToken(clockA, "g-rt-SECRET-0"))
	store.mem.saveErrs = 1 << 30 // the Store refuses every Save for now
	a := replica(t, store, srv, clockA)
	b := replica(t, store, srv, newFakeClock())
	if _, err := a.Token(); err != nil {
		t.Fatal(err)
	}
	a.Wait() // gives up after 30 s of failed Saves; a goes on serving
	store.mem.mu.Lock()
	store.mem.saveErrs = 0 // the Store is back
	store.mem.mu.Unlock()
	tok, err := b.Token()
	if err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("replica b: %v, %v; want the token replica a obtained", tok, err)
	}
	if r := srv.ReusedRefreshTokens(); r != 0 {
		t.Errorf("%d spent refresh tokens presented; the grant is revoked", r)
	}
}

// TestEarlyRefreshRefusedWithRotatedTokenKeepsServing: an early refresh
// whose answer is refused but carries a new refresh token keeps that
// refresh token without throwing away the access token still being
// served: requests go on with it until it expires, as after any failed
// early refresh, and the next refresh presents the new refresh token.
func TestEarlyRefreshRefusedWithRotatedTokenKeepsServing(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	store := newSharedStore(&oauth2.Token{AccessToken: "g-at-SECRET-0", RefreshToken: "g-rt-SECRET-0", Expiry: clock.Now().Add(10 * time.Minute), ExpiresIn: 3600})
	ts := replica(t, store, srv, clock)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	srv.FailNext(rotatedThenRefused(malformed))
	clock.Advance(6 * time.Minute) // inside the early-refresh window
	if tok, err := ts.Token(); err != nil || tok.AccessToken != "g-at-SECRET-0" {
		t.Fatalf("%v, %v", tok, err)
	}
	settle(ts) // the early refresh, refused
	if n := srv.TotalTokenRequests(); n != 1 {
		t.Fatalf("%d POSTs, want the early refresh's 1", n)
	}
	if tok, err := ts.Token(); err != nil || tok.AccessToken != "g-at-SECRET-0" {
		t.Errorf("after the refused early refresh: %v, %v; want the access token still valid", tok, err)
	}
	clock.Advance(10 * time.Minute) // it expires
	tok, err := ts.Token()
	if err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("%v, %v; want a token from the rotated refresh token", tok, err)
	}
	if r := srv.ReusedRefreshTokens(); r != 0 {
		t.Errorf("%d spent refresh tokens presented", r)
	}
}

// TestWaitSavesKeptRefreshTokenWithoutRefreshing: the refresh token kept
// from a refused answer, alone (the access token served had expired) and
// unsaved, is saved by the Save retries without a refresh: a retry whose
// Save fails ends there, instead of refreshing a token no caller asked
// for, so that a refresh that hangs cannot use up Wait's time.
func TestWaitSavesKeptRefreshTokenWithoutRefreshing(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newPumpedClock(t)
	store := newSharedStore(expiredToken(clock, "g-rt-SECRET-0"))
	store.mem.saveErrs = 2 // the kept token's Save and its first retry fail
	ts := replica(t, store, srv, clock)
	srv.FailNext(rotatedThenRefused(func(rt string) fakepandadoc.Fault {
		return fakepandadoc.Body(200, "application/json", `{"error":"server_error","refresh_token":"`+rt+`"}`)
	}))
	if _, err := ts.Token(); err == nil {
		t.Fatal("want the refused answer's error")
	}
	ts.Wait()
	if s := store.mem.stored(); s.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("after Wait the Store holds %q, want the kept %q", s.RefreshToken, newest(srv, "g-rt-SECRET-0"))
	}
	if n := srv.TotalTokenRequests(); n != 1 {
		t.Errorf("%d POSTs, want the refused refresh's 1: the Save retries refreshed", n)
	}
	if n := store.mem.saveCount(); n != 3 {
		t.Errorf("%d Saves, want 3 (the kept token's, a failed retry, the retry that saved it)", n)
	}
	if ts.busy() {
		t.Error("saved, yet the retry timer or the lock is kept")
	}
	clock.Advance(time.Minute) // past the back-off
	if tok, err := ts.Token(); err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Fatalf("%v, %v; want a token from the kept refresh token", tok, err)
	}
	if r := srv.ReusedRefreshTokens(); r != 0 {
		t.Errorf("%d spent refresh tokens presented", r)
	}
}

// TestFencedTokenOutlivesRollback: a token whose Save the Store refused
// for a lost lock was never in the Store, so no other process can have
// refreshed it. When the Store meanwhile went back to a token this
// process never saw (an older one, from before it first read the
// Store), that token is no successor of it: the Save retry saves the
// newest token over it, rather than adopting it and presenting its
// spent refresh token, then or when the Store goes back to it again.
func TestFencedTokenOutlivesRollback(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newPumpedClock(t)
	older := expiredToken(clock, "g-rt-SECRET-0")
	stored := rotate(t, srv, "g-rt-SECRET-0") // another process refreshed it and stored this
	stored.Expiry = clock.Now().Add(-time.Minute)
	store := newSharedStore(stored)
	store.saveErr = fmt.Errorf("store: %w", ErrLockLost)
	ts := replica(t, store, srv, clock)
	srv.FailNext(fakepandadoc.Fault{Rewrite: func(answer fakepandadoc.Fault) fakepandadoc.Fault {
		store.mem.mu.Lock()
		store.mem.tok = older // the Store goes back while the refresh is under way
		store.mem.mu.Unlock()
		return fakepandadoc.Fault{} // the grant's answer
	}})
	if tok, err := ts.Token(); err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Fatalf("%v, %v", tok, err)
	}
	ts.Wait()
	if s := store.mem.stored(); s.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("after Wait the Store holds %q, want the newest %q", s.RefreshToken, newest(srv, "g-rt-SECRET-0"))
	}
	if n, r := srv.TotalTokenRequests(), srv.ReusedRefreshTokens(); n != 1 || r != 0 {
		t.Errorf("%d POSTs, %d spent refresh tokens presented; want 1, 0", n, r)
	}
	if tok, err := ts.Token(); err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("%v, %v; want the newest token still served", tok, err)
	}
	// The Store goes back to the same token once more: it is known
	// older now, and its refresh token is not presented.
	again := *older
	store.mem.mu.Lock()
	store.mem.tok = &again
	store.mem.mu.Unlock()
	clock.Advance(2 * time.Hour)
	if tok, err := ts.Token(); err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("after a second rollback: %v, %v; want a token from the newest refresh token", tok, err)
	}
	if r := srv.ReusedRefreshTokens(); r != 0 {
		t.Errorf("%d spent refresh tokens presented", r)
	}
}

// TestRefusedTokenNeverRepairsTheStore: a process that first read the
// Store after another process's refresh takes a rollback to the token
// before (which it never saw) for news, as it must: it cannot tell the
// two apart. The rolled-back refresh token is refused. When the Store
// holds the newer token again (another process saved it back), the
// refused token is not saved over it as a repair, nor presented again,
// not even when the Store goes back to it once more.
func TestRefusedTokenNeverRepairsTheStore(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	older := expiredToken(clock, "g-rt-SECRET-0")
	newer := rotate(t, srv, "g-rt-SECRET-0") // another process refreshed it and stored this
	newer.Expiry = clock.Now().Add(time.Hour)
	store := newSharedStore(newer)
	ts := replica(t, store, srv, clock)
	if tok, err := ts.Token(); err != nil || tok.RefreshToken != newer.RefreshToken {
		t.Fatalf("%v, %v", tok, err)
	}
	store.mem.mu.Lock()
	store.mem.tok = older // rolled back
	store.mem.mu.Unlock()
	clock.Advance(2 * time.Hour)
	if _, err := ts.Token(); !isInvalidGrant(err) {
		t.Fatalf("got %v, want invalid_grant for the rolled-back refresh token", err)
	}
	back := *newer
	store.mem.mu.Lock()
	store.mem.tok = &back // saved back by the process that knows it is newer
	store.mem.mu.Unlock()
	clock.Advance(permanentFailureBackoff)
	if _, err := ts.Token(); err == nil {
		t.Fatal("want an error: no refresh token worth presenting")
	}
	if s := store.mem.stored(); s.RefreshToken != newer.RefreshToken {
		t.Errorf("the Store holds %q, want %q still: the refused token was saved over it", s.RefreshToken, newer.RefreshToken)
	}
	if n := srv.TotalTokenRequests(); n != 1 {
		t.Errorf("%d POSTs, want 1: the refused refresh token was presented again", n)
	}
	// The Store goes back once more: the refused token, which it has
	// moved on from since, is not asked about again.
	again := *older
	store.mem.mu.Lock()
	store.mem.tok = &again
	store.mem.mu.Unlock()
	clock.Advance(permanentFailureBackoff)
	if _, err := ts.Token(); err == nil {
		t.Fatal("want an error: no refresh token worth presenting")
	}
	if n := srv.TotalTokenRequests(); n != 1 {
		t.Errorf("%d POSTs, want 1: the refused refresh token was presented again after a second rollback", n)
	}
}

// TestRefusedStoredTokenIsStale: a token another process stored is
// adopted, and its refresh token refused (the grant was revoked, or the
// Store went back). While the token in memory, still valid, is served,
// the Store keeps the refused token: the next refresh neither presents
// the refused refresh token again nor saves the token in memory, whose
// refresh token the stored one replaced, over it.
func TestRefusedStoredTokenIsStale(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	mine := rotate(t, srv, "g-rt-SECRET-0")
	mine.Expiry = clock.Now().Add(time.Hour)
	store := newSharedStore(mine)
	ts := replica(t, store, srv, clock)
	if tok, err := ts.Token(); err != nil || tok.RefreshToken != mine.RefreshToken {
		t.Fatalf("%v, %v", tok, err)
	}
	theirs := rotate(t, srv, "g-rt-SECRET-0") // another process refreshed and stored this
	theirs.Expiry = clock.Now().Add(-time.Minute)
	store.mem.mu.Lock()
	store.mem.tok = theirs
	store.mem.mu.Unlock()
	srv.FailNext(fakepandadoc.Fault{Rewrite: func(answer fakepandadoc.Fault) fakepandadoc.Fault {
		tok := granted(answer)
		if tok == nil {
			return answer
		}
		srv.Revoke(tok.RefreshToken) // the grant is revoked as the refresh arrives
		return fakepandadoc.Body(400, "application/json", `{"error":"invalid_grant"}`)
	}})
	if _, err := ts.Refresh(context.Background()); !isInvalidGrant(err) {
		t.Fatalf("got %v, want invalid_grant for the stored refresh token", err)
	}
	clock.Advance(permanentFailureBackoff)
	if _, err := ts.Refresh(context.Background()); err == nil {
		t.Fatal("want an error: no refresh token worth presenting")
	}
	if s := store.mem.stored(); s.RefreshToken != theirs.RefreshToken {
		t.Errorf("the Store holds %q, want %q: the older token was saved over it", s.RefreshToken, theirs.RefreshToken)
	}
	if n, r := srv.TotalTokenRequests(), srv.ReusedRefreshTokens(); n != 1 || r != 0 {
		t.Errorf("%d POSTs, %d spent refresh tokens presented; want 1, 0", n, r)
	}
}

// TestRecheckRemembersRefusedTokenLeftBehind: as in
// TestRefusedTokenNeverRepairsTheStore, but the Store holds the newer
// token again only while the refusal is remembered, so that only the
// flight that rechecks the Store sees it. The Store has moved on from
// the refused refresh token all the same: when it goes back to it, it is
// not presented again.
func TestRecheckRemembersRefusedTokenLeftBehind(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	older := expiredToken(clock, "g-rt-SECRET-0")
	newer := rotate(t, srv, "g-rt-SECRET-0")
	newer.Expiry = clock.Now().Add(time.Hour)
	store := newSharedStore(newer)
	ts := replica(t, store, srv, clock)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	setStored := func(tok *oauth2.Token) {
		c := *tok
		store.mem.mu.Lock()
		store.mem.tok = &c
		store.mem.mu.Unlock()
	}
	setStored(older) // rolled back
	clock.Advance(2 * time.Hour)
	if _, err := ts.Token(); !isInvalidGrant(err) {
		t.Fatalf("got %v, want invalid_grant for the rolled-back refresh token", err)
	}
	setStored(newer) // saved back, seen by the recheck within the back-off
	if _, err := ts.Token(); !isInvalidGrant(err) {
		t.Fatalf("got %v, want the remembered invalid_grant", err)
	}
	setStored(older) // and rolled back again
	clock.Advance(permanentFailureBackoff)
	if _, err := ts.Token(); err == nil {
		t.Fatal("want an error: no refresh token worth presenting")
	}
	if n := srv.TotalTokenRequests(); n != 1 {
		t.Errorf("%d POSTs, want 1: the refused refresh token was presented again", n)
	}
}

// TestFencedUnrotatedRefreshIsNoFence: a refresh answered with the same
// refresh token (the server did not rotate this time, or left
// refresh_token out) gives a token whose refresh token the Store holds
// already. If its Save is fenced, another process that took the lock
// can refresh that same refresh token and store a real successor. That
// successor is adopted, not taken for a rollback and overwritten with
// the token whose refresh token it rotated away.
func TestFencedUnrotatedRefreshIsNoFence(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newPumpedClock(t)
	store := newSharedStore(expiredToken(clock, "g-rt-SECRET-0"))
	store.saveErr = fmt.Errorf("store: %w", ErrLockLost)
	ts := replica(t, store, srv, clock)
	srv.FailNext(fakepandadoc.Fault{Rewrite: func(answer fakepandadoc.Fault) fakepandadoc.Fault {
		// Meanwhile this process's lock ran out; another process took
		// it, refreshed the same (still live) refresh token, which the
		// server rotated, and stored the successor: the grant's answer.
		theirs := granted(answer)
		if theirs == nil {
			t.Error("the first refresh was refused")
			return answer
		}
		theirs.Expiry = clock.Now().Add(time.Hour)
		store.mem.mu.Lock()
		store.mem.tok = theirs
		store.mem.mu.Unlock()
		// This process is answered as if its refresh was not rotated:
		// the same refresh token comes back.
		return fakepandadoc.Body(200, "application/json", `{"access_token":"g-at-SECRET-a","refresh_token":"g-rt-SECRET-0","expires_in":3600}`)
	}})
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	ts.Wait()
	want := newest(srv, "g-rt-SECRET-0")
	if s := store.mem.stored(); s.RefreshToken != want {
		t.Errorf("after Wait the Store holds %q, want the other process's successor %q", s.RefreshToken, want)
	}
	clock.Advance(2 * time.Hour)
	if tok, err := ts.Token(); err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("%v, %v; want a token from the newest refresh token", tok, err)
	}
	if r := srv.ReusedRefreshTokens(); r != 0 {
		t.Errorf("%d grants revoked for a spent refresh token presented", r)
	}
}

// TestRolledBackAfterRefusedRotation: a refused answer that carried a
// new refresh token spent the one presented. When the Store then goes
// back to the token with the spent refresh token (a rollback), it is
// not presented: the source remembers it as spent, as it does for its
// own refreshes.
func TestRolledBackAfterRefusedRotation(t *testing.T) {
	t.Parallel()
	srv := newRotatingServer(t, 3600, map[string]string{"g": "g-rt-SECRET-0"})
	clock := newFakeClock()
	older := expiredToken(clock, "g-rt-SECRET-0")
	store := newSharedStore(older)
	ts := replica(t, store, srv, clock)
	srv.FailNext(rotatedThenRefused(malformed))
	if _, err := ts.Token(); !errors.Is(err, ErrMalformedResponse) {
		t.Fatalf("got %v, want the refused answer's error", err)
	}
	kept := newest(srv, "g-rt-SECRET-0")
	if s := store.mem.stored(); s.RefreshToken != kept {
		t.Fatalf("the Store holds %q, want the rotated %q from the refused answer", s.RefreshToken, kept)
	}
	again := *older
	store.mem.mu.Lock()
	store.mem.tok = &again // rolled back
	store.mem.mu.Unlock()
	clock.Advance(time.Minute) // past the back-off
	if tok, err := ts.Token(); err != nil || tok.RefreshToken != newest(srv, "g-rt-SECRET-0") {
		t.Errorf("%v, %v; want a token from the kept refresh token", tok, err)
	}
	if r := srv.ReusedRefreshTokens(); r != 0 {
		t.Errorf("%d grants revoked for a spent refresh token presented", r)
	}
}
