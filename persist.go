package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
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

// persister is what a TokenSource knows of its Store.
type persister struct {
	// synced is the token last loaded from or saved to the Store: a
	// stored token that differs from it was written by another process
	// since, and is newer, whatever the clocks say. Only the flight
	// reads and writes it; flights run one at a time.
	synced *oauth2.Token

	// spare is the token in memory when a stored token replaced it: a
	// grant fresh from Config.Exchange may sit next to an older grant's
	// leftover in the Store. If the stored token's refresh token is
	// refused, spare's is tried, so that grant is not lost. Only the
	// flight reads and writes it.
	spare *oauth2.Token

	// saveNext is the Mono reading from which a failed Save is retried.
	saveNext atomic.Int64
}

// same reports whether a and b are the same token.
func same(a, b *oauth2.Token) bool {
	return a != nil && b != nil && a.AccessToken == b.AccessToken && a.RefreshToken == b.RefreshToken
}

// advance takes one step of the flight towards a usable token of
// generation want, from cur (nil before the first token): it saves cur
// when saveDue, adopts a token another process stored, or refreshes. It
// reports whether a new token is served.
func (s *TokenSource) advance(ctx context.Context, cur *snapshot, want uint64, saveDue bool) (bool, error) {
	if s.Config == nil {
		return false, errors.New("pandadocauth: TokenSource.Config is nil")
	}
	if cur == nil && s.loadInitial() {
		return true, nil
	}
	if l, ok := s.Store.(Locker); ok {
		unlock, err := l.Lock(ctx)
		if err != nil {
			return false, fmt.Errorf("pandadocauth: taking the refresh lock: %w", err)
		}
		if unlock != nil {
			defer unlock()
		}
	}
	news, err := s.loadNews(ctx, cur)
	if err != nil {
		return false, err
	}
	if news != nil {
		// Another process stored a token since this source last read or
		// wrote the Store: it is newer. The token in memory stays as a
		// spare in case the stored one fails.
		return s.adopt(ctx, cur, news)
	}
	if cur == nil {
		return false, fmt.Errorf("pandadocauth: %w", ErrNoToken)
	}
	if saveDue {
		s.retrySave(ctx, cur)
		return false, nil
	}
	return s.refresh(ctx, cur.tok.RefreshToken)
}

// adopt serves news, a token another process stored, if it is usable;
// otherwise it refreshes with its refresh token, and then with cur's.
func (s *TokenSource) adopt(ctx context.Context, cur *snapshot, news *oauth2.Token) (bool, error) {
	s.store.synced = news
	if cur != nil && cur.tok.RefreshToken != "" && cur.tok.RefreshToken != news.RefreshToken {
		s.store.spare = cur.tok
	}
	ct := s.newSnapshot(news, fromStore)
	if cur != nil && cur.invalid && news.AccessToken == cur.tok.AccessToken {
		ct.invalid = true // the API rejected it already
	}
	if ct.usable(s.mono()) {
		s.publish(ct)
		s.logInfo("pandadocauth: adopted a token from the store")
		return true, nil
	}
	return s.refresh(ctx, news.RefreshToken)
}

// refresh obtains a new token with the refresh token rt, saves it and
// serves it. When rt is refused for good, it may be stale: another
// process may have rotated it since the Store was read, so the Store is
// read once more; failing that, the spare is tried.
func (s *TokenSource) refresh(ctx context.Context, rt string) (bool, error) {
	res, err := s.refreshToken(ctx, rt)
	if err != nil && isPermanent(err) {
		if again, lerr := s.loadNews(ctx, nil); lerr == nil && again != nil && again.RefreshToken != rt {
			s.store.synced = again
			if ct := s.newSnapshot(again, fromStore); ct.usable(s.mono()) {
				s.publish(ct)
				s.logInfo("pandadocauth: adopted a token from the store")
				return true, nil
			}
			res, err = s.refreshToken(ctx, again.RefreshToken)
		} else if spare := s.store.spare; spare != nil && spare.RefreshToken != rt {
			s.logInfo("pandadocauth: the stored refresh token was refused; trying the one in memory")
			res, err = s.refreshToken(ctx, spare.RefreshToken)
		}
	}
	if err != nil {
		return false, err
	}
	s.store.spare = nil
	ct := s.newSnapshot(res.tok, fromEndpoint)
	s.save(ctx, ct)
	s.publish(ct)
	s.logInfo("pandadocauth: token refreshed", slog.Time("expiry", res.tok.Expiry), slog.Int("attempts", res.attempts))
	return true, nil
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
func (s *TokenSource) save(ctx context.Context, ct *snapshot) {
	if s.Store == nil {
		return
	}
	if err := s.saveToken(ctx, ct.tok); err != nil {
		ct.unsaved = true
		s.logError("pandadocauth: saving the new token failed; using it and retrying the save", slog.Any("error", err))
	}
}

// retrySave saves cur, whose Save failed.
func (s *TokenSource) retrySave(ctx context.Context, cur *snapshot) {
	if err := s.saveToken(ctx, cur.tok); err != nil {
		s.logError("pandadocauth: saving the token failed again", slog.Any("error", err))
		return
	}
	s.mark(cur, func(c *snapshot) { c.unsaved = false })
	s.logInfo("pandadocauth: token saved")
}

// saveToken calls Store.Save with a deadline of its own, and notes what
// the Store holds.
func (s *TokenSource) saveToken(ctx context.Context, t *oauth2.Token) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	if err := s.Store.Save(sctx, t); err != nil {
		s.store.saveNext.Store(int64(s.mono() + saveRetryInterval))
		return err
	}
	s.store.synced = t
	return nil
}
