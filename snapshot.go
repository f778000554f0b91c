package pandadocauth

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/oauth2"
)

// The snapshot of the token served, which requests read
// without locks (TokenSource.cache), and what the files above it share to
// build and publish snapshots, read the clock and log.

// origin is where a snapshot's token came from.
type origin uint8

const (
	fromInitial  origin = iota // TokenSource.Initial
	fromStore                  // loaded from the Store
	fromEndpoint               // returned by the token endpoint
)

// clockRef holds an injected clock in one word.
type clockRef struct{ clock }

// snapshot is an immutable view of the token served, with the values
// requests need computed once, so the hot path computes nothing.
type snapshot struct {
	tok    *oauth2.Token
	header string        // "Bearer <access token>", built once per token
	early  time.Duration // a background refresh starts here (a Mono reading)
	hard   time.Duration // callers wait for a new token from here (a Mono reading)
	gen    uint32        // 1 for the first token served, +1 for each new one
	from   origin
	// The flags below change by compare-and-swap of a copy with the same
	// generation: the token is the same.
	invalid bool // rejected by the API, or not sendable
	unsaved bool // Store.Save failed; retried later
}

// usable reports whether s may be sent at now, a Mono reading.
func (s *snapshot) usable(now time.Duration) bool {
	return s != nil && !s.invalid && now < s.hard
}

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

// compact returns t, a token from the endpoint, as a grant keeps it, and
// its Authorization header: without the raw answer (x/oauth2's Extra),
// which would double a grant's memory, and with the access token sharing
// the header's bytes.
func compact(t *oauth2.Token) (*oauth2.Token, string) {
	header := "Bearer " + t.AccessToken
	typ := t.TokenType
	if typ == "Bearer" {
		typ = "Bearer" // the constant, not a copy per token
	}
	return &oauth2.Token{AccessToken: header[len("Bearer "):], TokenType: typ, RefreshToken: t.RefreshToken, Expiry: t.Expiry, ExpiresIn: t.ExpiresIn}, header
}

// clock returns s's clock.
func (s *TokenSource) clock() clock {
	if s.clk != nil {
		return s.clk.clock
	}
	return realClock{}
}

// mono reads the monotonic clock; on the hot path it is the one clock
// read, without an interface call for the real clock.
func (s *TokenSource) mono() time.Duration {
	if s.clk != nil {
		return s.clk.Mono()
	}
	return time.Since(monoBase)
}

// next is the generation that replaces s: the one a caller that found s
// unusable waits for.
func (s *snapshot) next() uint32 {
	if s == nil {
		return 1
	}
	return s.gen + 1
}

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
