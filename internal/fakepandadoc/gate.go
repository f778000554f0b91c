package fakepandadoc

import (
	"context"
	"errors"
)

// ErrClosed is returned by the Wait methods of a Server that is closed
// while they wait.
var ErrClosed = errors.New("fakepandadoc: server closed")

// HoldTokenRequests closes the token endpoint's gate: every token POST
// that arrives from now on is counted (TotalTokenRequests and
// WaitTokenRequests see it), then waits at the gate until
// ReleaseTokenRequests or PassTokenRequest, its client gives up or
// Close. Only once past the
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
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
}

// ReleaseTokenRequests opens the token endpoint's gate: the token POSTs
// that wait at it go on, and those that arrive afterwards are not held.
// Calling it while the gate is open does nothing.
func (s *Server) ReleaseTokenRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
}

// HeldTokenRequests returns how many token POSTs wait at the gate now.
func (s *Server) HeldTokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// WaitHeldTokenRequests blocks until at least n token POSTs wait at the
// gate that HoldTokenRequests closed. It returns ctx.Err() if ctx ends
// first, and ErrClosed if the server is closed.
func (s *Server) WaitHeldTokenRequests(ctx context.Context, n int) error {
	return s.waitUntil(ctx, func() bool { return s.held >= n })
}

// WaitTokenRequests blocks until the token endpoint has received at least
// n POSTs in all, as TotalTokenRequests counts them: a request counts as
// soon as its body is read, before the gate and its answer, and when the
// gate is open it has taken its fault by then. It
// returns ctx.Err() if ctx ends first, and ErrClosed if the server is
// closed.
func (s *Server) WaitTokenRequests(ctx context.Context, n int) error {
	return s.waitUntil(ctx, func() bool { return len(s.posts) >= n })
}

// PassTokenRequest lets one token POST through the closed gate: it
// blocks until a POST waits at the gate and takes the pass. It returns
// ctx.Err() if ctx ends first, and ErrClosed if the server is closed.
func (s *Server) PassTokenRequest(ctx context.Context) error {
	select {
	case s.pass <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closing.Done():
		return ErrClosed
	}
}

// passGate waits at gate, where arrive counted the request as held. It
// reports false if the request or the server ended first.
func (s *Server) passGate(ctx context.Context, gate chan struct{}) bool {
	passed := false
	select {
	case <-gate:
		passed = true
	case <-s.pass:
		passed = true
	case <-ctx.Done():
	case <-s.closing.Done():
	}
	s.mu.Lock()
	s.held--
	s.notifyLocked()
	s.mu.Unlock()
	return passed
}

// notifyLocked wakes the Wait methods up, after a change of the counters
// or of held. s.mu must be held.
func (s *Server) notifyLocked() { s.changed.NotifyLocked() }

// waitUntil blocks until cond, called with s.mu held, reports true, ctx
// ends or the server is closed.
func (s *Server) waitUntil(ctx context.Context, cond func() bool) error {
	return s.changed.Wait(ctx, s.closing, &s.mu, cond, ErrClosed)
}
