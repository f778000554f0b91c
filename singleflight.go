package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Refresh coordination.
//
// golang.org/x/oauth2's ReuseTokenSource holds a mutex across the refresh
// and takes it on every read. Waiters then queue behind the one doing the
// network call; none can give up early (Token takes no context), and when
// the refresh fails each waiter in turn makes its own request, so N
// waiters on a failing endpoint cause N requests.
//
// Here reads never lock: the token is an atomic pointer to a snapshot,
// and every snapshot carries a generation. A caller that finds the token
// unusable records, under the refresher's lock, the generation it needs
// (want = max(want, seen.gen+1)) and joins the one flight, which takes
// no arguments and runs until the served generation reaches the highest
// want. So every caller's question is the same question, and one flight
// answers them all, success or failure. The flight decides to end (it
// "lands") under the same lock at which callers record their want, so a
// caller either is counted by the flight it joins or starts the next one:
// none is handed an answer to an older question, and none has to check
// the answer and join again.
//
// Callers wait on the flight's done channel, one channel for all of them.
// A singleflight.Group runs the flight: the first caller's DoChan starts
// it on a goroutine of the Group's, which turns a panic in the flight (in
// a Store, say) into a crash rather than waiters left hanging. Joining through DoChan as well would cost each waiter a
// channel of its own; the refresher's lock already admits one flight per
// source, so the Group's key is the flight's own, unique per flight: a
// landing flight and the next one never share an entry. One Group serves
// every TokenSource (every grant of a Grants too), so a source keeps no
// map of its own.
//
// The flight runs on a context detached from the callers'
// (context.WithoutCancel, keeping their values) with a deadline of its
// own, and each caller waits on its own context: a caller whose context
// ends leaves at once, and the refresh goes on for the others instead of
// being cancelled under them. A failure is remembered for a short
// back-off, so callers arriving after a failed flight fail fast instead
// of starting another.
const (
	// refreshTimeout bounds one flight, all attempts included. It runs
	// on a context detached from the callers', so it needs a deadline of
	// its own.
	refreshTimeout = time.Minute

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

	// maxSteps bounds the steps of one flight (load, adopt, refresh,
	// save), so that an endpoint answering with tokens that are unusable
	// on arrival cannot keep a flight going.
	maxSteps = 4
)

// flights runs the flights of every TokenSource.
var flights singleflight.Group

// flightSeq numbers the flights of the process: a flight's key is its
// number, never the key of another flight, even one that is landing or
// of a source that no longer exists.
var flightSeq atomic.Uint64

// refresher is a TokenSource's flight state. It is small: a Grants holds
// one per grant.
type refresher struct {
	mu      sync.Mutex  // guards the fields below it
	want    uint32      // the highest generation a caller waits for
	call    *flightCall // the flight under way, or landing; nil when none
	trouble *trouble    // what failures left; nil when there is nothing to remember

	// quiet is a Mono reading before which no background flight (early
	// refresh, Save retry) starts: a flight is under way (the maximum),
	// or the last one failed. It is read without the lock on requests
	// inside the early-refresh window.
	quiet atomic.Int64

	flush bool // Wait asks for an unsaved token to be saved now; guarded by mu
}

// flightCall is one flight. The flight's goroutine owns attempts and
// outcome; the other fields are set under the refresher's lock.
type flightCall struct {
	key      string        // the singleflight key, unique per flight
	landed   bool          // it has decided to end: callers start a new one
	done     chan struct{} // closed when the flight has ended, val and err set
	val      *snapshot     // the flight's answer
	err      error
	ctx      context.Context // the Observer's flight context
	reason   RefreshReason
	start    time.Duration // a Mono reading
	waiters  int
	attempts int
	outcome  RefreshOutcome
}

// trouble is what failed flights and Saves leave behind. It is allocated
// when something fails, so a grant with nothing to remember pays one
// pointer.
type trouble struct {
	err        error         // the last flight's failure, served until until
	until      time.Duration // a Mono reading
	background time.Duration // the wait before the next early refresh
	throttle   time.Duration // the last 429 back-off
	saveNext   time.Duration // when a failed Save is retried (a Mono reading)
}

// testHookJoined, if set, is called after a caller has joined a flight
// and before it waits for it. Tests use it to know when callers are
// waiting.
var testHookJoined func(*TokenSource)

