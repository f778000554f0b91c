package pandadocauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

const (
	// DefaultEarlyRefresh is the early-refresh window used when
	// TokenSource.EarlyRefresh is 0.
	DefaultEarlyRefresh = 5 * time.Minute

	// blockingSkew is how long before Expiry a token stops being served
	// and callers wait for a new one, so that a token is not sent just
	// as it expires.
	blockingSkew = 10 * time.Second

	// refreshTimeout bounds one shared refresh, all attempts included.
	// It runs on a context detached from the callers', so it needs a
	// deadline of its own.
	refreshTimeout = time.Minute

	// maxAttempts is how many token-endpoint requests one refresh makes
	// at most when failures are transient.
	maxAttempts = 3

	// defaultRetryBase is the first back-off between attempts; it doubles
	// after each one and gets jitter.
	defaultRetryBase = 250 * time.Millisecond

	// permanentFailureBackoff is how long a permanent refresh failure
	// (invalid_grant, invalid_client, a malformed answer) is remembered:
	// calls fail fast with it instead of asking the endpoint again.
	permanentFailureBackoff = 5 * time.Second

	// transientFailureBackoff is the same for a refresh whose every
	// attempt failed transiently.
	transientFailureBackoff = time.Second

	// minBackgroundBackoff and maxBackgroundBackoff bound the wait after
	// a failed early refresh before the next one.
	minBackgroundBackoff = 5 * time.Second
	maxBackgroundBackoff = 2 * time.Minute

	// saveRetryInterval is how often a failed Store.Save is tried again.
	saveRetryInterval = time.Second

	// saveTimeout bounds a Save retried in the background.
	saveTimeout = 30 * time.Second
)

// TokenSource is the PandaDoc token source for one grant (one user's or
// one workspace's authorization of the application). It caches the token,
// refreshes it shortly before it expires while the old one is still being
// served, deduplicates concurrent refreshes, and saves every new token to
// Store before it is used.
//
// Set the fields before first use and do not change them afterwards; a
// TokenSource must not be copied after first use. Token, TokenContext
// and Invalidate are safe for concurrent use by multiple goroutines.
type TokenSource struct {
	// Config is the application the grant belongs to. Required.
	Config *Config

	// Initial is the token to start from, for example one saved earlier
	// or just returned by Config.Exchange. It may be nil when Store holds
	// the token. When set, it is used first and Store is not read until
	// a refresh is due.
	Initial *oauth2.Token

	// Store, if set, persists the grant's token. Every new token is
	// saved before any request uses it, the Store is read again before
	// every refresh (a valid token stored by another process is adopted
	// instead of refreshing), and if the Store also implements Locker,
	// refreshes across processes are serialised with it.
	Store Store

	// EarlyRefresh is how long before Expiry a background refresh starts
	// while the current token keeps being served. 0 means
	// DefaultEarlyRefresh; a negative value turns early refresh off, so
	// the token is refreshed only when it expires. A token whose lifetime
	// is shorter than twice the window gets half its lifetime instead.
	EarlyRefresh time.Duration

	// Logger, if set, receives refreshes, failures and Store problems.
	// Nil means silent. Token values are never logged.
	Logger *slog.Logger

	// cur is the token served, nil until first use. It is read without
	// locks on every request.
	cur atomic.Pointer[cachedToken]

	// group deduplicates refreshes: one flight at a time, shared by all
	// waiters.
	group singleflight.Group

	// bgRunning is set while an early refresh runs in the background.
	bgRunning atomic.Bool

	// bgNext is the earliest next early refresh after a failed one, a
	// monotonic reading (0: none), so that the early window needs no lock.
	bgNext atomic.Int64

	// mu guards the fields below it.
	mu         sync.Mutex
	failErr    error         // last refresh failure, served until failUntil
	failUntil  time.Time     // end of the fail-fast back-off
	bgBackoff  time.Duration // wait after the last failed early refresh
	saving     bool          // a Save retry runs
	saveNext   time.Time     // earliest next Save retry
	rejections int           // tokens rejected by the API since one last worked
	work       int           // refreshes and Save retries under way
	idle       chan struct{} // closed when work drops to 0; nil if no one waits

	// saveMu is held across every Store.Save and the publication of the
	// token saved, so that a retried Save of an older token can never
	// overwrite a newer one.
	saveMu sync.Mutex

	// Test hooks: the clock and the first retry back-off.
	now       func() time.Time
	retryBase time.Duration
}

