package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Limiter is an http.RoundTripper that keeps requests under PandaDoc's
// rate limits. Its zero value is ready to use.
//
// PandaDoc counts requests per user and per operation class (see Class
// and DefaultLimits) over a sliding window of 60 seconds, and answers
// 429 past the limit. A Limiter keeps the same log, per (Key, Class): a
// burst up to the limit goes at once; past it, requests wait, first come
// first served, for the first free slot, so that no more than the limit
// is sent in any window. A request whose slot lies past its context's
// deadline, or further than MaxWait, fails at once, unsent, with a
// *RateLimitError that matches context.DeadlineExceeded. The wait holds
// no lock, and a Limiter at rest holds no goroutine and no timer: what a
// (key, class) idle for a window kept is dropped by the next request.
//
// A 429 is retried whatever the method: PandaDoc throttles before it
// acts (its message is Django REST Framework's, whose throttles run
// before the view), so a throttled POST did nothing. The retry waits for
// the largest of Retry-After, the body's "Expected available in N
// seconds" and the next free slot, and the whole (key, class) waits with
// it; the limit of the (key, class) drops to what PandaDoc accepted in
// the last window, and climbs back over windows without a 429. A 429
// whose wait does not fit the deadline or MaxWait, or whose body cannot
// be replayed, is returned as it came, its body intact.
//
// Network errors and 5xx answers (but 501 and 505) are retried, Retries
// times with a back-off (and Retry-After, up to a window), for GET, HEAD,
// OPTIONS, PUT and DELETE only, whose repetition does no harm; a request
// of another method is retried only when it provably never left this
// process (its connection failed before its headers were written, which
// net/http reports through net/http/httptrace). PandaDoc has no
// idempotency key, so a POST that may have reached it is never sent
// again: a second create is a second document, and PandaDoc bills
// documents. To learn whether an ambiguous create happened, tag each
// create with metadata of your own ("metadata": {"request_id": …}) and
// look it up with GET /public/v1/documents?metadata_request_id=… (a
// cheap List) before creating again.
//
// Bodies are never buffered: a request is sent again only if it has no
// body or GetBody. The request is not modified, and its body is closed
// on every path. The Idempotency-Key and X-Idempotency-Key headers are
// dropped from what is sent: PandaDoc ignores them, and net/http would
// take them as leave to replay a POST on its own.
//
// Put it below the authenticating RoundTripper, so that every request on
// the wire takes a slot, a 401 replay included:
//
//	client := &http.Client{Transport: grants.Transport(&pandadocauth.Limiter{})}
//	client := pandadocauth.NewClient(&http.Client{Transport: &pandadocauth.Limiter{}}, src)
//
// The token endpoint (/oauth2/…) is never limited. Set the fields before
// first use and do not change them afterwards; a Limiter must not be
// copied after first use. RoundTrip is safe for concurrent use by
// multiple goroutines.
type Limiter struct {
	// Base sends the requests. Nil means http.DefaultTransport.
	Base http.RoundTripper

	// Limits are the requests allowed per Window, per class. A zero
	// field means that class's DefaultLimits value (SandboxLimit with
	// Sandbox); a negative one, no limit.
	Limits Limits

	// Sandbox makes SandboxLimit, PandaDoc's sandbox limit, the default
	// of every class.
	Sandbox bool

	// Window is PandaDoc's window. Zero means 60 seconds; tests shorten
	// it.
	Window time.Duration

	// Margin is added to Window on the client side, so that the jitter
	// between sending a request (counted here) and its arrival (counted
	// by PandaDoc) cannot squeeze more than the limit into one of
	// PandaDoc's windows. Zero means Window/60 (1 s of 60 s, which costs
	// 1.6 % of the throughput); negative, none.
	Margin time.Duration

	// Key names the PandaDoc user a request counts against: PandaDoc
	// counts per user, all of a user's keys and tokens together. Nil
	// means the grant key of the request's context (WithGrant), or one
	// bucket for requests without one. Two grants that one PandaDoc user
	// authorized share a limit: a Key func can map them to one bucket.
	Key func(ctx context.Context) string

	// Store keeps the logs. Nil means in this process; a shared Store
	// (redisstore.Limits) shares the limits across replicas. When it
	// fails, requests are limited in this process, and Logger is told
	// once a minute.
	Store LimitStore

	// MaxWait bounds each wait of a request for its slot. Zero means
	// that only the request's context bounds it (http.Client.Timeout
	// sets that deadline).
	MaxWait time.Duration

	// Retries is how many times a request is sent again after a network
	// error or a 5xx, when that is safe (see above). Zero means
	// DefaultRetries; negative, none. 429s are retried apart, up to
	// MaxThrottledRetries times.
	Retries int

	// Logger, if set, is told when Store fails (once a minute). It never
	// receives a URL's query or a header.
	Logger *slog.Logger

	// Observer, if set, receives the LimitWait, LimitWaited, Throttled
	// and Retried events.
	Observer *Observer

	local     localLimits   // the logs without Store, or while it fails
	storeLog  atomic.Int64  // Mono reading after which a Store failure is logged again
	storeFail atomic.Uint64 // Store failures since the last log
	clk       *clockRef     // nil: the real clock
}

