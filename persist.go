package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/oauth2"
)

const (
	// saveRetryInterval is how often a failed Store.Save is tried again.
	saveRetryInterval = time.Second

	// saveTimeout bounds one Store.Save.
	saveTimeout = 30 * time.Second

	// flushTimeout bounds how long Wait retries a failed Save.
	flushTimeout = 30 * time.Second
)

// persister is what a TokenSource knows of its Store. Only the flight
// reads and writes it; flights run one at a time.
type persister struct {
	// synced is the token last loaded from or saved to the Store: a
	// stored token that differs from it was written by another process
	// since, and is newer, whatever the clocks say.
	synced *oauth2.Token

	// spare is the token in memory when a stored token replaced it: a
	// grant fresh from Config.Exchange may sit next to an older grant's
	// leftover in the Store. If the stored token's refresh token is
	// refused, spare's is tried, so that grant is not lost.
	spare *oauth2.Token
}

// same reports whether a and b are the same token.
func same(a, b *oauth2.Token) bool {
	return a != nil && b != nil && a.AccessToken == b.AccessToken && a.RefreshToken == b.RefreshToken
}

// advance takes one step of flight c towards a usable token of
// generation want, from cur (nil before the first token): it saves cur
// when saveDue, adopts a token another process stored, or refreshes. It
// reports what it did.
func (s *TokenSource) advance(ctx context.Context, c *flightCall, cur *snapshot, want uint32, saveDue bool) (RefreshOutcome, error) {
	if s.Config == nil {
		return 0, errors.New("pandadocauth: TokenSource.Config is nil")
	}
	if cur == nil && s.loadInitial() {
		return OutcomeLoaded, nil
	}
	if l, ok := s.Store.(Locker); ok {
		start := s.mono()
		unlock, err := l.Lock(ctx)
		if o := s.Observer; o != nil && o.LockWaited != nil {
			o.LockWaited(c.ctx, LockWaitedInfo{Grant: s.grant(), Duration: s.mono() - start, Err: err})
		}
		if err != nil {
			return 0, fmt.Errorf("pandadocauth: taking the refresh lock: %w", err)
		}
		if unlock != nil {
			defer unlock()
		}
	}
	news, err := s.loadNews(ctx, cur)
	if err != nil {
		return 0, err
	}
	if news != nil {
		// Another process stored a token since this source last read or
		// wrote the Store: it is newer. The token in memory stays as a
		// spare in case the stored one fails.
		return s.adopt(ctx, c, cur, news)
	}
	if cur == nil {
		return 0, fmt.Errorf("pandadocauth: %w", ErrNoToken)
	}
	if saveDue {
		return s.retrySave(ctx, c, cur), nil
	}
	return s.refresh(ctx, c, cur.tok.RefreshToken)
}

// adopt serves news, a token another process stored, if it is usable;
// otherwise it refreshes with its refresh token, and then with the
// spare's.
func (s *TokenSource) adopt(ctx context.Context, c *flightCall, cur *snapshot, news *oauth2.Token) (RefreshOutcome, error) {
	if cur != nil && cur.tok.RefreshToken != "" && cur.tok.RefreshToken != news.RefreshToken {
		s.store.spare = cur.tok
	}
	ct := s.newSnapshot(news, fromStore)
	if cur != nil && cur.invalid && news.AccessToken == cur.tok.AccessToken {
		ct.invalid = true // the API rejected it already
	}
	now := s.mono()
	if ct.usable(now) {
		s.store.synced = news
		s.publish(ct)
		if cur == nil {
			return OutcomeLoaded, nil
		}
		s.logInfo("pandadocauth: adopted a token from the store")
		return OutcomeAdopted, nil
	}
	if !cur.usable(now) {
		// Served, though unusable, so that its refresh token is the one
		// in memory from now on, whatever this refresh does.
		s.store.synced = news
		s.publish(ct)
	}
	// Otherwise the token in memory is still served, and news is not
	// marked as read: if this refresh fails for a while, the next flight
	// finds it in the Store again, rather than falling back to the
	// refresh token in memory, which news may have rotated away.
	return s.refresh(ctx, c, news.RefreshToken)
}

