package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// persister is what a TokenSource knows of its Store and of the refresh
// tokens it has spent. Only the flight reads and writes it; flights run
// one at a time.
type persister struct {
	// synced is the token last loaded from or saved to the Store: a
	// stored token that differs from it was written by another process
	// since, and is newer, whatever the clocks say.
	synced *oauth2.Token

	// fenced is a token just obtained from the endpoint whose every Save
	// the Store refused for a lost lock: fenced writes, not applied. The
	// Store never held it, so no other process refreshed it, and a
	// stored token with another refresh token than it, other than the
	// one it replaced, is no successor of it: the Store went back.
	fenced *oauth2.Token

	// fallback is the token served from Initial when the Store, never
	// read before, held another token: a grant fresh from
	// Config.Exchange may sit next to an older grant's leftover in the
	// Store. If the stored token's refresh token is refused with
	// invalid_grant (that grant is gone), fallback's is tried, so the
	// fresh grant is not lost.
	fallback *oauth2.Token

	// spent are digests of the last refresh tokens this source saw
	// rotated away, by its own refresh or by another process's, newest
	// first. A token that carries one is stale whatever the Store says
	// (the Store may have rolled back), and none of them is ever
	// presented again: a server that detects reuse would revoke the
	// grant.
	spent [4]uint64

	// refused is the digest of the last refresh token the endpoint
	// refused with invalid_grant. It is worth nothing to save: it never
	// replaces a stored token, even one that carries a refresh token seen
	// rotated away (the Store may hold the live one, taken for spent
	// after a rollback).
	refused uint64
}

// spentSeed keys the digests of spent refresh tokens.
var spentSeed = maphash.MakeSeed()

// digest is the digest of a refresh token in persister.spent; never 0.
func digest(rt string) uint64 {
	return maphash.String(spentSeed, rt) | 1
}

// spend records that rt was rotated away.
func (p *persister) spend(rt string) {
	if rt == "" || p.isSpent(rt) {
		return
	}
	copy(p.spent[1:], p.spent[:len(p.spent)-1])
	p.spent[0] = digest(rt)
}

// isSpent reports whether rt is known to be rotated away.
func (p *persister) isSpent(rt string) bool {
	if rt == "" {
		return false
	}
	d := digest(rt)
	for _, s := range p.spent {
		if s == d {
			return true
		}
	}
	return false
}

// same reports whether a and b are the same token.
func same(a, b *oauth2.Token) bool {
	return a != nil && b != nil && a.AccessToken == b.AccessToken && a.RefreshToken == b.RefreshToken
}

// got is what one step of a flight obtained; the flight serves and
// records it.
type got struct {
	tok     *oauth2.Token // a token to serve next; nil: none
	from    origin        // where tok came from
	invalid bool          // tok is served only for its refresh token
	saveErr error         // tok's Save failed (or cur's, retried)
	saved   bool          // the unsaved token served was saved, or is not worth saving
	outcome RefreshOutcome
	tries   int    // token-endpoint requests made
	rotated string // a refresh token found in a refused answer
	header  string // tok's Authorization header, when built already
}

// ErrLockLost means a Locker's lock was lost while held (a lease that
// expired, a session that was closed): another process may hold it now.
// Stores wrap it, so errors.Is(err, ErrLockLost) holds for their errors.
// A Save that fails with it must have stored nothing (a fenced write):
// a new token whose every Save failed so is taken to be in no Store, and
// a token with another refresh token found in the Store in its place is
// taken for a Store that went back.
var ErrLockLost = errors.New("lock lost")

// errSpent is the failure of a step that would have presented a refresh
// token seen rotated away.
var errSpent = errors.New("pandadocauth: the only refresh token known was rotated away (a newer one was lost); the grant needs a new authorization")

