package pandadocauth

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// TokenSource is the PandaDoc token source for one grant (one user's or
// one workspace's authorization of the application). It caches the token,
// refreshes it shortly before it expires while the old one is still being
// served, deduplicates concurrent refreshes, and saves every new token to
// Store before it is used.
//
// The tokens a TokenSource obtains from the endpoint carry no Extra
// values (oauth2.Token.Extra returns nil): keeping the endpoint's raw
// answer beside each grant's token would double its memory.
// Config.Exchange and Config.Refresh keep them.
//
// Set the fields before first use and do not change them afterwards; a
// TokenSource must not be copied after first use. Token, TokenContext,
// Refresh, Invalidate and Wait are safe for concurrent use by multiple
// goroutines.
type TokenSource struct {
	// Config is the application the grant belongs to. Required.
	Config *Config

	// Initial is the token to start from, for example one just returned
	// by Config.Exchange. It may be nil when Store holds the token. When
	// set, it is served first and Store is not read until a refresh is
	// due; a refresh then tries a token that another process stored
	// first and falls back to Initial's refresh token (see Store).
	// It is never encoded by encoding/json.
	Initial *oauth2.Token `json:"-"`

	// Store, if set, persists the grant's token. Every new token is
	// saved before any request uses it, the Store is read again before
	// every refresh (a token stored by another process is adopted
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

	// Observer, if set, receives events: refreshes and their outcomes,
	// 401s, Save failures, Locker waits. Nil observes nothing, at no
	// cost.
	Observer *Observer

	// cache is the token served, nil until first use. It is read
	// without locks on every request, and replaced only by the flight
	// (a new token) or by compare-and-swap (the same token, marked
	// rejected or saved).
	cache atomic.Pointer[snapshot]

	// flight obtains new tokens: one flight at a time, shared by every
	// caller (singleflight.go).
	flight refresher

	// store is what the flight knows of Store (persist.go).
	store persister

	// rejections is the 401 policy's memory (reject.go).
	rejections rejections

	// clk is the clock; nil means the real one.
	clk *clockRef
}

var _ oauth2.TokenSource = (*TokenSource)(nil)

