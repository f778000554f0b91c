package pandadocauth

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// throttleAPI is a PandaDoc API of the tests' own, in process and on a
// fake clock. It throttles as PandaDoc does (Django REST Framework's
// SimpleRateThrottle): per user (the request's grant key, WithGrant) and
// per class, a sliding log of the requests it accepted in the last
// window; past the limit it answers 429 with DRF's body, and does not
// log the throttled request. It records every arrival.
type throttleAPI struct {
	clk        *fakeClock
	window     time.Duration // 0: 60 s
	limits     map[Class]int // per class; missing or 0: no limit
	retryAfter bool          // send Retry-After on 429s, as DRF's handler does

	// faults, if set, may answer a request after the throttle let it
	// through (PandaDoc throttles first): a nil response and a nil error
	// mean "answer normally".
	faults func(n int, req *http.Request) (*http.Response, error)

	mu       sync.Mutex // guards the fields below
	cond     *sync.Cond // signalled on every arrival
	history  map[apiUserClass][]time.Duration
	arrivals []arrival
	events   chan string // if set, "arrived <seq>" per arrival
}

// arrival is a request that reached the API.
type arrival struct {
	user   string
	class  Class
	seq    string // the request's X-Seq header
	at     time.Duration
	status int // 0 for a fault that answered an error
	body   string
	header http.Header
}

func newThrottleAPI(clk *fakeClock, limits map[Class]int) *throttleAPI {
	a := &throttleAPI{clk: clk, limits: limits, history: map[apiUserClass][]time.Duration{}}
	a.cond = sync.NewCond(&a.mu)
	return a
}

func (a *throttleAPI) win() time.Duration {
	if a.window == 0 {
		return time.Minute
	}
	return a.window
}

const throttledBody = `{"type":"request_error","detail":"Request was throttled. Expected available in %d %s."}`

func (a *throttleAPI) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	user, _ := GrantFromContext(req.Context())
	class := classFor(req)
	a.mu.Lock()
	now := a.clk.Mono()
	k := apiUserClass{user, class}
	h := a.history[k]
	for len(h) > 0 && h[0] <= now-a.win() {
		h = h[1:]
	}
	arr := arrival{user: user, class: class, seq: req.Header.Get("X-Seq"), at: now, body: string(body), header: req.Header.Clone()}
	n := len(a.arrivals) + 1
	limit := a.limits[class]
	var resp *http.Response
	var err error
	if limit > 0 && len(h) >= limit {
		wait := int(math.Ceil((h[0] + a.win() - now).Seconds()))
		unit := "seconds"
		if wait == 1 {
			unit = "second"
		}
		resp = newResponse(http.StatusTooManyRequests, fmt.Sprintf(throttledBody, wait, unit))
		if a.retryAfter {
			resp.Header.Set("Retry-After", strconv.Itoa(wait))
		}
	} else {
		h = append(h, now)
		if a.faults != nil {
			resp, err = a.faults(n, req)
		}
		if resp == nil && err == nil {
			resp = newResponse(http.StatusOK, `{"id":"doc-`+strconv.Itoa(n)+`"}`)
		}
	}
	a.history[k] = h
	if resp != nil {
		arr.status = resp.StatusCode
	}
	a.arrivals = append(a.arrivals, arr)
	a.cond.Broadcast()
	if a.events != nil {
		a.events <- "arrived " + arr.seq
	}
	a.mu.Unlock()
	if resp != nil {
		resp.Request = req
	}
	return resp, err
}

func newResponse(status int, body string) *http.Response {
	return &http.Response{
		StatusCode: status,
		Status:     strconv.Itoa(status) + " " + http.StatusText(status),
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(strings.NewReader(body)),
	}
}

// waitArrivals blocks until n requests have arrived.
func (a *throttleAPI) waitArrivals(n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.arrivals) < n {
		a.cond.Wait()
	}
}

func (a *throttleAPI) all() []arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]arrival(nil), a.arrivals...)
}

// count returns how many arrivals were answered status.
func (a *throttleAPI) count(status int) int {
	n := 0
	for _, r := range a.all() {
		if r.status == status {
			n++
		}
	}
	return n
}

// maxInWindow returns the most arrivals of (user, class) in any window
// (t-W, t] of the API's: the figure that must not exceed the limit.
func (a *throttleAPI) maxInWindow(user string, class Class) int {
	var times []time.Duration
	for _, r := range a.all() {
		if r.user == user && r.class == class {
			times = append(times, r.at)
		}
	}
	best := 0
	for i, t := range times {
		n := 0
		for _, u := range times[:i+1] {
			if u > t-a.win() {
				n++
			}
		}
		best = max(best, n)
	}
	return best
}

// testLimiter returns a Limiter on clk in front of base, with no Margin
// unless lim sets one.
func testLimiter(clk *fakeClock, base http.RoundTripper, lim *Limiter) *Limiter {
	if lim == nil {
		lim = &Limiter{}
	}
	lim.Base = base
	if lim.Margin == 0 {
		lim.Margin = -1
	}
	lim.clk = &clockRef{clk}
	return lim
}

// get returns a GET of the documents list (ClassListStatusDelete) for
// grant, numbered seq.
func getReq(t testing.TB, grant string, seq int) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(WithGrant(context.Background(), grant), http.MethodGet, apiURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Seq", strconv.Itoa(seq))
	return req
}

// trackedBody is a request body that counts its Close calls.
type trackedBody struct {
	io.Reader
	closes atomic.Int32
}

func (b *trackedBody) Close() error {
	b.closes.Add(1)
	return nil
}

// result is what a RoundTrip returned.
type result struct {
	resp *http.Response
	err  error
}

// goRoundTrip runs rt.RoundTrip(req) on a goroutine and returns where
// its result will arrive.
func goRoundTrip(rt http.RoundTripper, req *http.Request) <-chan result {
	ch := make(chan result, 1)
	go func() {
		resp, err := rt.RoundTrip(req)
		if resp != nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		ch <- result{resp, err}
	}()
	return ch
}

// pending returns how many timers c has pending.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// nextDue returns when c's earliest pending timer is due, as a Mono
// reading.
func (c *fakeClock) nextDue() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return 0, false
	}
	at := c.timers[0].at
	for _, tm := range c.timers[1:] {
		at = min(at, tm.at)
	}
	return at, true
}

// apiUserClass names a log of the throttleAPI.
type apiUserClass struct {
	user  string
	class Class
}