// advance takes one step of flight c towards a usable token of
// generation want, from cur (nil before the first token): it saves cur
// when saveDue, adopts a token another process stored, or refreshes. It
// returns what it got.
func (s *TokenSource) advance(ctx context.Context, c *flightCall, cur *snapshot, want uint32, saveDue bool) (got, error) {
	if s.Config == nil {
		return got{}, errors.New("pandadocauth: TokenSource.Config is nil")
	}
	if cur == nil && s.loadInitial() {
		return got{outcome: OutcomeLoaded}, nil
	}
	if c.recheck {
		// A permanent failure is remembered: only a token stored since
		// (the customer connected again) is worth a refresh.
		newer, stale, err := s.loadNewer(ctx, cur)
		if err != nil || newer == nil {
			if stale && cur != nil && s.store.refused == digest(cur.tok.RefreshToken) {
				s.store.spend(cur.tok.RefreshToken) // refused, and the Store has moved on from it
			}
			return got{}, c.remind
		}
		if cur != nil && newer.RefreshToken != cur.tok.RefreshToken {
			s.store.spend(cur.tok.RefreshToken) // refused for good: never again
		}
		c.recheck = false
		s.flight.mu.Lock() // joiners read c.ctx and c.reported under it
		s.reportStart(c)
		s.flight.mu.Unlock()
	}
	locked, err := s.lock(ctx, c)
	if err != nil {
		return got{}, err
	}
	newer, stale, err := s.loadNewer(ctx, cur)
	if err != nil {
		if errors.Is(err, ErrLockLost) {
			s.unlock(c)
		}
		if cur == nil || locked {
			// Under the lock a failed read is a failed refresh: the
			// Store may hold a newer refresh token than the one in
			// memory, and a refresh holding no lock would race others.
			return got{}, transientError{error: fmt.Errorf("pandadocauth: loading token from store: %w", err), backoff: transientFailureBackoff}
		}
		s.logWarn("pandadocauth: loading token from store failed; using the cached token", slog.Any("error", err))
	}
	if newer != nil {
		// Another process stored a token since this source last read or
		// wrote the Store: it is newer.
		return s.adopt(ctx, c, cur, newer)
	}
	if cur == nil {
		return got{}, fmt.Errorf("pandadocauth: %w", ErrNoToken)
	}
	if stale && (s.store.refused == digest(cur.tok.RefreshToken) || s.store.isSpent(cur.tok.RefreshToken)) {
		// Neither is worth presenting or saving: the refresh token in
		// memory was refused or seen rotated away, and so was the
		// Store's. The Store has moved on from a refused one: it is not
		// asked about again, even when the Store goes back to it. An
		// unsaved token is not worth saving either: its Save retries end.
		s.store.spend(cur.tok.RefreshToken)
		return got{saved: cur.unsaved}, errSpent
	}
	if saveDue || stale {
		// The Store holds an older token than the one served: its Save
		// failed, or the Store went back to a token this source has
		// seen rotated away.
		g := got{outcome: OutcomeUnchanged}
		if g.saveErr = s.saveToken(ctx, c, cur.tok, true); g.saveErr == nil {
			g.saved, g.outcome = true, OutcomeSaved
			if stale {
				s.logWarn("pandadocauth: the store held a token rotated away since (did it roll back?); saved the current one again")
			} else {
				s.logInfo("pandadocauth: token saved")
			}
		} else {
			s.logError("pandadocauth: saving the token failed again", slog.Any("error", g.saveErr))
		}
		if saveDue {
			return g, nil
		}
		if g.saveErr != nil {
			// The Store holds a spent refresh token and cur is not in
			// it: cur is unsaved now (the lock is kept, the Save
			// retried), and no refresh runs before it is saved, nor
			// without the lock if the Save lost it.
			return g, transientError{error: fmt.Errorf("pandadocauth: saving the token again over a store that went back: %w", g.saveErr), backoff: transientFailureBackoff}
		}
	}
	return s.refresh(ctx, c, cur, cur.tok.RefreshToken)
}

// lock takes the Locker's lock for flight c, if the Store is a Locker
// and c does not hold it yet: the lock an unsaved token kept is taken
// over. It reports whether c holds a lock.
func (s *TokenSource) lock(ctx context.Context, c *flightCall) (bool, error) {
	l, ok := s.Store.(Locker)
	if !ok {
		return false, nil
	}
	r := &s.flight
	r.mu.Lock()
	if c.unlock == nil {
		if t := r.failures; t != nil && t.held != nil {
			c.unlock, t.held = t.held, nil
		}
	}
	held := c.unlock != nil
	r.mu.Unlock()
	if held {
		return true, nil
	}
	start := s.mono()
	unlock, err := l.Lock(ctx)
	if o := s.Observer; o != nil && o.LockWaited != nil {
		o.LockWaited(c.ctx, LockWaitedInfo{Grant: s.grantName(), Duration: s.mono() - start, Err: err})
	}
	if err != nil {
		return false, transientError{error: fmt.Errorf("pandadocauth: taking the refresh lock: %w", err), backoff: transientFailureBackoff}
	}
	if unlock == nil {
		unlock = func() {}
	}
	r.mu.Lock()
	c.unlock = unlock
	r.mu.Unlock()
	return true, nil
}

