package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth/internal/testutil"
)

// TestLimiterBurstThenFIFO: a burst up to the limit goes at once; past
// it, requests wait first come first served for the first free slot, and
// no window holds more than the limit.
func TestLimiterBurstThenFIFO(t *testing.T) {
	clk := newFakeClock()
	t0 := clk.Mono()
	api := newThrottleAPI(clk, map[Class]int{ClassListStatusDelete: 3})
	lim := testLimiter(clk, api, &Limiter{Limits: Limits{ListStatusDelete: 3}})

	for i := 1; i <= 3; i++ {
		resp, err := lim.RoundTrip(getReq(t, "acme", i))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d of the burst: %v, %v", i, resp, err)
		}
	}
	if n := clk.pending(); n != 0 {
		t.Fatalf("the burst started %d timers, want none", n)
	}
	var results []<-chan result
	for i := 4; i <= 7; i++ {
		results = append(results, goRoundTrip(lim, getReq(t, "acme", i)))
		clk.WaitTimers(i - 3) // in order: each waits before the next starts
	}
	if got, want := clk.Waits(), []time.Duration{time.Minute, time.Minute, time.Minute, 2 * time.Minute}; !slices.Equal(got, want) {
		t.Fatalf("waits = %v, want %v (the first three free slots, then the next window)", got, want)
	}
	clk.Advance(time.Minute)
	api.waitArrivals(6)
	clk.Advance(time.Minute)
	api.waitArrivals(7)
	for i, ch := range results {
		r := testutil.Recv(t, ch, "a waiting request")
		if r.err != nil || r.resp.StatusCode != 200 {
			t.Fatalf("request %d: %v, %v", i+4, r.resp, r.err)
		}
	}
	for _, a := range api.all() {
		seq, _ := strconv.Atoi(a.seq)
		want := t0
		switch {
		case seq == 7:
			want += 2 * time.Minute
		case seq >= 4:
			want += time.Minute
		}
		if a.at != want {
			t.Errorf("request %d arrived at +%v, want +%v", seq, a.at-t0, want-t0)
		}
	}
	if n := api.maxInWindow("acme", ClassListStatusDelete); n != 3 {
		t.Errorf("most requests in a window = %d, want 3", n)
	}
	if n := api.count(http.StatusTooManyRequests); n != 0 {
		t.Errorf("the API answered %d 429s, want none", n)
	}
}

// TestLimiterSim drives requests of two users and two classes at random
// fake times, seeded, and checks after every step that each request was
// sent exactly when the least time a sliding log allows says (an oracle
// computing first come, first served slots), so that no window ever
// holds more than the limit, bursts are not delayed, and no 429 is
// answered. A failing seed replays with -run 'TestLimiterSim/seed=N'.
func TestLimiterSim(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4, 5, 42, 1234, 98765} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			runLimiterSim(t, seed)
		})
	}
}