// DefaultRetries is Limiter.Retries when it is zero.
const DefaultRetries = 2

// MaxThrottledRetries bounds how many times a Limiter retries a request
// that PandaDoc answered 429. Each retry waits for PandaDoc's hint and
// the limit it taught, so more than one is rare.
const MaxThrottledRetries = 5

var _ http.RoundTripper = (*Limiter)(nil)

// ErrRateLimited is matched by every *RateLimitError:
// errors.Is(err, ErrRateLimited).
var ErrRateLimited = errors.New("client-side rate limit")

// RateLimitError means the Limiter did not send a request: its slot lay
// past its context's deadline or further than MaxWait (Err is then
// context.DeadlineExceeded), or its context ended while it waited (Err
// is the context's error). errors.Is(err, ErrRateLimited) and
// errors.Is(err, Err) hold.
type RateLimitError struct {
	Grant string        // the Key the request counted against
	Class Class         // the class it counted in
	Wait  time.Duration // from the reservation until the slot
	Err   error

	maxWait bool // MaxWait, not the deadline, was shorter than Wait
}

// Error says the limit is client-side, and why the request was not
// sent.
func (e *RateLimitError) Error() string {
	why := "past the request's deadline"
	switch {
	case e.maxWait:
		why = "longer than Limiter.MaxWait"
	case !errors.Is(e.Err, context.DeadlineExceeded):
		why = "and the request's context ended while it waited"
	}
	grant := ""
	if e.Grant != "" {
		grant = " of grant " + strconv.Quote(e.Grant)
	}
	return fmt.Sprintf("pandadocauth: client-side rate limit: %s request%s not sent: its slot was %v away, %s: %v",
		e.Class, grant, e.Wait.Round(time.Millisecond), why, e.Err)
}

// Unwrap returns ErrRateLimited and Err.
func (e *RateLimitError) Unwrap() []error { return []error{ErrRateLimited, e.Err} }

// RoundTrip sends req when its slot comes, and again when that is safe
// (see Limiter). It does not modify req and always closes its body.
func (l *Limiter) RoundTrip(req *http.Request) (*http.Response, error) {
	reqBodyClosed := false
	if req.Body != nil {
		defer func() {
			if !reqBodyClosed {
				req.Body.Close()
			}
		}()
	}
	if req.URL == nil {
		return nil, errors.New("pandadocauth: request has no URL")
	}
	if isTokenEndpoint(req) {
		reqBodyClosed = true
		return send(l.base(), req)
	}
	ctx := req.Context()
	c := limitCall{l: l, req: req, ctx: ctx}
	if l.Key != nil {
		c.op.Key = l.Key(ctx)
	} else {
		// GrantFromContext, written out: a call costs more than it.
		c.op.Key, _ = ctx.Value(grantCtxKey{}).(string)
	}
	if classSet.Load() {
		c.op.Class = classFor(req)
	} else {
		c.op.Class = ClassOf(req)
	}
	c.op.Window = l.window()
	c.op.Limit = l.limit(c.op.Class)
	if dl, ok := ctx.Deadline(); ok || l.Store != nil || l.MaxWait > 0 {
		if err := c.reserveBy(dl, ok); err != nil {
			return nil, err
		}
	} else {
		// limitCall.reserve, written out for its most frequent case:
		// nothing bounds the wait, no slot to report, the log in this
		// process.
		c.op.MaxWait = maxDuration
		var now time.Duration // l.mono(), written out: clockRef.mono is a call, not inlined
		if l.clk == nil {
			now = time.Since(monoBase)
		} else {
			now = l.clk.Mono()
		}
		c.res.LimitSlot, c.res.local = l.local.reserve(now, &c.op), true
		if !c.res.OK {
			return nil, &RateLimitError{Grant: c.op.Key, Class: c.op.Class, Wait: c.res.Wait, Err: context.DeadlineExceeded}
		}
	}
	if c.res.Wait > 0 {
		if err := c.wait(); err != nil {
			return nil, err
		}
	}
	out := req
	if hasIdempotencyKey(req.Header) {
		out = withoutIdempotencyKeys(req, req.Body)
	}
	// req.Body is closed by Base from here on.
	reqBodyClosed = true
	if m := req.Method; m != http.MethodGet && m != "" {
		return c.run(out)
	}
	// The first attempt of a GET, written out: it needs no trace (see
	// run), and most answers need nothing more.
	c.attempt = 1
	base := l.base()
	resp, err := base.RoundTrip(out)
	if err == nil && resp != nil && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
		return resp, nil
	}
	if resp == nil && err == nil {
		err = noResponse(base)
	}
	next, resp, err := c.after(resp, err, nil)
	if next == nil {
		return resp, err
	}
	return c.run(next)
}