var _ oauth2.TokenSource = (*TokenSource)(nil)

// cachedToken is an immutable snapshot of the token served, with the
// derived values requests need, so the hot path computes nothing.
type cachedToken struct {
	tok      *oauth2.Token
	header   string        // "Bearer <access token>", built once per token
	early    time.Duration // background refresh starts here (monoNow)
	hard     time.Duration // callers wait for a new token from here (monoNow)
	noExpiry bool          // zero Expiry: valid until the API answers 401
	invalid  bool          // rejected by the API (Invalidate)
	unsaved  bool          // Store.Save failed; retried on later calls
	// state is shared by the snapshots of one token.
	state *tokenState
}

// tokenState is what is learnt about a token while it is used.
type tokenState struct {
	obtained time.Time   // when it came from the endpoint; zero if loaded
	worked   atomic.Bool // the API accepted it at least once
}

// usable reports whether ct may be sent at now, a monoNow reading.
func (ct *cachedToken) usable(now time.Duration) bool {
	return ct != nil && !ct.invalid && (ct.noExpiry || now < ct.hard)
}

// fresh reports whether ct is usable and not yet due for an early
// refresh.
func (ct *cachedToken) fresh(now time.Duration) bool {
	return ct != nil && !ct.invalid && (ct.noExpiry || now < ct.early)
}

// monoBase anchors the monotonic readings token deadlines are kept in.
var monoBase = time.Now()

// monoNow reads s's clock as a duration since monoBase. On the hot path
// it is the one clock read: time.Since reads only the monotonic clock,
// where time.Now reads the wall clock too, at about twice the cost.
func (s *TokenSource) monoNow() time.Duration {
	if s.now != nil {
		return s.now().Sub(monoBase)
	}
	return time.Since(monoBase)
}

// mono converts a wall-clock deadline to a monoNow reading.
func (s *TokenSource) mono(t time.Time) time.Duration {
	now, d := s.monoNow(), t.Sub(s.clock())
	switch {
	case d > 0 && now > math.MaxInt64-d:
		return math.MaxInt64
	case d < 0 && now < math.MinInt64-d:
		return math.MinInt64
	}
	return now + d
}

// String describes s without any secret.
func (s *TokenSource) String() string {
	state := "unused"
	if ct := s.cur.Load(); ct != nil {
		switch {
		case ct.invalid:
			state = "invalidated"
		case ct.noExpiry:
			state = "valid, no expiry"
		default:
			state = "expires " + ct.tok.Expiry.UTC().Format(time.RFC3339)
		}
	}
	clientID := ""
	if s.Config != nil {
		clientID = s.Config.ClientID
	}
	return fmt.Sprintf("pandadocauth.TokenSource{ClientID: %q, token: %s}", clientID, state)
}

// GoString is like String, for the %#v verb.
func (s *TokenSource) GoString() string { return s.String() }

// LogValue is like String, for log/slog.
func (s *TokenSource) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON encodes String, so that no token or secret is encoded.
func (s *TokenSource) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Token returns a valid token, refreshing it if needed. It implements
// oauth2.TokenSource; prefer TokenContext, which can be cancelled. The
// returned token is shared and must not be modified.
func (s *TokenSource) Token() (*oauth2.Token, error) {
	return s.TokenContext(context.Background())
}

// TokenContext returns a valid token. A cached token is returned at once,
// without locks, network or allocation. Inside the early-refresh window
// the cached token is still returned at once while one background refresh
// runs. Only when the token has expired, or was invalidated, does the
// caller wait for a refresh, shared with every other waiter; if ctx ends
// first TokenContext returns an error satisfying errors.Is(err,
// ctx.Err()) and the refresh goes on for the others. The returned token
// is shared and must not be modified.
func (s *TokenSource) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	ct, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	return ct.tok, nil
}

