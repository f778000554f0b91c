package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
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
// (want = max(want, seen.gen+1)) and joins the one flight: a
// singleflight call that takes no arguments and runs until the served
// generation reaches the highest want. So every caller's question is the
// same question, and one flight answers them all, success or failure.
// The flight decides to end under the same lock at which callers record
// their want, and forgets its singleflight key there, so a caller either
// is counted by the flight it joins or starts the next one: none is
// handed an answer to an older question.
//
// The flight runs on a context detached from the callers'
// (context.WithoutCancel, keeping their values) with a deadline of its
// own, and each caller waits on its own context: a caller whose context
// ends leaves at once, and the refresh goes on for the others instead of
// being cancelled under them. A failure is remembered for a short
// back-off, so callers arriving after a failed flight fail fast instead
// of starting another.
//
// One singleflight.Group serves every TokenSource in the process, keyed
// by source, so a source keeps no map of its own.

const (
	// refreshTimeout bounds one flight, all attempts included. It runs
	// on a context detached from the callers', so it needs a deadline of
	// its own.
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
	// attempt failed transiently, unless Retry-After says longer.
	transientFailureBackoff = time.Second

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

// flights deduplicates the refreshes of every TokenSource, keyed by
// source.
var flights singleflight.Group

// refresher is a TokenSource's flight state.
type refresher struct {
	mu      sync.Mutex // guards the fields below it
	key     string     // the source's singleflight key, set on first flight
	want    uint64     // the highest generation a caller waits for
	flying  bool       // a flight is under way: key is in flights
	flush   bool       // Wait asks for an unsaved token to be saved now
	failure *failure   // the last flight's failure; nil after a success

	// quiet is a Mono reading before which no background flight (early
	// refresh, Save retry) starts: a flight is under way (the maximum),
	// or the last one failed. It is read without the lock on requests
	// inside the early-refresh window.
	quiet atomic.Int64

	// retryBase is the first back-off between attempts; 0 means
	// defaultRetryBase. Tests shorten it.
	retryBase time.Duration
}

// failure is what a failed flight leaves: the error callers get until
// it ends, and the back-offs that grow while flights keep failing.
type failure struct {
	err        error
	until      time.Duration // a Mono reading
	background time.Duration // the wait before the next early refresh
	throttle   time.Duration // the last 429 back-off
}

// testHookJoined, if set, is called after a caller has joined a flight
// and before it waits for it. Tests use it to know when callers are
// waiting.
var testHookJoined func(*TokenSource)

// await waits until a usable token of generation want or later is
// served, joining the one flight, or until ctx ends.
func (s *TokenSource) await(ctx context.Context, want uint64) (*snapshot, error) {
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
	if f := r.failure; f != nil && now < f.until {
		r.mu.Unlock()
		return nil, f.err
	}
	r.want = max(r.want, want)
	ch := s.fly(ctx)
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
	if !early && int64(now) < s.store.saveNext.Load() {
		return
	}
	r.mu.Lock()
	if !r.flying {
		if early {
			r.want = max(r.want, ct.gen+1)
		}
		s.fly(ctx)
	}
	r.mu.Unlock()
}

// joinOnly is the function a caller passes to join a flight that is
// known to be under way; it is never called.
func joinOnly() (any, error) {
	return nil, errors.New("pandadocauth: internal error: no flight to join")
}

// fly starts the flight, or joins the one under way, and returns the
// channel its result arrives on. r.mu must be held.
func (s *TokenSource) fly(ctx context.Context) <-chan singleflight.Result {
	r := &s.flight
	if r.key == "" {
		r.key = fmt.Sprintf("%p", s)
	}
	if r.flying {
		return flights.DoChan(r.key, joinOnly)
	}
	r.flying = true
	r.quiet.Store(int64(maxDuration))
	return flights.DoChan(r.key, func() (any, error) { return s.run(ctx) })
}

// run is the flight. It takes steps until a usable token of the highest
// generation wanted is served (and saved, when a Save retry is due), or
// a step fails.
func (s *TokenSource) run(ctx context.Context) (any, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	defer cancel()
	r := &s.flight
	progress := false
	for step := 0; ; step++ {
		cur := s.cache.Load()
		now := s.mono()
		r.mu.Lock()
		saveDue := cur != nil && cur.unsaved && (r.flush || int64(now) >= s.store.saveNext.Load())
		if cur.usable(now) && cur.gen >= r.want && !saveDue {
			if progress {
				r.failure = nil
			}
			r.land(0)
			r.mu.Unlock()
			return cur, nil
		}
		want := r.want
		r.flush = false
		r.mu.Unlock()
		var (
			advanced bool
			err      error
		)
		if step < maxSteps {
			advanced, err = s.advance(ctx, cur, want, saveDue)
		} else {
			err = fmt.Errorf("pandadocauth: %w: no usable token after %d tries (is it expired on arrival?)", ErrMalformedResponse, maxSteps)
		}
		if err != nil {
			now := s.mono()
			r.mu.Lock()
			quiet := r.remember(err, now)
			r.land(quiet)
			r.mu.Unlock()
			if ct := s.cache.Load(); ct.usable(now) {
				s.logWarn("pandadocauth: early refresh failed; serving the current token", slog.Any("error", err), slog.Duration("retry_in", quiet-now))
			}
			return nil, err
		}
		progress = progress || advanced
	}
}

// land ends the flight: later callers start a new one. No early refresh
// starts before quiet. r.mu must be held.
func (r *refresher) land(quiet time.Duration) {
	r.flying = false
	flights.Forget(r.key)
	r.quiet.Store(int64(quiet))
}

// remember records a failed flight at now and returns the Mono reading
// before which no early refresh starts. r.mu must be held.
func (r *refresher) remember(err error, now time.Duration) (quiet time.Duration) {
	f := r.failure
	if f == nil {
		f = &failure{}
		r.failure = f
	}
	d := permanentFailureBackoff
	var t transientError
	if errors.As(err, &t) {
		d = t.backoff
		if t.throttled && d == 0 {
			f.throttle = min(max(2*f.throttle, minThrottleBackoff), maxThrottleBackoff)
			d = f.throttle
		}
	}
	f.err, f.until = err, now+d
	f.background = min(max(2*f.background, minBackgroundBackoff), maxBackgroundBackoff)
	return now + max(d, f.background)
}

// refreshToken obtains a new token with the refresh token rt, retrying
// transient failures.
func (s *TokenSource) refreshToken(ctx context.Context, rt string) (tokenResult, error) {
	if rt == "" {
		return tokenResult{}, fmt.Errorf("pandadocauth: token expired or rejected: %w", ErrNoRefreshToken)
	}
	c := s.clock()
	delay := s.flight.retryBase
	if delay <= 0 {
		delay = defaultRetryBase
	}
	for attempt := 1; ; attempt++ {
		tok, aerr := s.Config.refreshAttempt(ctx, rt, c.Now)
		if aerr == nil {
			return tokenResult{tok, attempt}, nil
		}
		// A 429 without Retry-After is PandaDoc's sliding window:
		// another attempt within the second cannot pass.
		if !aerr.transient || attempt >= maxAttempts || aerr.throttled && aerr.retryAfter == 0 {
			s.logWarn("pandadocauth: token refresh failed", slog.Any("error", aerr.err), slog.Int("attempts", attempt))
			return tokenResult{}, classify(aerr)
		}
		wait := delay/2 + rand.N(delay/2+1)
		if aerr.retryAfter > 0 {
			wait = aerr.retryAfter
		}
		if deadline, has := ctx.Deadline(); has && time.Until(deadline) < wait {
			return tokenResult{}, classify(aerr)
		}
		s.logInfo("pandadocauth: token refresh failed; retrying", slog.Any("error", aerr.err), slog.Int("attempt", attempt), slog.Duration("wait", wait))
		timer, stop := c.NewTimer(wait)
		select {
		case <-ctx.Done():
			stop()
			return tokenResult{}, classify(aerr)
		case <-timer:
		}
		delay *= 2
	}
}

// tokenResult is a token from the endpoint and the attempts it took.
type tokenResult struct {
	tok      *oauth2.Token
	attempts int
}

// classify turns the last attempt's failure into the flight's error.
func classify(aerr *attemptError) error {
	if !aerr.transient {
		return aerr.err
	}
	t := transientError{error: aerr.err, throttled: aerr.throttled}
	switch {
	case aerr.retryAfter > 0:
		t.backoff = max(transientFailureBackoff, aerr.retryAfter)
	case !aerr.throttled:
		t.backoff = transientFailureBackoff
	}
	return t
}

// flush is Wait: it joins the flight under way, and saves an unsaved
// token, retrying every saveRetryInterval for up to flushTimeout.
func (s *TokenSource) flush() {
	r := &s.flight
	c := s.clock()
	deadline := c.Mono() + flushTimeout
	for {
		r.mu.Lock()
		cur := s.cache.Load()
		unsaved := cur != nil && cur.unsaved
		if !r.flying && !unsaved {
			r.mu.Unlock()
			return
		}
		now := c.Mono()
		if !r.flying && now >= deadline {
			r.mu.Unlock()
			s.logError("pandadocauth: giving up saving the token; the newest refresh token is in memory only")
			return
		}
		retry := !r.flying
		if retry {
			r.flush = true
		}
		ch := s.fly(context.Background())
		r.mu.Unlock()
		if testHookJoined != nil {
			testHookJoined(s)
		}
		<-ch
		if cur := s.cache.Load(); retry && cur != nil && cur.unsaved {
			timer, _ := c.NewTimer(min(saveRetryInterval, max(deadline-c.Mono(), 0)))
			<-timer
		}
	}
}