// unlock releases the lock flight c holds, for example one found lost.
func (s *TokenSource) unlock(c *flightCall) {
	r := &s.flight
	r.mu.Lock()
	unlock := c.unlock
	c.unlock = nil
	r.mu.Unlock()
	if unlock != nil {
		unlock()
	}
}

// adopt serves newer, a token another process stored, if it is usable;
// otherwise it refreshes with its refresh token.
func (s *TokenSource) adopt(ctx context.Context, c *flightCall, cur *snapshot, newer *oauth2.Token) (got, error) {
	p := &s.store
	if cur != nil && cur.tok.RefreshToken != newer.RefreshToken {
		if cur.from == fromInitial && p.synced == nil && olderLeftover(newer, cur.tok) {
			// The Store, never read before, holds a token issued before
			// Initial: an older grant's leftover rather than a successor
			// of Initial, which would have been issued after it.
			p.fallback = cur.tok
		} else {
			p.spend(cur.tok.RefreshToken) // another process rotated it
			p.fallback = nil              // and Initial's with it, if it was the fallback
		}
	}
	g := got{tok: newer, from: fromStore, outcome: OutcomeAdopted}
	if cur == nil {
		g.outcome = OutcomeLoaded
	}
	ct := s.newSnapshot(newer, fromStore)
	if cur != nil && cur.invalid && newer.AccessToken == cur.tok.AccessToken {
		g.invalid = true // the API rejected it already
	}
	now := s.mono()
	if ct.usable(now) && !g.invalid {
		p.synced = newer
		if cur != nil {
			s.logInfo("pandadocauth: adopted a token from the store")
		}
		return g, nil
	}
	if !cur.usable(now) {
		// Served, though unusable, so that its refresh token is the one
		// in memory from now on; the next step refreshes it.
		p.synced = newer
		return g, nil
	}
	// Otherwise the token in memory is still served, and newer is not
	// marked as read: if this refresh fails for a while, the next flight
	// finds it in the Store again, rather than falling back to the
	// refresh token in memory, which newer has rotated away.
	return s.refresh(ctx, c, cur, newer.RefreshToken)
}

// olderLeftover reports whether stored, found in a Store never read
// before, was issued before initial by more than leftoverSkew: an older
// grant's leftover, not a successor of initial that another process
// stored. It compares issue times (Expiry less expires_in) when both
// tokens carry their lifetime, expiries otherwise.
func olderLeftover(stored, initial *oauth2.Token) bool {
	if stored.Expiry.IsZero() || initial.Expiry.IsZero() {
		return false
	}
	a, b := stored.Expiry, initial.Expiry
	if stored.ExpiresIn > 0 && initial.ExpiresIn > 0 {
		a = a.Add(-time.Duration(stored.ExpiresIn) * time.Second)
		b = b.Add(-time.Duration(initial.ExpiresIn) * time.Second)
	}
	return a.Add(leftoverSkew).Before(b)
}

