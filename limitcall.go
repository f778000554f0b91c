package pandadocauth

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync/atomic"
	"time"
)

// limitCall is one request through a Limiter: its slot and its
// attempts. RoundTrip takes the first slot, then run sends and retries.
type limitCall struct {
	l   *Limiter
	req *http.Request
	ctx context.Context
	op  LimitOp     // Reported and After are set for the next reservation only
	res reservation // the slot of the last attempt

	attempt   int // attempts sent
	throttled int // 429s retried
	retried   int // network errors and 5xx retried
}

// reserve reserves the slot of the next attempt, applying c.op.Reported.
// It fails with a *RateLimitError when the slot is too far away; the
// report is applied either way.
func (c *limitCall) reserve() error {
	dl, ok := c.ctx.Deadline()
	return c.reserveBy(dl, ok)
}

// reserveBy is reserve for a context whose deadline is dl, if ok.
func (c *limitCall) reserveBy(dl time.Time, ok bool) error {
	// The longest the request may wait now, and whether MaxWait rather
	// than the deadline sets it.
	l := c.l
	mw, byMax := maxDuration, false
	if l.MaxWait > 0 {
		mw, byMax = l.MaxWait, true
	}
	if ok {
		// The deadline is on the real clock, like the context's timer.
		// A slot at the deadline is too late.
		if d := time.Until(dl) - 1; d < mw {
			mw, byMax = d, false
		}
	}
	if mw < 0 {
		// The deadline has passed: not a matter of rate.
		if c.op.Reported.Outcome != SlotNone {
			l.report(c.ctx, &c.op, c.res.local)
		}
		if err := c.ctx.Err(); err != nil {
			return err
		}
		return context.DeadlineExceeded
	}
	c.op.MaxWait = mw
	if l.Store == nil {
		c.res.LimitSlot, c.res.local = l.local.reserve(l.mono(), &c.op), true
	} else {
		c.res = l.reserve(c.ctx, &c.op, c.res.local)
	}
	c.op.Reported, c.op.After = LimitReport{}, 0
	if !c.res.OK {
		return &RateLimitError{Grant: c.op.Key, Class: c.op.Class, Wait: c.res.Wait, Err: context.DeadlineExceeded, maxWait: byMax}
	}
	return nil
}

// wait waits for the slot reserved. If the context ends first, the slot
// is given back and the error is a *RateLimitError.
func (c *limitCall) wait() error {
	if c.res.Wait <= 0 {
		return nil
	}
	o := c.l.Observer
	if o != nil && o.LimitWait != nil {
		o.LimitWait(c.ctx, LimitWaitInfo{Grant: c.op.Key, Class: c.op.Class, Wait: c.res.Wait, Attempt: c.attempt + 1})
	}
	clk := c.l.clock()
	start := clk.Mono()
	timer, stop := clk.NewTimer(c.res.Wait)
	var err error
	select {
	case <-timer:
	case <-c.ctx.Done():
		stop()
		err = c.ctx.Err()
		op := c.op
		op.Reported = LimitReport{Slot: c.res.ID, Outcome: SlotUnused}
		c.l.report(c.ctx, &op, c.res.local)
	}
	if o != nil && o.LimitWaited != nil {
		o.LimitWaited(c.ctx, LimitWaitedInfo{Grant: c.op.Key, Class: c.op.Class, Wait: c.res.Wait, Waited: clk.Mono() - start, Attempt: c.attempt + 1, Err: err})
	}
	if err != nil {
		return &RateLimitError{Grant: c.op.Key, Class: c.op.Class, Wait: c.res.Wait, Err: err}
	}
	return nil
}

// run sends out, whose slot has come, and retries what may be retried.
// Base closes the body of every attempt sent; run closes those it does
// not send.
func (c *limitCall) run(out *http.Request) (*http.Response, error) {
	for {
		c.attempt++
		var tr *sendTrace
		if !idempotent(c.req.Method) {
			// Only what net/http reports can prove that such a request
			// never left.
			tr = new(sendTrace)
			out = out.WithContext(httptrace.WithClientTrace(out.Context(), tr.hooks()))
		}
		resp, err := send(c.l.base(), out)
		next, resp, err := c.after(resp, err, tr)
		if next == nil {
			return resp, err
		}
		out = next
	}
}