func runLimiterSim(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	window := time.Minute
	limits := map[Class]int{ClassListStatusDelete: 1 + rng.IntN(4), ClassDetails: 1 + rng.IntN(4)}
	classes := []Class{ClassListStatusDelete, ClassDetails}
	users := []string{"a", "b"}
	urls := map[Class]string{ClassListStatusDelete: apiURL, ClassDetails: apiURL + "/doc-1/details"}

	clk := newFakeClock()
	events := make(chan string, 1000)
	api := newThrottleAPI(clk, limits)
	api.events = events
	obs := &Observer{LimitWait: func(ctx context.Context, info LimitWaitInfo) { events <- "wait" }}
	lim := testLimiter(clk, api, &Limiter{Limits: Limits{ListStatusDelete: limits[ClassListStatusDelete], Details: limits[ClassDetails]}, Observer: obs})

	type key struct {
		user  string
		class Class
	}
	model := map[key][]time.Duration{}
	want := map[string]time.Duration{}
	var schedule []string
	var results []<-chan result
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: %s\nschedule:\n%s", seed, fmt.Sprintf(format, args...), strings.Join(schedule, "\n"))
	}
	// advance moves the clock by d, stopping at each timer on the way so
	// that every request is sent at its slot, and waits for the requests
	// whose slot came.
	advance := func(d time.Duration) {
		end := clk.Mono() + d
		for {
			step := end
			if at, ok := clk.nextDue(); ok && at < end {
				step = at
			}
			before := clk.pending()
			clk.Advance(step - clk.Mono())
			for range before - clk.pending() {
				if ev := testutil.Recv(t, events, "a request whose slot came"); !strings.HasPrefix(ev, "arrived") {
					fail("after advancing, got %q", ev)
				}
			}
			if step == end {
				return
			}
		}
	}
	start := clk.Mono()
	for i := range 60 {
		if rng.IntN(3) == 0 {
			advance(time.Duration(rng.IntN(int(window/time.Second))) * time.Second)
		}
		k := key{users[rng.IntN(2)], classes[rng.IntN(2)]}
		now := clk.Mono()
		log := model[k]
		slot := now
		if n := len(log); n > 0 {
			slot = max(slot, log[n-1])
		}
		if n, l := len(log), limits[k.class]; n >= l {
			slot = max(slot, log[n-l]+window)
		}
		model[k] = append(log, slot)
		seq := strconv.Itoa(i)
		want[seq] = slot
		schedule = append(schedule, fmt.Sprintf("+%v %s %s #%s: slot +%v", now-start, k.user, k.class, seq, slot-start))

		req, _ := http.NewRequestWithContext(WithGrant(context.Background(), k.user), http.MethodGet, urls[k.class], nil)
		req.Header.Set("X-Seq", seq)
		pending := clk.pending()
		results = append(results, goRoundTrip(lim, req))
		ev := testutil.Recv(t, events, "the new request to be sent or to wait")
		switch {
		case slot == now && ev != "arrived "+seq:
			fail("request %s: got %q, want it sent at once", seq, ev)
		case slot > now && ev != "wait":
			fail("request %s: got %q, want it to wait", seq, ev)
		case slot > now:
			clk.WaitTimers(pending + 1)
		}
	}
	for clk.pending() > 0 {
		advance(window)
	}
	for _, ch := range results {
		if r := testutil.Recv(t, ch, "a request"); r.err != nil || r.resp.StatusCode != 200 {
			fail("a request failed: %v, %v", r.resp, r.err)
		}
	}
	for _, a := range api.all() {
		if a.at != want[a.seq] {
			fail("request %s arrived at +%v, want +%v", a.seq, a.at-start, want[a.seq]-start)
		}
	}
	for _, u := range users {
		for _, c := range classes {
			if n := api.maxInWindow(u, c); n > limits[c] {
				fail("%s %s: %d requests in a window, limit %d", u, c, n, limits[c])
			}
		}
	}
	if n := api.count(http.StatusTooManyRequests); n != 0 {
		fail("%d 429s", n)
	}
}

