package pandadocauth

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Refresh coordination.
//
// golang.org/x/oauth2's ReuseTokenSource holds a mutex across the refresh
// and takes it on every read. Waiters then queue behind the one doing the
// network call; none can give up early (Token takes no context), and when
// the refresh fails each waiter in turn makes its own request, so N
// waiters on a failing endpoint cause N requests.
//
// Here reads never lock: the token is an atomic pointer. A refresh is a
// singleflight "flight": the first caller starts it, later callers join
// it and share its result, success or failure, so N waiters cause one
// request. The flight runs on a context detached from the callers'
// (context.WithoutCancel, keeping their values) with a deadline of its
// own, and each caller waits on its own context: a caller whose context
// ends leaves at once, and the refresh goes on for the others instead of
// being cancelled under them. A failure is also remembered for a short
// back-off, so callers arriving after a failed flight fail fast instead
// of starting another.

// flightKey is the singleflight key: one grant, one flight.
const flightKey = "refresh"

// await waits for a flight that replaces seen, the snapshot the caller
// found unusable (or, with force, wants replaced), or until ctx ends.
func (s *TokenSource) await(ctx context.Context, seen *cachedToken, force bool) (*cachedToken, error) {
	for round := 0; ; round++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("pandadocauth: waiting for a token: %w", err)
		}
		if err := s.recentFailure(s.clock()); err != nil {
			return nil, err
		}
		// Counted from here, not from inside the flight, whose goroutine
		// may not have started when a leaving caller returns.
		s.startWork()
		ch := s.group.DoChan(flightKey, func() (any, error) {
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
			defer cancel()
			return s.flight(fctx, seen, force)
		})
		var ct *cachedToken
		select {
		case res := <-ch:
			s.endWork()
			if res.Err != nil {
				return nil, res.Err
			}
			ct = res.Val.(*cachedToken)
		case <-ctx.Done():
			go func() { <-ch; s.endWork() }()
			return nil, fmt.Errorf("pandadocauth: waiting for a token refresh: %w", ctx.Err())
		}
		// A caller that joined a flight as it was finishing (saving,
		// unlocking) may be handed the token the flight published, which
		// the API has rejected in the meantime. Wait for the next flight
		// instead, a bounded number of times.
		cur := s.cur.Load()
		switch {
		case cur == nil || cur == ct:
		case cur.tok.AccessToken != ct.tok.AccessToken && cur.usable(s.monoNow()):
			return cur, nil // newer still
		case cur.invalid && cur.tok.AccessToken == ct.tok.AccessToken && round < maxRejoins:
			seen = cur
			continue
		}
		return ct, nil
	}
}

// maxRejoins bounds how often await waits for another flight because
// the result of the last one was rejected meanwhile.
const maxRejoins = 2

// refreshInBackground starts an early refresh of seen, which is still
// valid, unless one is running or the back-off after a failed one has
// not ended. The caller does not wait; the refresh runs on ctx's values,
// not its cancellation.
func (s *TokenSource) refreshInBackground(ctx context.Context, seen *cachedToken, now time.Duration) {
	if next := s.bgNext.Load(); next != 0 && int64(now) < next || !s.bgRunning.CompareAndSwap(false, true) {
		return
	}
	s.startWork()
	go func() {
		defer s.endWork()
		defer s.bgRunning.Store(false)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
		defer cancel()
		_, err, _ := s.group.Do(flightKey, func() (any, error) {
			return s.flight(fctx, seen, true)
		})
		s.mu.Lock()
		if err == nil {
			s.bgBackoff = 0
			s.mu.Unlock()
			s.bgNext.Store(0)
			return
		}
		s.bgBackoff = min(max(2*s.bgBackoff, minBackgroundBackoff), maxBackgroundBackoff)
		backoff := s.bgBackoff
		s.mu.Unlock()
		s.bgNext.Store(int64(s.monoNow() + backoff))
		s.logWarn("pandadocauth: early refresh failed; serving the current token", slog.Any("error", err), slog.Duration("retry_in", backoff))
	}()
}