// String describes s without any secret.
func (s *TokenSource) String() string {
	state := "unused"
	if ct := s.cache.Load(); ct != nil {
		switch {
		case ct.invalid:
			state = "invalidated"
		case ct.tok.Expiry.IsZero():
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

// current is TokenContext returning the snapshot, whose header the
// Transport uses.
func (s *TokenSource) current(ctx context.Context) (*snapshot, error) {
	ct := s.cache.Load()
	var now time.Duration
	if s.clk == nil {
		now = time.Since(monoBase) // the one clock read of a request, without a call
	} else {
		now = s.clk.Mono()
	}
	if ct != nil && now < ct.early && !ct.invalid && !ct.unsaved {
		return ct, nil // the hot path
	}
	return s.currentSlow(ctx, ct, now)
}

// currentSlow is current for a token that is missing, unusable, due for
// an early refresh or unsaved.
func (s *TokenSource) currentSlow(ctx context.Context, ct *snapshot, now time.Duration) (*snapshot, error) {
	if !ct.usable(now) {
		var err error
		if ct, err = s.await(ctx, ct.next(), reasonFor(ct)); err != nil {
			return nil, err
		}
	}
	if now >= ct.early || ct.unsaved {
		s.background(ctx, ct, now)
	}
	return ct, nil
}

// Refresh obtains a new token now, even if the current one is still
// valid, and returns it; the new token is saved to Store before it is
// returned. It shares a refresh already under way instead of starting
// another, and if the Store holds a token that another process stored
// since this source last read or wrote it, that token is adopted
// instead. Like TokenContext, it returns when ctx ends, and the refresh
// goes on for other callers.
//
// If the new token could not be saved, Refresh returns it together with
// an error satisfying errors.Is(err, ErrNotSaved): the token is served
// all the same, and the Save is retried in the background (Wait waits
// for it).
func (s *TokenSource) Refresh(ctx context.Context) (*oauth2.Token, error) {
	// Before first use the generation to replace is the first token,
	// from Initial or the Store: they hold the refresh token.
	want := max(s.cache.Load().next(), 2)
	ct, err := s.await(ctx, want, ReasonForced)
	if err != nil {
		return nil, err
	}
	if ct.unsaved {
		if cur := s.cache.Load(); cur == nil || cur.gen != ct.gen || cur.unsaved {
			return ct.tok, fmt.Errorf("pandadocauth: refreshed, but %w (the Save is retried)", ErrNotSaved)
		}
	}
	return ct.tok, nil
}

// Wait blocks until the work s does in the background has finished: an
// early refresh, a refresh whose callers have all left, and the Save of
// a token whose Save failed, which Wait retries for up to 30 seconds. A
// short-lived program calls it before exiting, so that a refresh PandaDoc
// has already answered (which may have rotated the refresh token) is
// saved rather than lost. If the Save still fails after 30 seconds, Wait
// logs it and returns; the token goes on being served, and until it is
// saved the Locker's lock stays held and a timer retries the Save.
func (s *TokenSource) Wait() {
	s.flush()
}

// Invalidate tells s that the API rejected t (for example with 401). If
// t is still the token being served, the next call refreshes; if a newer
// token has replaced it already, nothing happens, so a late rejection
// cannot throw away a newer token. It reports whether t was invalidated.
//
// Tokens rejected one after another without one ever working (a
// suspended account) are kept for a back-off that grows from 1 second to
// 1 minute after they were obtained, so that a rejection per request
// does not become a refresh per request; Invalidate then reports false.
func (s *TokenSource) Invalidate(t *oauth2.Token) bool {
	if t == nil {
		return false
	}
	ct := s.cache.Load()
	if ct == nil || ct.invalid || ct.tok.AccessToken != t.AccessToken {
		return false
	}
	_, invalidated := s.rejected(ct)
	return invalidated
}

// rejected applies the 401 policy (reject.go) to a rejection of ct's
// token.
func (s *TokenSource) rejected(ct *snapshot) (retry, invalidated bool) {
	retry, invalidated = s.rejections.rejected(&s.cache, ct, s.clock().Now)
	if invalidated {
		s.logInfo("pandadocauth: token rejected by the API; will refresh")
	}
	return retry, invalidated
}

// accepted records that the API accepted ct's token.
func (s *TokenSource) accepted(ct *snapshot) { s.rejections.accepted(ct) }

// Expiry returns the expiry of the token served: zero before first use,
// and for a token without one (valid until the API rejects it). It reads
// no token, so an Observer's gauge can call it.
func (s *TokenSource) Expiry() time.Time {
	if ct := s.cache.Load(); ct != nil {
		return ct.tok.Expiry
	}
	return time.Time{}
}

// TokenSource returns a TokenSource for the grant whose token is t. It is
// shorthand for &TokenSource{Config: c, Initial: t}; set Store,
// EarlyRefresh or Logger on the result before its first use.
func (c *Config) TokenSource(t *oauth2.Token) *TokenSource {
	return &TokenSource{Config: c, Initial: t}
}

// The helpers below are what every part of a TokenSource shares: they
// build and publish snapshots (snapshot.go), read the clock and log.

// newSnapshot builds the snapshot of t, a token from from. Its
// generation is set when it is published.
func (s *TokenSource) newSnapshot(t *oauth2.Token, from origin) *snapshot {
	return s.snapshotWith(t, from, "Bearer "+t.AccessToken)
}

// snapshotWith is newSnapshot with the header built already.
func (s *TokenSource) snapshotWith(t *oauth2.Token, from origin, header string) *snapshot {
	c := s.clock()
	ct := &snapshot{tok: t, header: header, from: from, early: maxDuration, hard: maxDuration}
	// A token saved with only its refresh token, or one that cannot be
	// sent in a header, is not served.
	ct.invalid = !sendable(t.AccessToken)
	if t.Expiry.IsZero() {
		return ct // valid until the API answers 401
	}
	lifetime := time.Duration(t.ExpiresIn) * time.Second
	window := DefaultEarlyRefresh
	if s.EarlyRefresh != 0 {
		window = s.EarlyRefresh
	}
	if window < 0 {
		skew := blockingSkew
		if lifetime > 0 && lifetime < 2*skew {
			skew = lifetime / 2
		}
		ct.hard = monoAt(c, t.Expiry.Add(-skew))
		ct.early = ct.hard
		return ct
	}
	// The lifetime is known from expires_in, which tokens from the
	// endpoint carry (and the Stores keep). A short-lived token gets half
	// its lifetime as window, so a new token is never due at once.
	if lifetime > 0 && lifetime < 2*window {
		window = lifetime / 2
	}
	ct.early = monoAt(c, t.Expiry.Add(-window))
	ct.hard = monoAt(c, t.Expiry.Add(-min(blockingSkew, window/2)))
	return ct
}

// clock returns s's clock.
func (s *TokenSource) clock() clock { return s.clk.get() }

// mono reads the monotonic clock: on the hot path, the one clock read.
func (s *TokenSource) mono() time.Duration { return s.clk.mono() }

// grant is s's key in its Grants, for the Observer's events; empty for a
// TokenSource of its own.
func (s *TokenSource) grantName() string {
	if g, ok := s.Store.(grantKeyer); ok {
		return g.grantKey()
	}
	return ""
}

// grantKeyer is the Store of a grant of a Grants.
type grantKeyer interface{ grantKey() string }

// publish serves ct, a new token, as the next generation.
func (s *TokenSource) publish(ct *snapshot) {
	ct.gen = s.cache.Load().next()
	s.cache.Store(ct)
}

// mark replaces the snapshot served by a copy changed by f, if it is
// still ct's generation. It reports whether it did.
func (s *TokenSource) mark(ct *snapshot, f func(*snapshot)) bool {
	for {
		cur := s.cache.Load()
		if cur == nil || cur.gen != ct.gen {
			return false
		}
		next := *cur
		f(&next)
		if s.cache.CompareAndSwap(cur, &next) {
			return true
		}
	}
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
		if g := s.grantName(); g != "" {
			attrs = append(attrs, slog.String("grant", g))
		}
		s.Logger.LogAttrs(context.Background(), level, msg, attrs...)
	}
}