// isTokenEndpoint reports whether req goes to PandaDoc's OAuth 2.0
// endpoints, which the token source paces on its own.
func isTokenEndpoint(req *http.Request) bool {
	p := req.URL.Path
	return len(p) >= 8 && p[:8] == "/oauth2/"
}

// hasIdempotencyKey reports whether h has a header that makes net/http
// replay a request on its own (net/http's Request.isReplayable).
func hasIdempotencyKey(h http.Header) bool {
	if len(h) == 0 {
		return false
	}
	_, a := h["Idempotency-Key"]
	_, b := h["X-Idempotency-Key"]
	return a || b
}

// withoutIdempotencyKeys returns a copy of req with body, without the
// idempotency headers.
func withoutIdempotencyKeys(req *http.Request, body io.ReadCloser) *http.Request {
	r := req.Clone(req.Context())
	r.Body = body
	delete(r.Header, "Idempotency-Key")
	delete(r.Header, "X-Idempotency-Key")
	return r
}

func (l *Limiter) base() http.RoundTripper {
	if l.Base != nil {
		return l.Base
	}
	return http.DefaultTransport
}

// window is the client-side window: Window plus Margin.
func (l *Limiter) window() time.Duration {
	w := l.Window
	if w <= 0 {
		w = time.Minute
	}
	switch {
	case l.Margin > 0:
		return w + l.Margin
	case l.Margin == 0:
		return w + w/60
	}
	return w
}

// limit returns the limit of class c, 0 for none.
func (l *Limiter) limit(c Class) int {
	n := l.Limits.get(c)
	if n == 0 {
		if l.Sandbox {
			return SandboxLimit
		}
		n = DefaultLimits.get(c)
	}
	return max(n, 0)
}

func (l *Limiter) retries() int {
	switch {
	case l.Retries > 0:
		return l.Retries
	case l.Retries == 0:
		return DefaultRetries
	}
	return 0
}

func (l *Limiter) clock() clock { return l.clk.get() }

func (l *Limiter) mono() time.Duration { return l.clk.mono() }

// reservation is a slot and the store it came from.
type reservation struct {
	LimitSlot
	local bool // from l.local: Store is nil or failed
}

// reserve takes a slot for op, from Store or, without one or when it
// fails, from this process. priorLocal says that the slot op.Reported
// reports came from this process.
func (l *Limiter) reserve(ctx context.Context, op *LimitOp, priorLocal bool) reservation {
	if l.Store == nil {
		return reservation{l.local.reserve(l.mono(), op), true}
	}
	o := *op
	if priorLocal && o.Reported.Outcome != SlotNone {
		// The slot reported came from this process, while Store failed.
		l.local.report(l.mono(), &o)
		o.Reported = LimitReport{}
	}
	s, err := l.Store.Reserve(ctx, o)
	if err == nil {
		return reservation{s, false}
	}
	l.storeFailed(ctx, err)
	if !priorLocal {
		// The slot reported is Store's, but the cooldown and the lesson
		// of a 429 still apply here.
		o.Reported.Slot = 0
	}
	return reservation{l.local.reserve(l.mono(), &o), true}
}

// storeTimeout bounds a report to Store made after the request's
// context ended.
const storeTimeout = 5 * time.Second

// report reports op.Reported to the store its slot came from. It runs
// even if ctx has ended.
func (l *Limiter) report(ctx context.Context, op *LimitOp, local bool) {
	if local || l.Store == nil {
		l.local.report(l.mono(), op)
		return
	}
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
		defer cancel()
	}
	if err := l.Store.Report(ctx, *op); err != nil {
		l.storeFailed(ctx, err)
		o := *op
		o.Reported.Slot = 0
		l.local.report(l.mono(), &o)
	}
}

// storeLogInterval is how often a failing Store is logged.
const storeLogInterval = time.Minute

// storeFailed logs a Store failure, at most once per storeLogInterval.
func (l *Limiter) storeFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // the caller left; the Store is not to blame
	}
	l.storeFail.Add(1)
	if l.Logger == nil {
		return
	}
	now := l.mono()
	next := l.storeLog.Load()
	if (next != 0 && now < time.Duration(next)) || !l.storeLog.CompareAndSwap(next, int64(now+storeLogInterval)) {
		return
	}
	n := l.storeFail.Swap(0)
	l.Logger.Warn("pandadocauth: Limiter.Store failed; limiting in this process meanwhile, so replicas may together exceed PandaDoc's limits",
		slog.Uint64("failures", n), slog.Any("error", err))
}