// refresh obtains a new token with the refresh token rt, saves it and
// serves it. When rt is refused for good, it may be stale: another
// process may have rotated it since the Store was read, so the Store is
// read once more; failing that, the spare is tried.
func (s *TokenSource) refresh(ctx context.Context, c *flightCall, rt string) (RefreshOutcome, error) {
	tok, err := s.refreshToken(ctx, c, rt)
	if err != nil && isPermanent(err) {
		if again, lerr := s.loadNews(ctx, nil); lerr == nil && again != nil && again.RefreshToken != rt {
			if ct := s.newSnapshot(again, fromStore); ct.usable(s.mono()) {
				s.store.synced = again
				s.publish(ct)
				s.logInfo("pandadocauth: adopted a token from the store")
				return OutcomeAdopted, nil
			}
			tok, err = s.refreshToken(ctx, c, again.RefreshToken)
		} else if spare := s.store.spare; spare != nil && spare.RefreshToken != rt {
			s.logInfo("pandadocauth: the stored refresh token was refused; trying the one in memory")
			tok, err = s.refreshToken(ctx, c, spare.RefreshToken)
		}
	}
	if err != nil {
		return 0, err
	}
	s.store.spare = nil
	ct := s.newSnapshot(tok, fromEndpoint)
	s.save(ctx, c, ct)
	s.publish(ct)
	s.logInfo("pandadocauth: token refreshed", slog.Time("expiry", tok.Expiry), slog.Int("attempts", c.attempts))
	return OutcomeRefreshed, nil
}

// loadNews reads the Store and returns the stored token if another
// process stored it since this source last read or wrote the Store, and
// it is not cur's token; else nil. A failed read is an error only when
// there is no token in memory to go on with.
func (s *TokenSource) loadNews(ctx context.Context, cur *snapshot) (*oauth2.Token, error) {
	if s.Store == nil {
		return nil, nil
	}
	stored, err := s.Store.Load(ctx)
	if err != nil {
		if cur == nil {
			return nil, fmt.Errorf("pandadocauth: loading token from store: %w", err)
		}
		s.logWarn("pandadocauth: loading token from store failed; using the cached token", slog.Any("error", err))
		return nil, nil
	}
	if stored == nil || stored.AccessToken == "" && stored.RefreshToken == "" || same(stored, s.store.synced) {
		return nil, nil
	}
	if cur != nil && same(stored, cur.tok) {
		s.store.synced = stored
		return nil, nil
	}
	return stored, nil
}

// save saves ct's token before it is served. A failed Save is logged and
// retried later (the token is served all the same, so the newest refresh
// token is never dropped).
func (s *TokenSource) save(ctx context.Context, c *flightCall, ct *snapshot) {
	if s.Store == nil {
		return
	}
	if err := s.saveToken(ctx, c, ct.tok, false); err != nil {
		ct.unsaved = true
		s.logError("pandadocauth: saving the new token failed; using it and retrying the save", slog.Any("error", err))
	}
}

// retrySave saves cur, whose Save failed.
func (s *TokenSource) retrySave(ctx context.Context, c *flightCall, cur *snapshot) RefreshOutcome {
	if err := s.saveToken(ctx, c, cur.tok, true); err != nil {
		s.logError("pandadocauth: saving the token failed again", slog.Any("error", err))
		return OutcomeUnchanged
	}
	s.mark(cur, func(c *snapshot) { c.unsaved = false })
	s.logInfo("pandadocauth: token saved")
	return OutcomeSaved
}

// saveToken calls Store.Save with a deadline of its own, and notes what
// the Store holds, or when to try again.
func (s *TokenSource) saveToken(ctx context.Context, c *flightCall, t *oauth2.Token, retry bool) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	err := s.Store.Save(sctx, t)
	r := &s.flight
	r.mu.Lock()
	if err != nil {
		r.troubled().saveNext = s.mono() + saveRetryInterval
	} else if t := r.trouble; t != nil {
		t.saveNext = 0
		if *t == (trouble{}) {
			r.trouble = nil
		}
	}
	r.mu.Unlock()
	if err != nil {
		if o := s.Observer; o != nil && o.SaveFailed != nil {
			o.SaveFailed(c.ctx, SaveFailedInfo{Grant: s.grant(), Retry: retry, Err: err})
		}
		return err
	}
	s.store.synced = t
	return nil
}