// after decides on what an attempt got, an answer or an error: it
// returns the next attempt, whose slot has come, or what to return. tr is
// the attempt's trace, nil for an idempotent request.
func (c *limitCall) after(resp *http.Response, err error, tr *sendTrace) (*http.Request, *http.Response, error) {
	switch {
	case err != nil:
		next, err := c.afterError(err, tr)
		return next, resp, err
	case resp.StatusCode == http.StatusTooManyRequests:
		return c.afterThrottled(resp)
	case retryableStatus(resp.StatusCode) && idempotent(c.req.Method):
		return c.afterStatus(resp)
	}
	return nil, resp, nil
}

// retry returns the next attempt: the request with body.
func (c *limitCall) retry(body io.ReadCloser) *http.Request {
	return withoutIdempotencyKeys(c.req, body)
}

// afterError decides on a network error: it returns the retry, whose
// slot has come, or the error to return.
func (c *limitCall) afterError(err error, tr *sendTrace) (*http.Request, error) {
	unsent := tr != nil && tr.unsent()
	if unsent {
		// PandaDoc never saw it: the slot goes back with the next
		// reservation, or now.
		c.op.Reported = LimitReport{Slot: c.res.ID, Outcome: SlotUnused}
	}
	retry := c.ctx.Err() == nil && (unsent || idempotent(c.req.Method)) && c.retried < c.l.retries()
	var body io.ReadCloser
	if retry {
		body, retry = replayBody(c.req)
	}
	if !retry {
		if unsent {
			c.l.report(c.ctx, &c.op, c.res.local)
		}
		return nil, err
	}
	reason := RetryNetwork
	if unsent {
		reason = RetryUnsent
	}
	c.op.After = c.retryWait()
	if rerr := c.reserve(); rerr != nil {
		closeBody(body)
		return nil, err // the real failure, not the reason it was not retried
	}
	c.retried++
	c.retriedEvent(reason, 0, err)
	if werr := c.wait(); werr != nil {
		closeBody(body)
		return nil, werr
	}
	return c.retry(body), nil
}

// afterThrottled decides on a 429: it returns the retry, whose slot has
// come, or the response to return.
func (c *limitCall) afterThrottled(resp *http.Response) (*http.Request, *http.Response, error) {
	clk := c.l.clock()
	hint, src := throttleHint(resp, clk.Now())
	hint = min(hint, c.op.Window)
	c.op.Reported = LimitReport{Slot: c.res.ID, Outcome: SlotThrottled, Hint: hint}
	retry := c.throttled < MaxThrottledRetries
	var body io.ReadCloser
	if retry {
		body, retry = replayBody(c.req)
	}
	if retry {
		// The report and the retry's slot in one call; a slot too far
		// away is not taken, and the 429 is returned.
		retry = c.reserve() == nil
	} else {
		c.l.report(c.ctx, &c.op, c.res.local)
		c.op.Reported = LimitReport{}
	}
	info := ThrottledInfo{Grant: c.op.Key, Class: c.op.Class, Hint: hint, HintSource: src, Retried: retry}
	if retry {
		info.Wait = c.res.Wait
	}
	if o := c.l.Observer; o != nil && o.Throttled != nil {
		o.Throttled(c.ctx, info)
	}
	if !retry {
		closeBody(body)
		return nil, resp, nil
	}
	drain(resp)
	c.throttled++
	c.retriedEvent(RetryThrottled, resp.StatusCode, nil)
	if err := c.wait(); err != nil {
		closeBody(body)
		return nil, nil, err
	}
	return c.retry(body), nil, nil
}

// afterStatus decides on a 5xx to an idempotent request: it returns the
// retry, whose slot has come, or the response to return.
func (c *limitCall) afterStatus(resp *http.Response) (*http.Request, *http.Response, error) {
	if c.retried >= c.l.retries() || c.ctx.Err() != nil {
		return nil, resp, nil
	}
	ra, _ := retryAfter(resp.Header, c.l.clock().Now())
	if ra > c.op.Window {
		return nil, resp, nil // a long pause asked for: the caller's call
	}
	body, ok := replayBody(c.req)
	if !ok {
		return nil, resp, nil
	}
	c.op.After = max(c.retryWait(), ra)
	if c.reserve() != nil {
		closeBody(body)
		return nil, resp, nil
	}
	drain(resp)
	c.retried++
	c.retriedEvent(RetryStatus, resp.StatusCode, nil)
	if err := c.wait(); err != nil {
		closeBody(body)
		return nil, nil, err
	}
	return c.retry(body), nil, nil
}