// current is TokenContext returning the cached snapshot, whose header the
// Transport uses.
func (s *TokenSource) current(ctx context.Context) (*cachedToken, error) {
	ct := s.cur.Load()
	now := s.monoNow()
	if !ct.usable(now) {
		var err error
		if ct, err = s.await(ctx, ct, false); err != nil {
			return nil, err
		}
	}
	if ct.unsaved {
		s.retrySave(ctx, ct)
	}
	if !ct.noExpiry && now >= ct.early {
		s.refreshInBackground(ctx, ct, now)
	}
	return ct, nil
}

// Refresh obtains a new token now, even if the current one is still
// valid, and returns it; the new token is saved to Store before it is
// returned. It shares a refresh already under way instead of starting
// another, and if the Store holds a newer valid token than the one
// served, that token is adopted instead. Like TokenContext, it returns
// when ctx ends, and the refresh goes on for other callers.
func (s *TokenSource) Refresh(ctx context.Context) (*oauth2.Token, error) {
	seen := s.cur.Load()
	if seen == nil {
		// Load Initial or the Store first: they hold the refresh token.
		ct, err := s.await(ctx, nil, false)
		if err != nil {
			return nil, err
		}
		if !ct.state.obtained.IsZero() {
			return ct.tok, nil // loading it took a refresh already
		}
		seen = s.cur.Load()
	}
	ct, err := s.await(ctx, seen, true)
	if err == nil && ct.tok.AccessToken == seen.tok.AccessToken {
		// Joined a flight that had no reason to refresh: force one.
		ct, err = s.await(ctx, ct, true)
	}
	if err != nil {
		return nil, err
	}
	return ct.tok, nil
}

