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
// unusable asks for a newer generation than the one it saw. The question
// is the singleflight key: the source and the generation to replace. So
// every caller that saw the same token asks the same question, and the
// singleflight.Group runs one flight for all of them, success or failure.
// Each caller waits on the channel DoChan gives it and on its own context:
// a caller whose context ends leaves at once, and the refresh goes on for
// the others instead of being cancelled under them. The flight runs on a
// context detached from the callers' (context.WithoutCancel, keeping
// their values) with a deadline of its own.
//
// One flight runs at a time per source. The refresher's lock admits it:
// under the lock a caller records the generation it needs
// (want = max(want, seen.gen+1)) and either joins the flight under way,
// which runs until the served generation reaches the highest want, or
// starts the next one. The flight decides to end under the
// same lock and forgets its key then, so a caller either is counted by
// the flight it joins or starts a new one: none is handed an answer to an
// older question.
//
// A failure is remembered for a short back-off, so callers arriving after
// a failed flight fail fast instead of starting another.

// flights runs the flights of every TokenSource (every grant of a Grants
// too), so that a source keeps no map of its own.
var flights singleflight.Group

// sourceSeq numbers the sources of the process that have flown: a flight
// key is a source's number and the generation it replaces.
var sourceSeq atomic.Uint64

// refresher is a TokenSource's flight state. It is small: a Grants holds
// one per grant.
type refresher struct {
	mu       sync.Mutex  // guards the fields below it
	want     uint32      // the highest generation a caller waits for
	id       uint64      // the source's number in flight keys; 0 until the first flight
	call     *flightCall // the flight under way, or ending; nil when none
	failures *failures   // what failures left; nil when there is nothing to remember

	// backgroundAfter is a Mono reading before which no background flight (early
	// refresh, Save retry) starts: a flight is under way (the maximum),
	// or the last one failed. It is read without the lock on requests
	// inside the early-refresh window.
	backgroundAfter atomic.Int64
}

// flightCall is one flight. The flight's goroutine owns the fields from
// unlock on; the others are set under the refresher's lock.
type flightCall struct {
	key      string              // the singleflight key
	fn       func() (any, error) // runs the flight; joiners pass it to DoChan too
	ended    bool                // it has decided to end: callers start a new one
	done     chan struct{}       // closed when the flight has ended, reported and let go
	ctx      context.Context     // the Observer's flight context
	reason   RefreshReason       // why it started
	start    time.Duration       // a Mono reading
	end      time.Duration       // the flight's deadline, a Mono reading
	waiters  int                 // callers waiting for it
	recheck  bool                // started while a permanent failure is remembered: read the Store, refresh only if it holds newer
	reported bool                // the Observer was told of its start
	remind   error               // the failure remembered, for recheck
	unlock   func()              // releases the Locker's lock, held from the first step that needed it
	outcome  RefreshOutcome      // what it did, the most of its steps
	tries    int                 // token-endpoint requests made
}

// failures is what failed flights and Saves leave behind. It is allocated
// when something fails, so a grant with nothing to remember pays one
// pointer.
type failures struct {
	err        error         // the last flight's failure, served until until
	until      time.Duration // a Mono reading
	background time.Duration // the wait before the next early refresh
	throttle   time.Duration // the last 429 back-off

	// The unsaved token (its Save failed). The Locker's lock stays held
	// until it is saved, so that no other process refreshes with the
	// refresh token it replaced, which the Store still holds.
	saveNext  time.Duration // when the Save is retried (a Mono reading); 0: nothing to save
	saveWait  time.Duration // the current wait between Save retries
	flush     bool          // Wait asks for the Save now
	waits     int           // calls of Wait retrying the Save: no timer meanwhile
	held      func()        // the Locker's unlock, kept while the token is unsaved
	retry     chan struct{} // closed to stop the Save-retry timer; nil when none runs
	retryStop func() bool   // stops the Save-retry timer
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
	var remind error
	if t := r.failures; t != nil && t.err != nil && now < t.until {
		// A permanent failure (a revoked grant) is served from memory,
		// unless the Store may hold a token saved since (the customer
		// connected again): a flight reads it, and refreshes only if it
		// does.
		if !isPermanent(t.err) || s.Store == nil {
			err := t.err
			r.mu.Unlock()
			return nil, err
		}
		remind = t.err
	}
	if ct := s.cache.Load(); ct != nil && !ct.usable(now) {
		want = max(want, ct.next()) // the caller needs a usable token
	}
	r.want = max(r.want, want)
	c := s.join(ctx, reason, true, remind)
	ch := flights.DoChan(c.key, c.fn)
	r.mu.Unlock()
	if testHookJoined != nil {
		testHookJoined(s)
	}
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*snapshot), nil
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
	if int64(now) < r.backgroundAfter.Load() {
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
		c := s.join(ctx, reason, false, nil)
		flights.DoChan(c.key, c.fn)
	}
	r.mu.Unlock()
}