// refresh obtains a new token with the refresh token rt and saves it;
// cur is the token served (nil before the first). When rt is refused for
// good, it may be stale: another process may have rotated it since the
// Store was read, so the Store is read once more; failing that, and only
// for invalid_grant, the fallback is tried.
func (s *TokenSource) refresh(ctx context.Context, c *flightCall, cur *snapshot, rt string) (got, error) {
	p := &s.store
	g := got{}
	tok, err := s.present(ctx, c, rt, &g)
	if err != nil && g.rotated == "" && isPermanent(err) && !errors.Is(err, ErrNoRefreshToken) && !errors.Is(err, errSpent) {
		again, _, lerr := s.loadNewer(ctx, nil)
		if lerr != nil {
			if errors.Is(lerr, ErrLockLost) {
				s.unlock(c)
			}
			return g, err // no second try on a Store that cannot be read
		}
		switch {
		case again != nil && again.RefreshToken != rt && !p.isSpent(again.RefreshToken):
			p.spend(rt)
			if ct := s.newSnapshot(again, fromStore); ct.usable(s.mono()) {
				p.synced = again
				s.logInfo("pandadocauth: adopted a token from the store")
				g.tok, g.from, g.outcome = again, fromStore, OutcomeAdopted
				return g, nil
			}
			rt = again.RefreshToken
			tok, err = s.present(ctx, c, rt, &g)
		case isInvalidGrant(err) && p.fallback != nil && p.fallback.RefreshToken != rt && !p.isSpent(p.fallback.RefreshToken):
			s.logInfo("pandadocauth: the stored refresh token was refused; trying the one in memory")
			rt = p.fallback.RefreshToken
			p.fallback = nil
			tok, err = s.present(ctx, c, rt, &g)
		}
	}
	if err != nil {
		if g.rotated != "" {
			s.keepRotated(ctx, c, cur, rt, &g)
		}
		return g, err
	}
	p.fallback = nil
	if tok.RefreshToken != rt {
		p.spend(rt)
	}
	tok, g.header = compact(tok)
	g.tok, g.from, g.outcome = tok, fromEndpoint, OutcomeRefreshed
	s.save(ctx, c, &g, "pandadocauth: saving the new token failed; using it and retrying the save")
	if tok.RefreshToken == rt && p.fenced == tok {
		// Not rotated: the Store holds its refresh token already, and
		// another process may refresh it and store a real successor.
		p.fenced = nil
	}
	s.logInfo("pandadocauth: token refreshed", slog.Time("expiry", tok.Expiry), slog.Int("attempts", g.tries))
	return g, nil
}

// present refreshes with rt, unless rt is known to be spent.
func (s *TokenSource) present(ctx context.Context, c *flightCall, rt string, g *got) (*oauth2.Token, error) {
	if s.store.isSpent(rt) {
		return nil, errSpent
	}
	tok, err := s.refreshWithRetries(ctx, c, rt, g)
	if isInvalidGrant(err) && g.rotated == "" {
		s.store.refused = digest(rt)
	}
	return tok, err
}

// keepRotated keeps the refresh token found in a refused answer to a
// refresh with rt: rt may be spent, and the new one must never be thrown
// away with the answer. It is saved, and served with cur's access token
// while that is still valid (an early refresh refused so), else alone.
func (s *TokenSource) keepRotated(ctx context.Context, c *flightCall, cur *snapshot, rt string, g *got) {
	s.store.spend(rt)
	tok := &oauth2.Token{RefreshToken: g.rotated}
	g.invalid = true
	if cur != nil && cur.usable(s.mono()) {
		t := *cur.tok
		t.RefreshToken = g.rotated
		tok, g.header = compact(&t)
		g.invalid = false
	}
	g.tok, g.from, g.rotated = tok, fromEndpoint, ""
	s.save(ctx, c, g, "pandadocauth: saving the refresh token of a refused answer failed; retrying the save")
}

// save saves g.tok, a token just obtained, before it is served. A Save
// refused for a lost lock is tried once more under the lock taken again,
// at once: until it passes, the Store holds the refresh token just
// rotated away, and another process could take the free lock and present
// it. A failed Save is logged; the token is served all the same, and
// saved later.
func (s *TokenSource) save(ctx context.Context, c *flightCall, g *got, failed string) {
	g.saveErr = s.saveToken(ctx, c, g.tok, false)
	if errors.Is(g.saveErr, ErrLockLost) {
		if locked, err := s.lock(ctx, c); err == nil && locked {
			if newer, _, lerr := s.loadNewer(ctx, nil); lerr == nil && newer == nil {
				g.saveErr = s.saveToken(ctx, c, g.tok, true)
			}
		}
	}
	if g.saveErr != nil {
		s.logError(failed, slog.Any("error", g.saveErr))
	}
}

// isInvalidGrant reports whether err is the endpoint's invalid_grant:
// the refresh token is dead.
func isInvalidGrant(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == "invalid_grant"
}

// loadNewer reads the Store. It returns the stored token if another
// process stored it since this source last read or wrote the Store, and
// it is neither cur's token nor one whose refresh token was rotated away;
// stale reports a stored token whose refresh token this source has seen
// rotated away or refused, or one stored in place of cur, whose Save the
// Store fenced (a Store that went back).
func (s *TokenSource) loadNewer(ctx context.Context, cur *snapshot) (newer *oauth2.Token, stale bool, err error) {
	if s.Store == nil {
		return nil, false, nil
	}
	stored, err := s.Store.Load(ctx)
	if err != nil {
		return nil, false, err
	}
	p := &s.store
	switch {
	case stored == nil || stored.AccessToken == "" && stored.RefreshToken == "":
		return nil, false, nil
	case same(stored, p.synced):
		return nil, false, nil
	case cur != nil && same(stored, cur.tok):
		p.synced = stored
		return nil, false, nil
	case p.isSpent(stored.RefreshToken) || p.refused != 0 && digest(stored.RefreshToken) == p.refused:
		return nil, true, nil
	case cur != nil && p.fenced == cur.tok && stored.RefreshToken != cur.tok.RefreshToken:
		p.spend(stored.RefreshToken) // older than cur: never presented, even when the Store goes back to it again
		return nil, true, nil
	}
	return stored, false, nil
}

