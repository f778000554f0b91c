package pandadocauth

import (
	"time"

	"golang.org/x/oauth2"
)

// The snapshot of the token served, which requests read without locks
// (TokenSource.cache). TokenSource.newSnapshot and publish build and
// publish them.

// origin is where a snapshot's token came from.
type origin uint8

const (
	fromInitial  origin = iota // TokenSource.Initial
	fromStore                  // loaded from the Store
	fromEndpoint               // returned by the token endpoint
)

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

// next is the generation that replaces s: the one a caller that found s
// unusable waits for.
func (s *snapshot) next() uint32 {
	if s == nil {
		return 1
	}
	return s.gen + 1
}