// busy reports whether s has work that Wait would wait for: a flight
// under way or ending, or a token whose Save failed.
func (s *TokenSource) busy() bool {
	if ct := s.cache.Load(); ct != nil && ct.unsaved {
		return true
	}
	r := &s.flight
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.call != nil || r.failures != nil && (r.failures.held != nil || r.failures.retry != nil)
}

// saveDue reports whether a failed Save is due for a retry at now. r.mu
// must be held.
func (r *refresher) saveDue(now time.Duration) bool {
	t := r.failures
	return t != nil && (t.flush || t.saveNext != 0 && now >= t.saveNext)
}

// fly returns the flight under way, counting the caller in when wait
// says it waits, or sets up the next one, which the caller's DoChan
// starts. r.mu must be held.
func (s *TokenSource) join(ctx context.Context, reason RefreshReason, wait bool, remind error) *flightCall {
	r := &s.flight
	o := s.Observer
	if c := r.call; c != nil && !c.ended {
		if wait {
			c.waiters++
			if o != nil && o.RefreshJoin != nil && c.reported {
				o.RefreshJoin(c.ctx, ctx)
			}
		}
		return c
	}
	if r.id == 0 {
		r.id = sourceSeq.Add(1)
	}
	cur := s.cache.Load()
	c := &flightCall{
		key:     strconv.FormatUint(r.id, 36) + "/" + strconv.FormatUint(uint64(cur.next()-1), 36),
		done:    make(chan struct{}),
		ctx:     ctx,
		reason:  reason,
		start:   s.mono(),
		end:     s.mono() + refreshTimeout,
		recheck: remind != nil,
		remind:  remind,
	}
	c.fn = func() (any, error) { return s.run(c) }
	if wait {
		c.waiters = 1
	}
	if remind == nil {
		s.reportStart(c)
	}
	r.call = c
	r.backgroundAfter.Store(int64(maxDuration))
	return c
}

// run is the flight. It takes steps until a usable token of the highest
// generation wanted is served (and saved, when a Save retry is due), or
// a step fails. The steps return what they got; run alone serves it and
// records it. It decides to end under the lock at which
// callers record their want.
func (s *TokenSource) run(c *flightCall) (any, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), refreshTimeout)
	defer cancel()
	r := &s.flight
	saveOnly := false // the last step only retried a Save no caller waits on
	for step := 0; ; step++ {
		r.mu.Lock()
		// Read under the lock, so that a rejection marked before a
		// caller records its want is seen here.
		cur := s.cache.Load()
		now := s.mono()
		saveDue := cur != nil && cur.unsaved && r.saveDue(now)
		// A flight that retried a Save ends then, even if the token it
		// saved (or failed to) is not usable: no caller waits for a
		// newer one (each that found it unusable wants its successor),
		// and the Save retries, Wait's too, must not wait on a refresh.
		if (cur.usable(now) || saveOnly) && cur.gen >= r.want && !saveDue {
			if unlock := c.unlock; unlock != nil && !cur.unsaved {
				// Release the Locker's lock before ending, and look
				// again: the token may be rejected meanwhile, and the
				// callers of this flight want a usable one.
				c.unlock = nil
				r.mu.Unlock()
				unlock()
				step--
				continue
			}
			if c.outcome >= OutcomeLoaded {
				r.recovered()
			}
			s.endFlight(c, cur, now, 0)
			r.mu.Unlock()
			return s.finish(c, cur, nil)
		}
		want := r.want
		if t := r.failures; t != nil {
			t.flush = false
		}
		r.mu.Unlock()

		var (
			g   got
			err error
		)
		if step < maxSteps {
			g, err = s.advance(ctx, c, cur, want, saveDue)
		} else {
			err = fmt.Errorf("pandadocauth: %w: no usable token after %d tries (is it expired on arrival?)", ErrMalformedResponse, maxSteps)
		}
		s.record(c, cur, g)
		saveOnly = saveDue && c.reason == ReasonSave && g.tok == nil

		if err != nil {
			now := s.mono()
			r.mu.Lock()
			// The callers of this flight get its error: their wants are
			// answered, and a later flight must not refresh for them.
			r.want = s.cache.Load().next() - 1
			var resume time.Duration
			if err == c.remind {
				resume = r.failures.until // nothing new in the Store: the back-off goes on
			} else {
				resume = r.remember(err, now)
			}
			s.endFlight(c, s.cache.Load(), now, resume)
			r.mu.Unlock()
			if ct := s.cache.Load(); c.reason == ReasonEarly && ct.usable(now) {
				s.logWarn("pandadocauth: early refresh failed; serving the current token", slog.Any("error", err), slog.Duration("retry_in", resume-now))
			}
			return s.finish(c, nil, err)
		}
	}
}