// saveToken calls Store.Save with a deadline of its own and notes what
// the Store holds.
func (s *TokenSource) saveToken(ctx context.Context, c *flightCall, t *oauth2.Token, retry bool) error {
	if s.Store == nil {
		return nil
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	err := s.Store.Save(sctx, t)
	fenced := s.store.fenced == t || !retry // every Save of t so far was fenced
	s.store.fenced = nil
	if err != nil {
		if errors.Is(err, ErrLockLost) {
			s.unlock(c) // taken again before the next try
			if fenced {
				s.store.fenced = t
			}
		}
		if o := s.Observer; o != nil && o.SaveFailed != nil {
			o.SaveFailed(c.ctx, SaveFailedInfo{Grant: s.grantName(), Retry: retry, Err: err})
		}
		return err
	}
	s.store.synced = t
	return nil
}

// testRetryBase, if set, replaces defaultRetryBase; tests shorten it.
var testRetryBase atomic.Int64

// refreshWithRetries obtains a new token with the refresh token rt, retrying
// transient failures, for flight c. It counts its requests in g, and
// stops at the first answer that, refused, carries a new refresh token
// (g.rotated): rt may be spent then.
func (s *TokenSource) refreshWithRetries(ctx context.Context, c *flightCall, rt string, g *got) (*oauth2.Token, error) {
	if rt == "" {
		return nil, fmt.Errorf("pandadocauth: token expired or rejected: %w", ErrNoRefreshToken)
	}
	clk := s.clock()
	delay := time.Duration(testRetryBase.Load())
	if delay <= 0 {
		delay = defaultRetryBase
	}
	limiter, _ := s.Store.(refreshLimiter)
	for attempt := 1; ; attempt++ {
		release := func() {}
		if limiter != nil {
			var err error
			if release, err = limiter.acquire(ctx); err != nil {
				return nil, transientError{error: err, backoff: transientFailureBackoff}
			}
		}
		g.tries++
		tok, aerr := s.Config.refreshAttempt(ctx, rt, clk.Now)
		release()
		if aerr == nil {
			return tok, nil
		}
		g.rotated = aerr.rotated
		// A 429 without Retry-After is PandaDoc's sliding window:
		// another attempt within the second cannot pass.
		if !aerr.transient || attempt >= maxAttempts || aerr.throttled && aerr.retryAfter == 0 || aerr.rotated != "" {
			s.logWarn("pandadocauth: token refresh failed", slog.Any("error", aerr.err), slog.Int("attempts", attempt))
			return nil, classify(aerr)
		}
		wait := delay/2 + rand.N(delay/2+1)
		if aerr.retryAfter > 0 {
			wait = aerr.retryAfter
		}
		if clk.Mono()+wait > c.end || ctx.Err() != nil {
			return nil, classify(aerr)
		}
		s.logInfo("pandadocauth: token refresh failed; retrying", slog.Any("error", aerr.err), slog.Int("attempt", attempt), slog.Duration("wait", wait))
		timer, stop := clk.NewTimer(wait)
		select {
		case <-ctx.Done():
			stop()
			return nil, classify(aerr)
		case <-timer:
		}
		delay *= 2
	}
}

// classify turns the last attempt's failure into the flight's error.
func classify(aerr *attemptError) error {
	if !aerr.transient {
		return aerr.err
	}
	t := transientError{error: aerr.err, throttled: aerr.throttled}
	switch {
	case aerr.retryAfter > 0:
		t.backoff = max(transientFailureBackoff, aerr.retryAfter)
	case !aerr.throttled:
		t.backoff = transientFailureBackoff
	}
	return t
}

// refreshLimiter is a Store whose refreshes take a slot first: a grant's.
type refreshLimiter interface {
	acquire(ctx context.Context) (func(), error)
}