// Wait blocks until the work s does in the background has finished: an
// early refresh, a retried Save, or a refresh whose callers have all left.
// A short-lived program calls it before exiting, so that a refresh
// PandaDoc has already answered (rotating the refresh token) is saved
// rather than lost.
func (s *TokenSource) Wait() {
	s.mu.Lock()
	if s.work == 0 {
		s.mu.Unlock()
		return
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	s.mu.Unlock()
	<-idle
}

// startWork and endWork count the work Wait waits for.
func (s *TokenSource) startWork() {
	s.mu.Lock()
	s.work++
	s.mu.Unlock()
}

func (s *TokenSource) endWork() {
	s.mu.Lock()
	s.work--
	if s.work == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
	s.mu.Unlock()
}

// Invalidate tells s that the API rejected t (for example with 401). If
// t is still the token being served, the next call refreshes; if a newer
// token has replaced it already, nothing happens, so a late rejection
// cannot throw away a newer token. It reports whether t was invalidated.
func (s *TokenSource) Invalidate(t *oauth2.Token) bool {
	if t == nil {
		return false
	}
	return s.invalidate(t.AccessToken)
}

// accepted records that the API accepted ct's token.
func (s *TokenSource) accepted(ct *cachedToken) {
	if ct.state.worked.Load() || !ct.state.worked.CompareAndSwap(false, true) {
		return
	}
	s.mu.Lock()
	s.rejections = 0
	s.mu.Unlock()
}

// rejected handles a 401 to a request that carried ct's token. It
// invalidates the token if it is still current and reports whether a new
// token is worth waiting for. When token after token is rejected without
// one ever working (a suspended account, a revoked grant that still
// refreshes), refreshing on every request would hammer the endpoint:
// such a token is kept for a back-off that doubles from a second up to a
// minute after it was obtained, and the 401 is returned meanwhile.
func (s *TokenSource) rejected(ct *cachedToken) bool {
	if cur := s.cur.Load(); cur != nil && !cur.invalid && cur.tok.AccessToken != ct.tok.AccessToken {
		return true // a newer token is already served
	}
	if !ct.state.worked.Load() {
		s.mu.Lock()
		n := s.rejections
		s.mu.Unlock()
		if n > 0 && s.clock().Before(ct.state.obtained.Add(rejectionBackoff(n))) {
			return false
		}
	}
	if s.invalidate(ct.tok.AccessToken) {
		s.mu.Lock()
		s.rejections++
		s.mu.Unlock()
	}
	return true
}

// rejectionBackoff is how long a token is kept after n tokens in a row
// were rejected without one working.
func rejectionBackoff(n int) time.Duration {
	return min(time.Second<<min(n-1, 6), time.Minute)
}

func (s *TokenSource) invalidate(accessToken string) bool {
	for {
		ct := s.cur.Load()
		if ct == nil || ct.invalid || ct.tok.AccessToken != accessToken {
			return false
		}
		next := *ct
		next.invalid = true
		if s.cur.CompareAndSwap(ct, &next) {
			s.logInfo("pandadocauth: token rejected by the API; will refresh")
			return true
		}
	}
}

func (s *TokenSource) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

func (s *TokenSource) earlyWindow() time.Duration {
	if s.EarlyRefresh != 0 {
		return s.EarlyRefresh
	}
	return DefaultEarlyRefresh
}

// snapshot builds the cached form of t.
func (s *TokenSource) snapshot(t *oauth2.Token) *cachedToken {
	// A token saved with only its refresh token has nothing to send.
	ct := &cachedToken{tok: t, header: "Bearer " + t.AccessToken, invalid: t.AccessToken == "", state: &tokenState{}}
	if t.Expiry.IsZero() {
		ct.noExpiry = true
		return ct
	}
	window := s.earlyWindow()
	if window < 0 {
		skew := blockingSkew
		if lifetime := time.Duration(t.ExpiresIn) * time.Second; lifetime > 0 && lifetime < 2*skew {
			skew = lifetime / 2
		}
		ct.hard = s.mono(t.Expiry.Add(-skew))
		ct.early = ct.hard
		return ct
	}
	// The lifetime is known from expires_in, which tokens from the
	// endpoint carry (and FileStore keeps). A short-lived token gets half
	// its lifetime as window, so a new token is never due at once.
	if lifetime := time.Duration(t.ExpiresIn) * time.Second; lifetime > 0 && lifetime < 2*window {
		window = lifetime / 2
	}
	skew := min(blockingSkew, window/2)
	ct.early = s.mono(t.Expiry.Add(-window))
	ct.hard = s.mono(t.Expiry.Add(-skew))
	return ct
}

// recentFailure returns the remembered refresh failure, if its back-off
// has not ended.
func (s *TokenSource) recentFailure(now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failErr != nil && now.Before(s.failUntil) {
		return s.failErr
	}
	return nil
}

func (s *TokenSource) rememberFailure(err error, now time.Time) {
	d := permanentFailureBackoff
	var t transientError
	if errors.As(err, &t) {
		d = max(transientFailureBackoff, t.retryAfter)
	}
	s.mu.Lock()
	s.failErr, s.failUntil = err, now.Add(d)
	s.mu.Unlock()
}

func (s *TokenSource) clearFailure() {
	s.mu.Lock()
	s.failErr, s.failUntil = nil, time.Time{}
	s.mu.Unlock()
}

// flight obtains a token to replace seen, the snapshot the caller found
// unusable (nil before first use). It runs alone: the singleflight group
// in await admits one flight at a time.
func (s *TokenSource) flight(ctx context.Context, seen *cachedToken, background bool) (*cachedToken, error) {
	if s.Config == nil {
		return nil, errors.New("pandadocauth: TokenSource.Config is nil")
	}
	now := s.monoNow()
	ok := (*cachedToken).usable
	if background {
		ok = (*cachedToken).fresh
	}
	cur := s.cur.Load()
	if cur != seen && ok(cur, now) {
		return cur, nil // refreshed while the caller was arriving
	}
	if cur == nil && s.Initial != nil {
		t := *s.Initial
		cur = s.snapshot(&t)
		s.cur.Store(cur)
		if ok(cur, now) {
			return cur, nil
		}
	}
	if err := s.recentFailure(s.clock()); err != nil {
		return nil, err
	}
	if l, isLocker := s.Store.(Locker); isLocker {
		unlock, err := l.Lock(ctx)
		if err != nil {
			return nil, fmt.Errorf("pandadocauth: taking the refresh lock: %w", err)
		}
		if unlock != nil {
			defer unlock()
		}
	}
	base, err := s.fromStore(ctx, cur, ok)
	if err != nil || base != cur && ok(base, s.monoNow()) {
		return base, err
	}
	ct, err := s.refresh(ctx, base)
	if err != nil && isPermanent(err) {
		// The refresh token may be stale. Another process may have
		// rotated it since the Store was read, so look there once more;
		// or the Store held an older grant than the one in memory, so
		// try that one.
		if again, lerr := s.fromStore(ctx, base, ok); lerr == nil && again != base && again.tok.RefreshToken != base.tok.RefreshToken {
			if ok(again, s.monoNow()) {
				return again, nil
			}
			ct, err = s.refresh(ctx, again)
		} else if cur != nil && cur.tok.RefreshToken != "" && cur.tok.RefreshToken != base.tok.RefreshToken {
			ct, err = s.refresh(ctx, cur)
		}
	}
	if err != nil {
		s.rememberFailure(err, s.clock())
		return nil, err
	}
	s.clearFailure()
	return ct, nil
}

// fromStore reads the Store and returns what the next step should start
// from: a stored token that differs from cur (another process refreshed
// or rotated; it is published if ok), else cur. When cur's last Save
// failed, cur is newer than anything stored and the Store is not read.
func (s *TokenSource) fromStore(ctx context.Context, cur *cachedToken, ok func(*cachedToken, time.Duration) bool) (*cachedToken, error) {
	if s.Store == nil || cur != nil && cur.unsaved {
		if cur == nil {
			return nil, fmt.Errorf("pandadocauth: %w", ErrNoToken)
		}
		return cur, nil
	}
	stored, err := s.Store.Load(ctx)
	if err != nil {
		if cur == nil {
			return nil, fmt.Errorf("pandadocauth: loading token from store: %w", err)
		}
		s.logWarn("pandadocauth: loading token from store failed; using the cached token", slog.Any("error", err))
		return cur, nil
	}
	if stored == nil || stored.AccessToken == "" && stored.RefreshToken == "" {
		if cur == nil {
			return nil, fmt.Errorf("pandadocauth: %w", ErrNoToken)
		}
		return cur, nil
	}
	if cur != nil && stored.AccessToken == cur.tok.AccessToken && stored.RefreshToken == cur.tok.RefreshToken {
		return cur, nil
	}
	if cur != nil && !cur.noExpiry && !stored.Expiry.IsZero() && stored.Expiry.Before(cur.tok.Expiry) {
		return cur, nil // the Store is behind: an older grant, or an older token of this one
	}
	now := s.monoNow()
	ct := s.snapshot(stored)
	if cur != nil && stored.AccessToken == cur.tok.AccessToken && cur.invalid {
		ct.invalid = true // the API rejected it already
	}
	if ok(ct, now) {
		ct.state.obtained = s.clock()
		s.cur.Store(ct)
		s.logInfo("pandadocauth: adopted a token from the store")
	}
	return ct, nil
}

// refresh obtains a new token with base's refresh token, retrying
// transient failures, saves it and publishes it.
func (s *TokenSource) refresh(ctx context.Context, base *cachedToken) (*cachedToken, error) {
	if base == nil || base.tok.RefreshToken == "" {
		return nil, fmt.Errorf("pandadocauth: token expired or rejected: %w", ErrNoRefreshToken)
	}
	rt := base.tok.RefreshToken
	delay := s.retryBase
	if delay <= 0 {
		delay = defaultRetryBase
	}
	for attempt := 1; ; attempt++ {
		tok, aerr := s.Config.refreshAttempt(ctx, rt, s.clock)
		if aerr == nil {
			ct := s.snapshot(tok)
			ct.state.obtained = s.clock()
			s.saveAndPublish(ctx, ct)
			s.logInfo("pandadocauth: token refreshed", slog.Time("expiry", tok.Expiry), slog.Int("attempts", attempt))
			return ct, nil
		}
		if !aerr.transient || attempt >= maxAttempts {
			s.logWarn("pandadocauth: token refresh failed", slog.Any("error", aerr.err), slog.Int("attempts", attempt))
			return nil, classify(aerr)
		}
		wait := delay/2 + rand.N(delay/2+1)
		if aerr.retryAfter > 0 {
			wait = aerr.retryAfter
		}
		if deadline, has := ctx.Deadline(); has && time.Until(deadline) < wait {
			return nil, classify(aerr)
		}
		s.logInfo("pandadocauth: token refresh failed; retrying", slog.Any("error", aerr.err), slog.Int("attempt", attempt), slog.Duration("wait", wait))
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, classify(aerr)
		case <-timer.C:
		}
		delay *= 2
	}
}