// await waits until a usable token of generation want or later is
// served, joining the one flight, or until ctx ends.
func (s *TokenSource) await(ctx context.Context, want uint32, reason RefreshReason) (*snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pandadocauth: waiting for a token: %w", err)
	}
	if want == 1 && s.loadInitial() {
		if ct := s.cache.Load(); ct.usable(s.mono()) {
			return ct, nil
		}
	}
	r := &s.flight
	r.mu.Lock()
	now := s.mono()
	if ct := s.cache.Load(); ct.usable(now) && ct.gen >= want {
		r.mu.Unlock()
		return ct, nil
	}
	if t := r.trouble; t != nil && t.err != nil && now < t.until {
		err := t.err
		r.mu.Unlock()
		return nil, err
	}
	r.want = max(r.want, want)
	c := s.fly(ctx, reason, true)
	r.mu.Unlock()
	if testHookJoined != nil {
		testHookJoined(s)
	}
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		return nil, fmt.Errorf("pandadocauth: waiting for a token refresh: %w", ctx.Err())
	}
}

// reasonFor is why a caller that found ct unusable waits.
func reasonFor(ct *snapshot) RefreshReason {
	switch {
	case ct == nil:
		return ReasonFirstUse
	case ct.invalid:
		return ReasonRejected
	}
	return ReasonExpired
}

// loadInitial serves Initial as the first token, without a flight: it
// needs no I/O. It reports whether a token is served.
func (s *TokenSource) loadInitial() bool {
	if s.cache.Load() != nil {
		return true
	}
	if s.Initial == nil {
		return false
	}
	ct := s.newSnapshot(s.Initial, fromInitial)
	ct.gen = 1
	s.cache.CompareAndSwap(nil, ct)
	return true
}

// background starts a flight the caller does not wait for: an early
// refresh of ct, which is still valid, or the retry of its failed Save.
// It does nothing while a flight is under way or the back-off after a
// failed one has not ended.
func (s *TokenSource) background(ctx context.Context, ct *snapshot, now time.Duration) {
	r := &s.flight
	if int64(now) < r.quiet.Load() {
		return
	}
	early := now >= ct.early
	r.mu.Lock()
	if !r.flying() && (early || r.saveDue(now)) {
		reason := ReasonSave
		if early {
			r.want = max(r.want, ct.gen+1)
			reason = ReasonEarly
		}
		s.fly(ctx, reason, false)
	}
	r.mu.Unlock()
}

// busy reports whether s has work that Wait would wait for: a flight
// under way or landing, or a token whose Save failed.
func (s *TokenSource) busy() bool {
	if ct := s.cache.Load(); ct != nil && ct.unsaved {
		return true
	}
	r := &s.flight
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.call != nil || r.trouble != nil && r.trouble.saveNext != 0
}

// saveDue reports whether a failed Save is due for a retry at now. r.mu
// must be held.
func (r *refresher) saveDue(now time.Duration) bool {
	return r.flush || r.trouble != nil && r.trouble.saveNext != 0 && now >= r.trouble.saveNext
}

// fly starts the flight, or joins the one under way, and returns it.
// wait says whether the caller waits for it. r.mu must be held.
//
// Callers wait on the flight's done channel, one for all of them, so
// that a caller costs no allocation of its own; the singleflight Group
// runs the flight.
func (s *TokenSource) fly(ctx context.Context, reason RefreshReason, wait bool) *flightCall {
	r := &s.flight
	o := s.Observer
	if c := r.call; c != nil && !c.landed {
		if wait {
			c.waiters++
			if o != nil && o.RefreshJoin != nil {
				o.RefreshJoin(c.ctx, ctx)
			}
		}
		return c
	}
	c := &flightCall{key: strconv.FormatUint(flightSeq.Add(1), 36), done: make(chan struct{}), ctx: ctx, reason: reason, start: s.mono()}
	if wait {
		c.waiters = 1
	}
	if o != nil && o.RefreshStart != nil {
		if fctx := o.RefreshStart(ctx, RefreshStartInfo{Grant: s.grant(), Reason: reason}); fctx != nil {
			c.ctx = fctx
		}
	}
	r.call = c
	r.quiet.Store(int64(maxDuration))
	flights.DoChan(c.key, func() (any, error) { return s.run(c) })
	return c
}