// TestLimiterDeadline: a request whose slot lies past its deadline, or
// further than MaxWait, fails at once, unsent, with a *RateLimitError
// that is context.DeadlineExceeded and says "client-side"; one whose
// slot comes in time waits for it.
func TestLimiterDeadline(t *testing.T) {
	tests := []struct {
		name     string
		maxWait  time.Duration
		timeout  time.Duration // 0: no deadline
		wantSent bool
		wantMsg  string
	}{
		{name: "deadline before the slot", timeout: 30 * time.Second, wantMsg: "past the request's deadline"},
		{name: "MaxWait before the slot", maxWait: 10 * time.Second, wantMsg: "longer than Limiter.MaxWait"},
		{name: "MaxWait shorter than the deadline", maxWait: 10 * time.Second, timeout: time.Hour, wantMsg: "longer than Limiter.MaxWait"},
		{name: "deadline shorter than MaxWait", maxWait: time.Hour, timeout: 30 * time.Second, wantMsg: "past the request's deadline"},
		{name: "slot within the deadline", timeout: time.Hour, wantSent: true},
		{name: "slot at MaxWait", maxWait: time.Minute, wantSent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := newFakeClock()
			api := newThrottleAPI(clk, nil)
			lim := testLimiter(clk, api, &Limiter{Limits: Limits{CreateFromTemplate: 1}, MaxWait: tt.maxWait})
			send := func(ctx context.Context, body *trackedBody) <-chan result {
				req, _ := http.NewRequestWithContext(WithGrant(ctx, "acme"), http.MethodPost, apiURL, body)
				req = WithClassRequest(req, ClassCreateFromTemplate)
				return goRoundTrip(lim, req)
			}
			first := testutil.Recv(t, send(context.Background(), &trackedBody{Reader: strings.NewReader("{}")}), "the first request")
			if first.err != nil {
				t.Fatal(first.err)
			}
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			body := &trackedBody{Reader: strings.NewReader(`{"template_uuid":"t"}`)}
			ch := send(ctx, body)
			if tt.wantSent {
				clk.WaitTimers(1)
				clk.Advance(time.Minute)
			}
			r := testutil.Recv(t, ch, "the second request")
			if n := body.closes.Load(); n != 1 {
				t.Errorf("body closed %d times, want 1", n)
			}
			if tt.wantSent {
				if r.err != nil || len(api.all()) != 2 {
					t.Fatalf("got %v, %d arrivals; want it sent after its wait", r.err, len(api.all()))
				}
				return
			}
			var rle *RateLimitError
			if !errors.As(r.err, &rle) {
				t.Fatalf("err = %v, want a *RateLimitError", r.err)
			}
			if !errors.Is(r.err, context.DeadlineExceeded) || !errors.Is(r.err, ErrRateLimited) {
				t.Errorf("err = %v: want errors.Is DeadlineExceeded and ErrRateLimited", r.err)
			}
			msg := r.err.Error()
			if !strings.Contains(msg, "client-side") || !strings.Contains(msg, tt.wantMsg) || !strings.HasPrefix(msg, "pandadocauth: ") {
				t.Errorf("message %q: want it prefixed, saying client-side and %q", msg, tt.wantMsg)
			}
			if rle.Grant != "acme" || rle.Class != ClassCreateFromTemplate || rle.Wait != time.Minute {
				t.Errorf("error = %+v, want grant acme, create_from_template, wait 1m", rle)
			}
			if n := len(api.all()); n != 1 {
				t.Errorf("%d requests arrived, want 1: the refused one is not sent", n)
			}
			if n := clk.pending(); n != 0 {
				t.Errorf("%d timers pending: the refusal must not wait", n)
			}
		})
	}
}

// WithClassRequest is req with WithClass(c) in its context.
func WithClassRequest(req *http.Request, c Class) *http.Request {
	return req.WithContext(WithClass(req.Context(), c))
}

