package pandadocauth

import (
	"context"
	"time"
)

// Observer receives the events of a TokenSource's work, in the spirit of
// net/http/httptrace: set the funcs you need, nil ones are skipped. Set
// it as TokenSource.Observer, or Grants.Observer for every grant. The
// package otelpandadocauth turns these events into OpenTelemetry metrics
// and spans.
//
// The funcs are called synchronously by the goroutine doing the work,
// some of them (RefreshStart, RefreshJoin) while the source holds a lock:
// they must return quickly and must not call back into the source. No
// func ever receives a token or a secret; the errors they receive are
// the ones callers get, free of secrets too. None is called on the path
// of a request that finds a valid token, so an Observer costs nothing
// there, set or not.
type Observer struct {
	// RefreshStart is called when a flight starts: a refresh, or the load
	// of the first token, shared by every caller that needs it. ctx is
	// the context of the caller that started it. The context it returns
	// is the flight's: it is passed to RefreshJoin and RefreshDone, so it
	// can carry a span. Nil keeps ctx.
	RefreshStart func(ctx context.Context, info RefreshStartInfo) context.Context

	// RefreshJoin is called when a caller, whose context is caller,
	// joins the flight whose context is flight, to wait for it.
	RefreshJoin func(flight, caller context.Context)

	// RefreshDone is called when a flight ends.
	RefreshDone func(ctx context.Context, info RefreshDoneInfo)

	// Rejected is called when the API rejected a token with 401, after
	// Transport handled it.
	Rejected func(ctx context.Context, info RejectedInfo)

	// SaveFailed is called when Store.Save fails.
	SaveFailed func(ctx context.Context, info SaveFailedInfo)

	// LockWaited is called when the Store's Locker has answered a Lock.
	LockWaited func(ctx context.Context, info LockWaitedInfo)

	// LimitWait is called when a Limiter makes a request wait for its
	// slot, before the wait; LimitWaited when the wait ends. Set the
	// Observer as Limiter.Observer for these and the two below.
	LimitWait func(ctx context.Context, info LimitWaitInfo)

	// LimitWaited is called when a wait that LimitWait announced ends.
	LimitWaited func(ctx context.Context, info LimitWaitedInfo)

	// Throttled is called when PandaDoc answered 429 to a request sent
	// through a Limiter, retried or not.
	Throttled func(ctx context.Context, info ThrottledInfo)

	// Retried is called when a Limiter sends a request again: after a
	// 429, a 5xx or a network error.
	Retried func(ctx context.Context, info RetriedInfo)
}

// RefreshReason is why a flight started.
type RefreshReason uint8

// The reasons of RefreshStartInfo.
const (
	ReasonFirstUse RefreshReason = iota // no token served yet: load it, refresh if needed
	ReasonExpired                       // the token served has expired
	ReasonEarly                         // the token is in the early-refresh window
	ReasonRejected                      // the API rejected the token served
	ReasonForced                        // TokenSource.Refresh
	ReasonSave                          // a failed Store.Save is retried
)

var reasonNames = [...]string{"first_use", "expired", "early", "rejected", "forced", "save"}

// String returns the reason as a metric attribute value, such as
// "expired".
func (r RefreshReason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// RefreshOutcome is how a flight ended.
type RefreshOutcome uint8

// The outcomes of RefreshDoneInfo, from the least to the most done.
const (
	OutcomeUnchanged RefreshOutcome = iota // nothing was needed, or a Save retry failed
	OutcomeSaved                           // a token whose Save had failed was saved
	OutcomeLoaded                          // the first token, from Initial or the Store
	OutcomeAdopted                         // a token another process stored was adopted
	OutcomeRefreshed                       // the token endpoint issued a new token
	OutcomeTransient                       // failed; may pass by itself (network, 5xx, 429)
	OutcomePermanent                       // failed for good (invalid_grant, invalid_client, bad answer)
)

var outcomeNames = [...]string{"unchanged", "saved", "loaded", "adopted", "refreshed", "transient", "permanent"}

// String returns the outcome as a metric attribute value, such as
// "refreshed".
func (o RefreshOutcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// RefreshStartInfo describes a flight that starts.
type RefreshStartInfo struct {
	Grant  string // the grant's key in a Grants; empty for a TokenSource of its own
	Reason RefreshReason
}

// RefreshDoneInfo describes a flight that ended.
type RefreshDoneInfo struct {
	Grant    string
	Reason   RefreshReason
	Outcome  RefreshOutcome
	Attempts int           // token-endpoint requests made
	Duration time.Duration // from start to end
	Waiters  int           // callers that waited for it
	Err      error         // nil unless Outcome is OutcomeTransient or OutcomePermanent
}

// ReplayOutcome is what became of a request the API rejected with 401.
type ReplayOutcome uint8

// The replay outcomes of RejectedInfo.
const (
	ReplayOK            ReplayOutcome = iota // sent again with a new token and accepted
	ReplayRejected                           // sent again with a new token, and rejected again
	ReplayFailed                             // sent again, and the send failed
	ReplayNotReplayable                      // not sent again: its body cannot be replayed
	ReplayNoNewToken                         // not sent again: no new token (refresh failed, or rejections back off)
)

var replayNames = [...]string{"ok", "rejected", "failed", "not_replayable", "no_new_token"}

// String returns the replay outcome as a metric attribute value, such as
// "ok".
func (r ReplayOutcome) String() string {
	if int(r) < len(replayNames) {
		return replayNames[r]
	}
	return "unknown"
}

// RejectedInfo describes a 401 from the API.
type RejectedInfo struct {
	Grant       string
	Invalidated bool // the rejected token was still served, and was invalidated
	Replay      ReplayOutcome
}

// SaveFailedInfo describes a failed Store.Save.
type SaveFailedInfo struct {
	Grant string
	Retry bool // a retry of an earlier failed Save
	Err   error
}

// LockWaitedInfo describes a Lock of the Store's Locker.
type LockWaitedInfo struct {
	Grant    string
	Duration time.Duration // from the call to its answer
	Err      error
}