// saveAndPublish saves ct's token to the Store, then serves it. A failed
// Save is logged and retried later; the token is served all the same, so
// the newest refresh token is never dropped.
func (s *TokenSource) saveAndPublish(ctx context.Context, ct *cachedToken) {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	if s.Store != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
		err := s.Store.Save(sctx, ct.tok)
		cancel()
		if err != nil {
			ct.unsaved = true
			s.mu.Lock()
			s.saveNext = s.clock().Add(saveRetryInterval)
			s.mu.Unlock()
			s.logError("pandadocauth: saving the new token failed; using it and retrying the save", slog.Any("error", err))
		}
	}
	s.cur.Store(ct)
}

// transientError marks a refresh failure that may pass by itself.
type transientError struct {
	error
	retryAfter time.Duration // the endpoint's Retry-After, 0 if none
}

func (e transientError) Unwrap() error { return e.error }

func classify(aerr *attemptError) error {
	if aerr.transient {
		return transientError{aerr.err, aerr.retryAfter}
	}
	return aerr.err
}

func isPermanent(err error) bool {
	var t transientError
	return !errors.As(err, &t)
}

// retrySave tries again, in the background and at most once per
// saveRetryInterval, to save a token whose Save failed.
func (s *TokenSource) retrySave(ctx context.Context, ct *cachedToken) {
	now := s.clock()
	s.mu.Lock()
	if s.saving || now.Before(s.saveNext) {
		s.mu.Unlock()
		return
	}
	s.saving, s.saveNext = true, now.Add(saveRetryInterval)
	s.mu.Unlock()
	s.startWork()
	go func() {
		defer s.endWork()
		defer func() {
			s.mu.Lock()
			s.saving = false
			s.mu.Unlock()
		}()
		s.saveMu.Lock()
		defer s.saveMu.Unlock()
		if cur := s.cur.Load(); cur == nil || cur.tok != ct.tok {
			return // a newer token replaced it, and was saved itself
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
		defer cancel()
		if err := s.Store.Save(sctx, ct.tok); err != nil {
			s.logError("pandadocauth: saving the token failed again", slog.Any("error", err))
			return
		}
		saved := *ct
		saved.unsaved = false
		s.cur.CompareAndSwap(ct, &saved)
		s.logInfo("pandadocauth: token saved")
	}()
}

func (s *TokenSource) logInfo(msg string, attrs ...slog.Attr) {
	s.log(slog.LevelInfo, msg, attrs)
}

func (s *TokenSource) logWarn(msg string, attrs ...slog.Attr) {
	s.log(slog.LevelWarn, msg, attrs)
}

func (s *TokenSource) logError(msg string, attrs ...slog.Attr) {
	s.log(slog.LevelError, msg, attrs)
}

func (s *TokenSource) log(level slog.Level, msg string, attrs []slog.Attr) {
	if s.Logger != nil {
		s.Logger.LogAttrs(context.Background(), level, msg, attrs...)
	}
}