// TestLimiterCanceledWaitGivesBackItsSlot: a request whose context ends
// while it waits fails with a *RateLimitError that is the context's
// error, is not sent, and its slot goes to the next request.
func TestLimiterCanceledWaitGivesBackItsSlot(t *testing.T) {
	clk := newFakeClock()
	api := newThrottleAPI(clk, nil)
	var waited []LimitWaitedInfo
	var mu sync.Mutex
	obs := &Observer{LimitWaited: func(ctx context.Context, info LimitWaitedInfo) {
		mu.Lock()
		defer mu.Unlock()
		waited = append(waited, info)
	}}
	lim := testLimiter(clk, api, &Limiter{Limits: Limits{ListStatusDelete: 1}, Observer: obs})
	if _, err := lim.RoundTrip(getReq(t, "acme", 1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req := getReq(t, "acme", 2)
	ch := goRoundTrip(lim, req.WithContext(WithGrant(ctx, "acme")))
	clk.WaitTimers(1)
	cancel()
	r := testutil.Recv(t, ch, "the canceled request")
	var rle *RateLimitError
	if !errors.As(r.err, &rle) || !errors.Is(r.err, context.Canceled) || !errors.Is(r.err, ErrRateLimited) {
		t.Fatalf("err = %v, want a *RateLimitError that is context.Canceled", r.err)
	}
	ch = goRoundTrip(lim, getReq(t, "acme", 3))
	clk.WaitTimers(1)
	if got := clk.Waits(); len(got) != 2 || got[1] != time.Minute {
		t.Fatalf("waits = %v: the third request must take the canceled one's slot, in 1m", got)
	}
	clk.Advance(time.Minute)
	if r := testutil.Recv(t, ch, "the third request"); r.err != nil {
		t.Fatal(r.err)
	}
	if n := len(api.all()); n != 2 {
		t.Errorf("%d arrivals, want 2", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(waited) != 2 || !errors.Is(waited[0].Err, context.Canceled) || waited[1].Err != nil || waited[1].Waited != time.Minute {
		t.Errorf("LimitWaited events = %+v", waited)
	}
}

// TestLimiterIdleStateDropped: the state of a (key, class) that nothing
// used for a window is dropped, and no timer runs at rest.
func TestLimiterIdleStateDropped(t *testing.T) {
	clk := newFakeClock()
	api := newThrottleAPI(clk, nil)
	lim := testLimiter(clk, newNopRT(), &Limiter{})
	_ = api
	for i := range 1000 {
		if _, err := lim.RoundTrip(getReq(t, "grant-"+strconv.Itoa(i), i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := lim.local.size(); n != 1000 {
		t.Fatalf("%d buckets after 1000 grants, want 1000", n)
	}
	clk.Advance(30 * time.Second)
	if _, err := lim.RoundTrip(getReq(t, "grant-0", 0)); err != nil {
		t.Fatal(err)
	}
	if n := lim.local.size(); n != 1000 {
		t.Fatalf("%d buckets within the window, want 1000", n)
	}
	clk.Advance(time.Minute)
	if _, err := lim.RoundTrip(getReq(t, "new", 0)); err != nil {
		t.Fatal(err)
	}
	if n := lim.local.size(); n != 1 {
		t.Errorf("%d buckets a window later, want 1: the idle ones must be dropped", n)
	}
	if n := clk.pending(); n != 0 {
		t.Errorf("%d timers at rest, want 0", n)
	}
}

// size returns how many buckets s holds.
func (s *localLimits) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// nopRT answers 200 to everything, with a body of its own.
type nopRT struct{}

func newNopRT() nopRT { return nopRT{} }

func (nopRT) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return newResponse(200, "{}"), nil
}

// TestLimiterThrottledRetried: a 429 is retried after PandaDoc's hint,
// the whole (key, class) waits with it, the limit drops to what PandaDoc
// accepted in the window, and the caller sees no 429.
func TestLimiterThrottledRetried(t *testing.T) {
	clk := newFakeClock()
	t0 := clk.Mono()
	api := newThrottleAPI(clk, map[Class]int{ClassListStatusDelete: 2})
	var mu sync.Mutex
	var throttled []ThrottledInfo
	var retried []RetriedInfo
	obs := &Observer{
		Throttled: func(ctx context.Context, info ThrottledInfo) {
			mu.Lock()
			throttled = append(throttled, info)
			mu.Unlock()
		},
		Retried: func(ctx context.Context, info RetriedInfo) { mu.Lock(); retried = append(retried, info); mu.Unlock() },
	}
	// The Limiter believes in 5 (a stale default); PandaDoc allows 2.
	lim := testLimiter(clk, api, &Limiter{Limits: Limits{ListStatusDelete: 5}, Observer: obs})
	for i := 1; i <= 2; i++ {
		if _, err := lim.RoundTrip(getReq(t, "acme", i)); err != nil {
			t.Fatal(err)
		}
	}
	third := goRoundTrip(lim, getReq(t, "acme", 3))
	clk.WaitTimers(1) // throttled, waiting for its retry
	fourth := goRoundTrip(lim, getReq(t, "acme", 4))
	clk.WaitTimers(2)
	fifth := goRoundTrip(lim, getReq(t, "acme", 5))
	clk.WaitTimers(3)
	if got, want := clk.Waits(), []time.Duration{time.Minute, time.Minute, 2 * time.Minute}; !slices.Equal(got, want) {
		t.Fatalf("waits = %v, want %v: the hint holds the class, and the limit learned is 2", got, want)
	}
	clk.Advance(time.Minute)
	api.waitArrivals(5)
	clk.Advance(time.Minute)
	api.waitArrivals(6)
	for i, ch := range []<-chan result{third, fourth, fifth} {
		if r := testutil.Recv(t, ch, "a request"); r.err != nil || r.resp.StatusCode != 200 {
			t.Fatalf("request %d: %v, %v; want 200", i+3, r.resp, r.err)
		}
	}
	if n := api.count(http.StatusTooManyRequests); n != 1 {
		t.Errorf("%d 429s, want the one that taught the limit", n)
	}
	if n := api.maxInWindow("acme", ClassListStatusDelete); n > 3 {
		t.Errorf("%d arrivals in a window (the one throttled included), want at most 3", n)
	}
	for _, a := range api.all() {
		if a.seq == "5" && a.at != t0+2*time.Minute {
			t.Errorf("request 5 arrived at +%v, want +2m", a.at-t0)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(throttled) != 1 || throttled[0] != (ThrottledInfo{Grant: "acme", Class: ClassListStatusDelete, Hint: time.Minute, HintSource: HintBody, Retried: true, Wait: time.Minute}) {
		t.Errorf("Throttled events = %+v", throttled)
	}
	if len(retried) != 1 || retried[0].Reason != RetryThrottled || retried[0].Attempt != 2 || retried[0].Status != 429 || retried[0].Wait != time.Minute {
		t.Errorf("Retried events = %+v", retried)
	}
}

// TestLimiterLearnedLimitClimbsBack: after a 429, the limit climbs back
// by a tenth of the configured one per window without a 429.
func TestLimiterLearnedLimitClimbsBack(t *testing.T) {
	clk := newFakeClock()
	api := newThrottleAPI(clk, map[Class]int{ClassListStatusDelete: 1})
	lim := testLimiter(clk, api, &Limiter{Limits: Limits{ListStatusDelete: 20}})
	if _, err := lim.RoundTrip(getReq(t, "acme", 1)); err != nil {
		t.Fatal(err)
	}
	ch := goRoundTrip(lim, getReq(t, "acme", 2)) // 429: the limit learned is 1
	clk.WaitTimers(1)
	clk.Advance(time.Minute)
	if r := testutil.Recv(t, ch, "the retried request"); r.err != nil || r.resp.StatusCode != 200 {
		t.Fatalf("%v, %v", r.resp, r.err)
	}
	api.mu.Lock()
	api.limits = nil // PandaDoc throttles no more: the limit climbs back
	api.mu.Unlock()
	lim.MaxWait = time.Nanosecond // count the burst each window allows
	// The 429 came at +0 and taught 1; each window since adds 2 (a tenth
	// of 20), up to 20. Each burst is measured one window after the last,
	// whose slots have then left the window.
	var got []int
	for range 10 {
		clk.Advance(time.Minute)
		n := 0
		for {
			resp, err := lim.RoundTrip(getReq(t, "acme", 0))
			if err != nil {
				if !errors.Is(err, ErrRateLimited) {
					t.Fatal(err)
				}
				break
			}
			resp.Body.Close()
			n++
		}
		got = append(got, n)
	}
	if want := []int{5, 7, 9, 11, 13, 15, 17, 19, 20, 20}; !slices.Equal(got, want) {
		t.Errorf("bursts per window = %v, want %v", got, want)
	}
}

// TestLearnedLimit is the arithmetic of the climb back.
func TestLearnedLimit(t *testing.T) {
	tests := []struct {
		base, conf, clean int
		want              int
		done              bool
	}{
		{base: 2, conf: 20, clean: 0, want: 2},
		{base: 2, conf: 20, clean: 1, want: 4},
		{base: 2, conf: 20, clean: 8, want: 18},
		{base: 2, conf: 20, clean: 9, want: 20, done: true},
		{base: 1, conf: 25, clean: 8, want: 25, done: true}, // a tenth rounded up: 3
		{base: 1, conf: 25, clean: 7, want: 22},
		{base: 1, conf: 5, clean: 3, want: 4},
		{base: 1, conf: 5, clean: 4, want: 5, done: true},
		{base: 50, conf: 0, clean: 9, want: 95},             // no limit configured: a tenth of the learned one
		{base: 50, conf: 0, clean: 10, want: 0, done: true}, // lifted
		{base: 1, conf: 1, clean: 0, want: 1, done: true},
	}
	for _, tt := range tests {
		got, done := learnedLimit(tt.base, tt.conf, tt.clean)
		if got != tt.want || done != tt.done {
			t.Errorf("learnedLimit(%d, %d, %d) = %d, %v; want %d, %v", tt.base, tt.conf, tt.clean, got, done, tt.want, tt.done)
		}
	}
}

// TestThrottleHint: the wait a 429 asks for is the larger of Retry-After
// and the body's "Expected available in N seconds", and the body reaches
// the caller intact.
func TestThrottleHint(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	long := `{"detail":"` + strings.Repeat("x", 2*maxHintBytes) + `"}`
	tests := []struct {
		name       string
		retryAfter string
		body       string
		want       time.Duration
		src        HintSource
	}{
		{name: "body", body: `{"type":"request_error","detail":"Request was throttled. Expected available in 13 seconds."}`, want: 13 * time.Second, src: HintBody},
		{name: "body, one second", body: `{"detail":"Request was throttled. Expected available in 1 second."}`, want: time.Second, src: HintBody},
		{name: "body with a fraction", body: `{"detail":"Expected available in 2.5 seconds."}`, want: 2500 * time.Millisecond, src: HintBody},
		{name: "retry-after seconds", retryAfter: "7", body: `{"type":"throttled","detail":"Request was throttled."}`, want: 7 * time.Second, src: HintRetryAfter},
		{name: "retry-after date", retryAfter: now.Add(20 * time.Second).Format(http.TimeFormat), want: 20 * time.Second, src: HintRetryAfter},
		{name: "retry-after date past", retryAfter: now.Add(-time.Hour).Format(http.TimeFormat), want: 0, src: HintRetryAfter},
		{name: "both, body larger", retryAfter: "3", body: `Expected available in 9 seconds.`, want: 9 * time.Second, src: HintBody},
		{name: "both, header larger", retryAfter: "30", body: `Expected available in 9 seconds.`, want: 30 * time.Second, src: HintRetryAfter},
		{name: "none", body: `{"code":"too_many_requests","details":[]}`, want: 0, src: HintNone},
		{name: "garbage", retryAfter: "soon", body: `Expected available in many seconds.`, want: 0, src: HintNone},
		{name: "negative retry-after", retryAfter: "-5", want: 0, src: HintNone},
		{name: "hint past the part read", body: long + `Expected available in 9 seconds.`, want: 0, src: HintNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := newResponse(429, tt.body)
			if tt.retryAfter != "" {
				resp.Header.Set("Retry-After", tt.retryAfter)
			}
			got, src := throttleHint(resp, now)
			if got != tt.want || src != tt.src {
				t.Errorf("hint = %v from %v, want %v from %v", got, src, tt.want, tt.src)
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil || string(b) != tt.body {
				t.Errorf("body after reading the hint = %q, %v; want it intact", b, err)
			}
		})
	}
}

// TestLimiterRetryAfterCapped: a hostile Retry-After is capped at a
// window: the retry comes a minute later, not a day.
func TestLimiterRetryAfterCapped(t *testing.T) {
	clk := newAutoClock()
	api := newThrottleAPI(clk, nil)
	api.faults = func(n int, req *http.Request) (*http.Response, error) {
		if n == 1 {
			resp := newResponse(429, `{"detail":"Request was throttled. Expected available in 5 seconds."}`)
			resp.Header.Set("Retry-After", "86400")
			return resp, nil
		}
		return nil, nil
	}
	lim := testLimiter(clk, api, &Limiter{})
	resp, err := lim.RoundTrip(getReq(t, "acme", 1))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v, %v", resp, err)
	}
	if got := clk.Waits(); !slices.Equal(got, []time.Duration{time.Minute}) {
		t.Errorf("waits = %v, want [1m]", got)
	}
}

// TestLimiterThrottledReturned: a 429 that cannot be retried (its body
// cannot be replayed, or its wait does not fit the deadline) reaches the
// caller with its body intact, and still holds the class back.
func TestLimiterThrottledReturned(t *testing.T) {
	tests := []struct {
		name    string
		getBody bool
		timeout time.Duration
	}{
		{name: "body not replayable"},
		{name: "hint past the deadline", getBody: true, timeout: 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			api := newThrottleAPI(clk, map[Class]int{ClassCreateFromTemplate: 1})
			var mu sync.Mutex
			var events []ThrottledInfo
			obs := &Observer{Throttled: func(ctx context.Context, info ThrottledInfo) { mu.Lock(); events = append(events, info); mu.Unlock() }}
			lim := testLimiter(clk, api, &Limiter{Observer: obs})
			create := func(ctx context.Context, getBody bool) (*http.Request, *trackedBody) {
				const js = `{"name":"n","template_uuid":"t"}`
				body := &trackedBody{Reader: strings.NewReader(js)}
				req, _ := http.NewRequestWithContext(WithGrant(ctx, "acme"), http.MethodPost, apiURL, body)
				req.Header.Set("Content-Type", "application/json")
				if getBody {
					req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(js)), nil }
				}
				return WithClassRequest(req, ClassCreateFromTemplate), body
			}
			req, _ := create(context.Background(), true)
			if _, err := lim.RoundTrip(req); err != nil {
				t.Fatal(err)
			}
			clk.Advance(20 * time.Second)
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			req, body := create(ctx, tt.getBody)
			resp, err := lim.RoundTrip(req)
			if err != nil || resp.StatusCode != 429 {
				t.Fatalf("got %v, %v; want the 429", resp, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf(throttledBody, 40, "seconds"); string(b) != want {
				t.Errorf("body = %q, want %q", b, want)
			}
			if n := body.closes.Load(); n != 1 {
				t.Errorf("request body closed %d times, want 1", n)
			}
			mu.Lock()
			if len(events) != 1 || events[0].Retried || events[0].Hint != 40*time.Second || events[0].HintSource != HintBody {
				t.Errorf("Throttled events = %+v", events)
			}
			mu.Unlock()
			// The class waits for the hint, the next request with it.
			req, _ = create(context.Background(), true)
			ch := goRoundTrip(lim, req)
			clk.WaitTimers(1)
			if got := clk.Waits(); !slices.Equal(got, []time.Duration{40 * time.Second}) {
				t.Errorf("waits = %v, want [40s]: the hint holds the class", got)
			}
			clk.Advance(40 * time.Second)
			if r := testutil.Recv(t, ch, "the next create"); r.err != nil || r.resp.StatusCode != 200 {
				t.Errorf("next create: %v, %v", r.resp, r.err)
			}
		})
	}
}

// TestLimiterRetries is the retry policy: 5xx and network errors are
// retried for idempotent methods only, with a back-off, Retries times.
func TestLimiterRetries(t *testing.T) {
	errReset := errors.New("read: connection reset by peer")
	status := func(code int, times int) func(int, *http.Request) (*http.Response, error) {
		return func(n int, _ *http.Request) (*http.Response, error) {
			if times < 0 || n <= times {
				return newResponse(code, `{"detail":"oops"}`), nil
			}
			return nil, nil
		}
	}
	failing := func(times int) func(int, *http.Request) (*http.Response, error) {
		return func(n int, _ *http.Request) (*http.Response, error) {
			if times < 0 || n <= times {
				return nil, errReset
			}
			return nil, nil
		}
	}
	tests := []struct {
		name       string
		method     string
		retries    int
		noGetBody  bool
		retryAfter string
		faults     func(int, *http.Request) (*http.Response, error)
		attempts   int
		wantStatus int   // 0: an error
		wantErr    error // with wantStatus 0
	}{
		{name: "GET 503 once", method: "GET", faults: status(503, 1), attempts: 2, wantStatus: 200},
		{name: "GET 500 always", method: "GET", faults: status(500, -1), attempts: 3, wantStatus: 500},
		{name: "HEAD 502", method: "HEAD", faults: status(502, 1), attempts: 2, wantStatus: 200},
		{name: "OPTIONS 504", method: "OPTIONS", faults: status(504, 1), attempts: 2, wantStatus: 200},
		{name: "PUT 503", method: "PUT", faults: status(503, 1), attempts: 2, wantStatus: 200},
		{name: "DELETE 503", method: "DELETE", faults: status(503, 2), attempts: 3, wantStatus: 200},
		{name: "POST 503", method: "POST", faults: status(503, 1), attempts: 1, wantStatus: 503},
		{name: "PATCH 500", method: "PATCH", faults: status(500, 1), attempts: 1, wantStatus: 500},
		{name: "GET 501", method: "GET", faults: status(501, 1), attempts: 1, wantStatus: 501},
		{name: "GET 400", method: "GET", faults: status(400, 1), attempts: 1, wantStatus: 400},
		{name: "GET 503, Retries -1", method: "GET", retries: -1, faults: status(503, 1), attempts: 1, wantStatus: 503},
		{name: "GET 503 always, Retries 5", method: "GET", retries: 5, faults: status(503, -1), attempts: 6, wantStatus: 503},
		{name: "PUT 503, body not replayable", method: "PUT", noGetBody: true, faults: status(503, 1), attempts: 1, wantStatus: 503},
		{name: "GET 503, Retry-After past a window", method: "GET", retryAfter: "3600", faults: status(503, 1), attempts: 1, wantStatus: 503},
		{name: "GET network error", method: "GET", faults: failing(1), attempts: 2, wantStatus: 200},
		{name: "GET network error always", method: "GET", faults: failing(-1), attempts: 3, wantErr: errReset},
		{name: "POST network error (maybe sent)", method: "POST", faults: failing(1), attempts: 1, wantErr: errReset},
		{name: "PATCH network error (maybe sent)", method: "PATCH", faults: failing(1), attempts: 1, wantErr: errReset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := newAutoClock()
			api := newThrottleAPI(clk, nil)
			api.faults = tt.faults
			if tt.retryAfter != "" {
				inner := tt.faults
				api.faults = func(n int, req *http.Request) (*http.Response, error) {
					resp, err := inner(n, req)
					if resp != nil {
						resp.Header.Set("Retry-After", tt.retryAfter)
					}
					return resp, err
				}
			}
			var retried []RetriedInfo
			var mu sync.Mutex
			obs := &Observer{Retried: func(ctx context.Context, info RetriedInfo) { mu.Lock(); retried = append(retried, info); mu.Unlock() }}
			lim := testLimiter(clk, api, &Limiter{Retries: tt.retries, Observer: obs})
			var bodies []*trackedBody
			newBody := func() *trackedBody {
				b := &trackedBody{Reader: strings.NewReader(`{"name":"x"}`)}
				bodies = append(bodies, b)
				return b
			}
			req, _ := http.NewRequestWithContext(WithGrant(context.Background(), "acme"), tt.method, apiURL+"/doc-1", newBody())
			if !tt.noGetBody {
				req.GetBody = func() (io.ReadCloser, error) { return newBody(), nil }
			}
			resp, err := lim.RoundTrip(req)
			if n := len(api.all()); n != tt.attempts {
				t.Errorf("%d attempts, want %d", n, tt.attempts)
			}
			switch {
			case tt.wantStatus == 0:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
			case err != nil || resp.StatusCode != tt.wantStatus:
				t.Errorf("got %v, %v; want %d", resp, err, tt.wantStatus)
			default:
				resp.Body.Close()
			}
			for i, b := range bodies {
				if n := b.closes.Load(); n != 1 {
					t.Errorf("body %d closed %d times, want 1", i, n)
				}
			}
			if len(bodies) != tt.attempts && !tt.noGetBody {
				t.Errorf("%d bodies made for %d attempts", len(bodies), tt.attempts)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(retried) != tt.attempts-1 {
				t.Fatalf("Retried events = %+v, want %d", retried, tt.attempts-1)
			}
			waits := clk.Waits()
			for i, info := range retried {
				if info.Attempt != i+2 || (info.Reason != RetryStatus && info.Reason != RetryNetwork) {
					t.Errorf("Retried event %d = %+v", i, info)
				}
				d := time.Second << min(i, 2)
				if waits[i] < d/2 || waits[i] > d {
					t.Errorf("back-off %d = %v, want within [%v, %v]", i, waits[i], d/2, d)
				}
			}
		})
	}
}

// TestLimiterNoResponse: a Base that returns neither a response nor an
// error gets an error for it, which is retried as a network error is:
// a GET, Retries times; a POST, which may have been sent, never.
func TestLimiterNoResponse(t *testing.T) {
	tests := []struct {
		method   string
		attempts int
	}{
		{method: http.MethodGet, attempts: 1 + DefaultRetries},
		{method: "", attempts: 1 + DefaultRetries},
		{method: http.MethodPost, attempts: 1},
	}
	for _, tt := range tests {
		t.Run("method="+tt.method, func(t *testing.T) {
			var calls atomic.Int32
			base := roundTripFunc(func(*http.Request) (*http.Response, error) {
				calls.Add(1)
				return nil, nil
			})
			lim := testLimiter(newAutoClock(), base, nil)
			req, err := http.NewRequestWithContext(WithGrant(context.Background(), "acme"), tt.method, apiURL, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := lim.RoundTrip(req)
			if resp != nil || err == nil || !strings.Contains(err.Error(), "returned neither a response nor an error") {
				t.Errorf("got %v, %v; want the error for no response", resp, err)
			}
			if n := calls.Load(); int(n) != tt.attempts {
				t.Errorf("%d attempts, want %d", n, tt.attempts)
			}
		})
	}
}
