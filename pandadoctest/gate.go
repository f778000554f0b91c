package pandadoctest

import (
	"context"
	"errors"
)

// ErrClosed is returned by the Wait methods of a Server that is closed
// while they wait.
var ErrClosed = errors.New("pandadoctest: server closed")

// HoldTokenRequests closes the token endpoint's gate: every token POST
// that arrives from now on is counted (TotalTokenRequests and
// WaitTokenRequests see it), then waits at the gate until
// ReleaseTokenRequests, its client gives up or Close. Only once past the
// gate does it take its fault (FailNext, FailAlways) and get its answer;
// a request that arrives while the gate is open takes its fault as it
// arrives.
//
// With the gate, a test lines up concurrent requests without guessing
// how long they take to arrive:
//
//	srv.HoldTokenRequests()
//	// start the callers …
//	srv.WaitHeldTokenRequests(ctx, 1) // the first refresh has arrived
//	// check that the other callers wait for it …
//	srv.ReleaseTokenRequests()
//
// Calling HoldTokenRequests while the gate is closed does nothing.
func (s *Server) HoldTokenRequests() {
	s.eng.HoldTokenRequests()
}

// ReleaseTokenRequests opens the token endpoint's gate: the token POSTs
// that wait at it go on, and those that arrive afterwards are not held.
// Calling it while the gate is open does nothing.
func (s *Server) ReleaseTokenRequests() {
	s.eng.ReleaseTokenRequests()
}

// HeldTokenRequests returns how many token POSTs wait at the gate now.
func (s *Server) HeldTokenRequests() int {
	return s.eng.HeldTokenRequests()
}

// WaitHeldTokenRequests blocks until at least n token POSTs wait at the
// gate that HoldTokenRequests closed. It returns ctx.Err() if ctx ends
// first, and ErrClosed if the server is closed.
func (s *Server) WaitHeldTokenRequests(ctx context.Context, n int) error {
	return closedError(s.eng.WaitHeldTokenRequests(ctx, n))
}

// WaitTokenRequests blocks until the token endpoint has received at least
// n POSTs in all, as TotalTokenRequests counts them: a request counts as
// soon as its body is read, before the gate and its answer, and when the
// gate is open it has taken its fault by then. It
// returns ctx.Err() if ctx ends first, and ErrClosed if the server is
// closed.
func (s *Server) WaitTokenRequests(ctx context.Context, n int) error {
	return closedError(s.eng.WaitTokenRequests(ctx, n))
}

// WaitAPIRequests blocks until at least n requests to /public/v1/ have
// been answered, as TotalAPIRequests counts them (a request counts just
// before its answer is written). It returns ctx.Err() if ctx ends first,
// and ErrClosed if the server is closed.
func (s *Server) WaitAPIRequests(ctx context.Context, n int) error {
	return s.waitUntil(ctx, func() bool { return s.apiTotal >= n })
}

// GrantTokenRequests returns how many refresh_token POSTs the token
// endpoint has received for the grant that refreshToken belongs to: with
// any refresh token of that grant, the live one or one that rotation or
// Revoke retired, faulted or not. It returns 0 for a refresh token the
// server never issued. Each grant (IssueToken, or an authorization code
// exchanged) is counted apart, so one server can serve many grants.
func (s *Server) GrantTokenRequests(refreshToken string) int {
	return s.eng.GrantTokenRequests(refreshToken)
}

// LiveRefreshToken returns the refresh token that works now for the grant
// that refreshToken belongs to (refreshToken itself without rotation, the
// newest one with it), or false if the server never issued refreshToken
// or the grant's live refresh token was revoked.
func (s *Server) LiveRefreshToken(refreshToken string) (string, bool) {
	return s.eng.LiveRefreshToken(refreshToken)
}

// notifyLocked wakes WaitAPIRequests up, after a change of the API
// counters. s.mu must be held.
func (s *Server) notifyLocked() { s.changed.NotifyLocked() }

// waitUntil blocks until cond, called with s.mu held, reports true, ctx
// ends or the server is closed.
func (s *Server) waitUntil(ctx context.Context, cond func() bool) error {
	return s.changed.Wait(ctx, s.closing, &s.mu, cond, ErrClosed)
}