func (c *limitCall) retriedEvent(reason RetryReason, status int, err error) {
	if o := c.l.Observer; o != nil && o.Retried != nil {
		o.Retried(c.ctx, RetriedInfo{Grant: c.op.Key, Class: c.op.Class, Attempt: c.attempt + 1, Reason: reason, Status: status, Err: err, Wait: c.res.Wait})
	}
}

// retryWait is the wait before the next retry of a network error or a
// 5xx: 1 s, 2 s, then 4 s, each between half and all of it at random.
func (c *limitCall) retryWait() time.Duration {
	d := time.Second << min(c.retried, 2)
	return d/2 + rand.N(d/2+1)
}

// idempotent reports whether sending a request of method twice does what
// sending it once does.
func idempotent(method string) bool {
	switch method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// retryableStatus reports whether a status may pass by itself: a 5xx but
// 501 Not Implemented and 505 HTTP Version Not Supported.
func retryableStatus(code int) bool {
	return code >= 500 && code <= 599 && code != http.StatusNotImplemented && code != http.StatusHTTPVersionNotSupported
}

// sendTrace records, through net/http/httptrace, whether a request was
// on its way: a connection was asked for (so net/http reports on it) and
// its headers were written.
type sendTrace struct {
	conn  atomic.Bool
	wrote atomic.Bool
}

func (t *sendTrace) hooks() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GetConn:      func(string) { t.conn.Store(true) },
		WroteHeaders: func() { t.wrote.Store(true) },
	}
}

// unsent reports whether the request provably never reached the server:
// net/http looked for a connection and wrote no header on it. A Base
// that reports nothing proves nothing.
func (t *sendTrace) unsent() bool { return t.conn.Load() && !t.wrote.Load() }

// maxHintBytes bounds how much of a 429's body is read for its hint.
const maxHintBytes = 4 << 10

// throttleHint returns the wait a 429 asks for, and where it came from:
// the larger of Retry-After (seconds or an HTTP date) and the body's
// "Expected available in N seconds" (Django REST Framework's message,
// which PandaDoc sends). It reads at most maxHintBytes of the body and
// puts them back, so that resp reaches the caller intact.
func throttleHint(resp *http.Response, now time.Time) (time.Duration, HintSource) {
	hint, src := time.Duration(0), HintNone
	if ra, ok := retryAfter(resp.Header, now); ok {
		hint, src = ra, HintRetryAfter
	}
	if resp.Body == nil || resp.Body == http.NoBody {
		return hint, src
	}
	prefix := make([]byte, maxHintBytes)
	n, err := io.ReadFull(resp.Body, prefix)
	prefix = prefix[:n]
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		resp.Body = &readBody{Reader: bytes.NewReader(prefix), Closer: resp.Body}
	} else {
		resp.Body = &readBody{Reader: io.MultiReader(bytes.NewReader(prefix), resp.Body), Closer: resp.Body}
	}
	if d, ok := bodyHint(prefix); ok && d > hint {
		hint, src = d, HintBody
	}
	return hint, src
}

// readBody is a response body of which a part was read and put back.
type readBody struct {
	io.Reader
	io.Closer
}

// bodyHint reads the seconds of "Expected available in N second(s)" in
// b; N may have a fraction.
func bodyHint(b []byte) (time.Duration, bool) {
	const marker = "Expected available in "
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		return 0, false
	}
	rest := b[i+len(marker):]
	j := 0
	for j < len(rest) && (rest[j] >= '0' && rest[j] <= '9' || rest[j] == '.') {
		j++
	}
	if j == 0 || !bytes.HasPrefix(rest[j:], []byte(" second")) {
		return 0, false
	}
	s, err := strconv.ParseFloat(string(rest[:j]), 64)
	if err != nil || s < 0 || s > 1e6 {
		return 0, false
	}
	return time.Duration(s * float64(time.Second)), true
}