// run is the flight. It takes steps until a usable token of the highest
// generation wanted is served (and saved, when a Save retry is due), or
// a step fails. It decides to end, and lands, under the lock at which
// callers record their want; it reports to the Observer after, and then
// lets go of the flight, so that Wait, which joins a landing flight too,
// returns only when all of it is done.
func (s *TokenSource) run(c *flightCall) (any, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), refreshTimeout)
	defer cancel()
	r := &s.flight
	defer func() {
		r.mu.Lock()
		if r.call == c {
			r.call = nil
		}
		r.mu.Unlock()
		close(c.done)
	}()
	for step := 0; ; step++ {
		r.mu.Lock()
		// Read under the lock, so that a rejection marked before a
		// caller records its want is seen here.
		cur := s.cache.Load()
		now := s.mono()
		saveDue := cur != nil && cur.unsaved && r.saveDue(now)
		if cur.usable(now) && cur.gen >= r.want && !saveDue {
			if c.outcome >= OutcomeLoaded {
				r.recovered()
			}
			quiet := time.Duration(0)
			if t := r.trouble; t != nil && cur.unsaved {
				quiet = t.saveNext // no lock per request until the Save retry is due
			}
			r.land(quiet)
			r.mu.Unlock()
			s.done(c, nil)
			c.val = cur
			return cur, nil
		}
		want := r.want
		r.flush = false
		r.mu.Unlock()
		var (
			outcome RefreshOutcome
			err     error
		)
		if step < maxSteps {
			outcome, err = s.advance(ctx, c, cur, want, saveDue)
		} else {
			err = fmt.Errorf("pandadocauth: %w: no usable token after %d tries (is it expired on arrival?)", ErrMalformedResponse, maxSteps)
		}
		if err != nil {
			now := s.mono()
			r.mu.Lock()
			quiet := r.remember(err, now)
			r.land(quiet)
			r.mu.Unlock()
			if ct := s.cache.Load(); c.reason == ReasonEarly && ct.usable(now) {
				s.logWarn("pandadocauth: early refresh failed; serving the current token", slog.Any("error", err), slog.Duration("retry_in", quiet-now))
			}
			s.done(c, err)
			c.err = err
			return nil, err
		}
		c.outcome = max(c.outcome, outcome)
	}
}

// done reports the end of flight c to the Observer.
func (s *TokenSource) done(c *flightCall, err error) {
	o := s.Observer
	if o == nil || o.RefreshDone == nil {
		return
	}
	info := RefreshDoneInfo{Grant: s.grant(), Reason: c.reason, Outcome: c.outcome, Attempts: c.attempts, Duration: s.mono() - c.start, Err: err}
	if err != nil {
		info.Outcome = OutcomePermanent
		if !isPermanent(err) {
			info.Outcome = OutcomeTransient
		}
	}
	s.flight.mu.Lock()
	info.Waiters = c.waiters
	s.flight.mu.Unlock()
	o.RefreshDone(c.ctx, info)
}

// land ends the flight: later callers start a new one (under another
// key). No background flight starts before quiet. r.mu must be held.
func (r *refresher) land(quiet time.Duration) {
	r.call.landed = true
	r.quiet.Store(int64(quiet))
}

// flying reports whether a flight is under way and not landing. r.mu
// must be held.
func (r *refresher) flying() bool {
	return r.call != nil && !r.call.landed
}

// recovered forgets the failures after a flight that obtained a token.
// r.mu must be held.
func (r *refresher) recovered() {
	if t := r.trouble; t != nil {
		t.err, t.until, t.background, t.throttle = nil, 0, 0, 0
		if t.saveNext == 0 {
			r.trouble = nil
		}
	}
}

// troubled returns r.trouble, allocating it. r.mu must be held.
func (r *refresher) troubled() *trouble {
	if r.trouble == nil {
		r.trouble = &trouble{}
	}
	return r.trouble
}

// remember records a failed flight at now and returns the Mono reading
// before which no background flight starts. r.mu must be held.
func (r *refresher) remember(err error, now time.Duration) (quiet time.Duration) {
	t := r.troubled()
	d := permanentFailureBackoff
	var te transientError
	if errors.As(err, &te) {
		d = te.backoff
		if te.throttled && d == 0 {
			t.throttle = min(max(2*t.throttle, minThrottleBackoff), maxThrottleBackoff)
			d = t.throttle
		}
	}
	t.err, t.until = err, now+d
	t.background = min(max(2*t.background, minBackgroundBackoff), maxBackgroundBackoff)
	return now + max(d, t.background)
}

// flush is Wait: it waits for the flight under way, landing ones too,
// and saves an unsaved token, retrying every saveRetryInterval for up to
// flushTimeout.
func (s *TokenSource) flush() {
	r := &s.flight
	clk := s.clock()
	deadline := clk.Mono() + flushTimeout
	for {
		r.mu.Lock()
		if c := r.call; c != nil {
			r.mu.Unlock()
			if testHookJoined != nil {
				testHookJoined(s)
			}
			<-c.done
			continue
		}
		if cur := s.cache.Load(); cur == nil || !cur.unsaved {
			r.mu.Unlock()
			return
		}
		if clk.Mono() >= deadline {
			r.mu.Unlock()
			s.logError("pandadocauth: giving up saving the token; the newest refresh token is in memory only")
			return
		}
		r.flush = true
		c := s.fly(context.Background(), ReasonSave, true)
		r.mu.Unlock()
		<-c.done
		if cur := s.cache.Load(); cur != nil && cur.unsaved {
			timer, _ := clk.NewTimer(min(saveRetryInterval, max(deadline-clk.Mono(), 0)))
			<-timer
		}
	}
}
