package pandadocauth

import "time"

// The timings of the refresh machinery, in one place.
//
//	what                                     value            where it acts
//	early-refresh window                     5 min            a background refresh starts before Expiry
//	blocking skew                            10 s             callers wait for a new token before Expiry
//	one flight, all attempts                 1 min            a flight's own deadline
//	retry base between attempts              250 ms, doubling the token POST's transient failures
//	transient failure remembered             1 s              (or Retry-After) callers fail fast
//	the token endpoint's Retry-After         up to 1 h        longer is read as 1 h
//	permanent failure remembered             5 s              invalid_grant and the like
//	429 without Retry-After remembered       5 s .. 1 min     doubling while 429s go on
//	background refresh after a failure       5 s .. 2 min     doubling
//	Save retry of an unsaved token           1 s .. 30 s      doubling, on a timer, lock kept
//	one Store.Save                           30 s             its own deadline
//	Wait retrying a failed Save              30 s             then it gives up
//	401 back-off of never-working tokens     1 s .. 1 min     doubling (reject.go)
//	clock skew between processes             5 min            an older grant's leftover is issued before Initial by more
const (
	// DefaultEarlyRefresh is the early-refresh window used when
	// TokenSource.EarlyRefresh is 0.
	DefaultEarlyRefresh = 5 * time.Minute

	// blockingSkew is how long before Expiry a token stops being served
	// and callers wait for a new one, so that a token is not sent just
	// as it expires.
	blockingSkew = 10 * time.Second

	// refreshTimeout bounds one flight, all attempts included. It runs
	// on a context detached from the callers', so it needs a deadline of
	// its own.
	refreshTimeout = time.Minute

	// defaultRetryBase is the first back-off between token-endpoint
	// attempts; it doubles after each one and gets jitter.
	defaultRetryBase = 250 * time.Millisecond

	// transientFailureBackoff is how long a refresh whose every attempt
	// failed transiently is remembered (calls fail fast meanwhile),
	// unless Retry-After says longer.
	transientFailureBackoff = time.Second

	// maxRetryAfter caps the Retry-After of a token-endpoint answer.
	maxRetryAfter = time.Hour

	// permanentFailureBackoff is how long a permanent refresh failure
	// (invalid_grant, invalid_client, a malformed answer) is remembered:
	// calls fail fast with it instead of asking the endpoint again.
	permanentFailureBackoff = 5 * time.Second

	// minThrottleBackoff and maxThrottleBackoff bound how long a 429
	// without Retry-After is remembered; it doubles while 429s go on.
	// PandaDoc limits requests over a sliding 60-second window and sends
	// no Retry-After, so retrying within a second cannot help.
	minThrottleBackoff = 5 * time.Second
	maxThrottleBackoff = time.Minute

	// minBackgroundBackoff and maxBackgroundBackoff bound the wait after
	// a failed flight before an early refresh starts again.
	minBackgroundBackoff = 5 * time.Second
	maxBackgroundBackoff = 2 * time.Minute

	// saveRetryInterval and maxSaveRetryInterval bound how often a failed
	// Store.Save is tried again; the wait doubles while Saves fail.
	saveRetryInterval    = time.Second
	maxSaveRetryInterval = 30 * time.Second

	// saveTimeout bounds one Store.Save.
	saveTimeout = 30 * time.Second

	// flushTimeout bounds how long Wait retries a failed Save.
	flushTimeout = 30 * time.Second

	// leftoverSkew is how far apart the clocks of processes sharing a
	// Store may be (the tolerance Kerberos allows by default). A
	// successor of Initial stored by a process whose clock is behind may
	// look issued before Initial by up to that much.
	leftoverSkew = 5 * time.Minute

	// minRejectionBackoff and maxRejectionBackoff bound how long a token
	// rejected with 401 without any token ever working is kept.
	minRejectionBackoff = time.Second
	maxRejectionBackoff = time.Minute
)

// maxSteps bounds the steps of one flight (load, adopt, refresh, save),
// so that an endpoint answering with tokens that are unusable on arrival
// cannot keep a flight going.
const maxSteps = 4

// clock is the one source of time of a TokenSource: the wall clock for
// token expiries, a monotonic reading for deadlines, and timers for the
// waits between attempts. Tests inject a fake one, so that back-offs,
// Retry-After and Save retries run in fake time.
type clock interface {
	// Now reads the wall clock.
	Now() time.Time
	// Mono reads a monotonic clock as a duration since a fixed origin.
	Mono() time.Duration
	// NewTimer returns a channel that receives once d has passed, and a
	// function that stops the timer.
	NewTimer(d time.Duration) (<-chan time.Time, func() bool)
}

// monoBase anchors the real clock's monotonic readings.
var monoBase = time.Now()

// realClock is the clock used when none is injected.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Mono reads only the monotonic clock: time.Since costs about half of
// time.Now, which reads the wall clock too. It is the one clock read on
// the hot path.
func (realClock) Mono() time.Duration { return time.Since(monoBase) }

func (realClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// monoAt converts a wall-clock instant to a Mono reading of c, saturating
// instead of overflowing for instants far away.
func monoAt(c clock, t time.Time) time.Duration {
	now, d := c.Mono(), t.Sub(c.Now())
	switch {
	case d > 0 && now > maxDuration-d:
		return maxDuration
	case d < 0 && now < minDuration-d:
		return minDuration
	}
	return now + d
}

const (
	maxDuration = time.Duration(1<<63 - 1)
	minDuration = -maxDuration - 1
)

// clockRef holds an injected clock in one word; a nil *clockRef is the
// real clock.
type clockRef struct{ clock }

// get returns the clock r holds, or the real one.
func (r *clockRef) get() clock {
	if r != nil {
		return r.clock
	}
	return realClock{}
}

// mono reads the monotonic clock; for the real clock, without an
// interface call, as the hot path wants.
func (r *clockRef) mono() time.Duration {
	if r != nil {
		return r.Mono()
	}
	return time.Since(monoBase)
}