// record serves and records what a step of flight c got, cur being the
// snapshot served when the step began.
func (s *TokenSource) record(c *flightCall, cur *snapshot, g got) {
	c.tries += g.tries
	c.outcome = max(c.outcome, g.outcome)
	switch {
	case g.tok != nil:
		header := g.header
		if header == "" {
			header = "Bearer " + g.tok.AccessToken
		}
		ct := s.snapshotWith(g.tok, g.from, header)
		ct.unsaved = g.saveErr != nil
		ct.invalid = ct.invalid || g.invalid
		s.publish(ct)
	case g.saved:
		s.mark(cur, func(c *snapshot) { c.unsaved = false })
	case g.saveErr != nil && cur != nil:
		s.mark(cur, func(c *snapshot) { c.unsaved = true }) // a Save of it again failed
	}
	r := &s.flight
	now := s.mono()
	r.mu.Lock()
	switch {
	case g.saveErr != nil:
		t := r.failuresOrNew()
		t.saveWait = min(max(2*t.saveWait, saveRetryInterval), maxSaveRetryInterval)
		t.saveNext = now + t.saveWait
	case g.saved || g.tok != nil:
		if t := r.failures; t != nil {
			t.saveNext, t.saveWait = 0, 0
			s.stopSaveRetry(t)
			if t.held != nil && c.unlock == nil {
				c.unlock, t.held = t.held, nil // released when the flight ends
			}
		}
	}
	r.mu.Unlock()
}

// endFlight ends flight c: later callers start a new one. cur is the snapshot
// served. While it is unsaved, the Locker's lock is kept and a timer
// retries the Save; no background flight starts before resume. r.mu must
// be held.
func (s *TokenSource) endFlight(c *flightCall, cur *snapshot, now, resume time.Duration) {
	r := &s.flight
	c.ended = true
	flights.Forget(c.key)
	if cur != nil && cur.unsaved {
		t := r.failuresOrNew()
		if c.unlock != nil && t.held == nil {
			t.held, c.unlock = c.unlock, nil
		}
		if t.saveNext <= now {
			// Due, yet still unsaved: this flight could not even try
			// (its Load or Lock failed). Back off as after a failed Save.
			t.saveWait = min(max(2*t.saveWait, saveRetryInterval), maxSaveRetryInterval)
			t.saveNext = now + t.saveWait
		}
		resume = max(resume, t.saveNext) // no lock per request until the Save retry is due
		s.armSaveRetry(t, now)
	} else if t := r.failures; t != nil && t.saveNext != 0 && t.held == nil {
		// The token served is saved (or another replaced it): no Save
		// is due, whatever an earlier failure left.
		t.saveNext, t.saveWait = 0, 0
		s.stopSaveRetry(t)
	}
	r.backgroundAfter.Store(int64(resume))
}

// finish lets go of flight c once it has ended: it releases the
// Locker's lock unless the unsaved token keeps it, reports to the
// Observer, and closes done, so that Wait, which waits for an ending
// flight too, returns only when all of it is done.
func (s *TokenSource) finish(c *flightCall, val *snapshot, err error) (any, error) {
	r := &s.flight
	r.mu.Lock()
	unlock := c.unlock
	c.unlock = nil
	r.mu.Unlock()
	if unlock != nil {
		unlock()
	}
	s.reportDone(c, err)
	r.mu.Lock()
	if r.call == c {
		r.call = nil
	}
	r.mu.Unlock()
	close(c.done)
	if err != nil {
		return nil, err
	}
	return val, nil
}

// reportStart reports the start of flight c to the Observer. A flight
// that only reads the Store for a token saved since a permanent failure
// is not a refresh: it is reported only if it goes on to one. r.mu must
// be held.
func (s *TokenSource) reportStart(c *flightCall) {
	c.reported = true
	if o := s.Observer; o != nil && o.RefreshStart != nil {
		if fctx := o.RefreshStart(c.ctx, RefreshStartInfo{Grant: s.grantName(), Reason: c.reason}); fctx != nil {
			c.ctx = fctx
		}
	}
}

// done reports the end of flight c to the Observer.
func (s *TokenSource) reportDone(c *flightCall, err error) {
	o := s.Observer
	if o == nil || o.RefreshDone == nil || !c.reported {
		return
	}
	info := RefreshDoneInfo{Grant: s.grantName(), Reason: c.reason, Outcome: c.outcome, Attempts: c.tries, Duration: s.mono() - c.start, Err: err}
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

// armSaveRetry starts the timer that retries the Save of the unsaved
// token at t.saveNext, unless it runs already: the one timer a source
// keeps at rest, and only while a token is unsaved. r.mu must be held.
func (s *TokenSource) armSaveRetry(t *failures, now time.Duration) {
	s.stopSaveRetry(t) // a timer that fired already must not start a second Save
	if t.waits > 0 {
		return // Wait retries the Save itself
	}
	quit := make(chan struct{})
	fire, stop := s.clock().NewTimer(max(t.saveNext-now, 0))
	t.retry, t.retryStop = quit, stop
	go func() {
		select {
		case <-quit:
			return
		case <-fire:
		}
		r := &s.flight
		r.mu.Lock()
		defer r.mu.Unlock()
		if t.retry != quit {
			return // stopped meanwhile
		}
		t.retry, t.retryStop = nil, nil
		if !r.flying() {
			t.flush = true
			c := s.join(context.Background(), ReasonSave, false, nil)
			flights.DoChan(c.key, c.fn)
		}
	}()
}

// stopSaveRetry stops the Save-retry timer, if one runs. r.mu must be
// held.
func (s *TokenSource) stopSaveRetry(t *failures) {
	if t.retry != nil {
		close(t.retry)
		t.retryStop()
		t.retry, t.retryStop = nil, nil
	}
}

// flying reports whether a flight is under way and not ending. r.mu
// must be held.
func (r *refresher) flying() bool {
	return r.call != nil && !r.call.ended
}

// recovered forgets the failures after a flight that obtained a token.
// r.mu must be held.
func (r *refresher) recovered() {
	if t := r.failures; t != nil {
		t.err, t.until, t.background, t.throttle = nil, 0, 0, 0
		if t.saveNext == 0 && t.held == nil && t.retry == nil {
			r.failures = nil
		}
	}
}

// failuresOrNew returns r.failures, allocating it. r.mu must be held.
func (r *refresher) failuresOrNew() *failures {
	if r.failures == nil {
		r.failures = &failures{}
	}
	return r.failures
}

// remember records a failed flight at now and returns the Mono reading
// before which no background flight starts. r.mu must be held.
func (r *refresher) remember(err error, now time.Duration) (resume time.Duration) {
	t := r.failuresOrNew()
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

// flush is Wait: it waits for the flight under way, ending ones too,
// and saves an unsaved token, retrying every saveRetryInterval for up to
// flushTimeout. When it gives up, the Save retries and the Locker's lock
// they keep go on (see Wait).
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
			// Wait gives up waiting, not saving: the token is still
			// served, and until it is saved the lock stays held and the
			// timer retries, so that no other process presents the
			// refresh token it replaced.
			r.mu.Unlock()
			s.logError("pandadocauth: the token is still not saved; the newest refresh token is in memory only, and the Save is retried")
			return
		}
		t := r.failuresOrNew()
		t.flush = true
		t.waits++
		s.stopSaveRetry(t)
		c := s.join(context.Background(), ReasonSave, true, nil)
		flights.DoChan(c.key, c.fn)
		r.mu.Unlock()
		<-c.done
		if cur := s.cache.Load(); cur != nil && cur.unsaved {
			timer, _ := clk.NewTimer(min(saveRetryInterval, max(deadline-clk.Mono(), 0)))
			<-timer
		}
		r.mu.Lock()
		t.waits--
		if cur := s.cache.Load(); t.waits == 0 && cur != nil && cur.unsaved && r.call == nil {
			s.armSaveRetry(t, clk.Mono())
		}
		r.mu.Unlock()
	}
}
