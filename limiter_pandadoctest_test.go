package pandadocauth_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// fleetOfRequests runs n requests through rt at once, on clk, and moves
// clk from timer to timer until all have answered. It waits on events,
// never on time: each request, each time it runs, ends by waiting for a
// slot (the Observer's LimitWait) or by answering.
type fleetOfRequests struct {
	clk    *pandadocauth.FakeClock
	events chan string
}

func newFleetOfRequests(clk *pandadocauth.FakeClock) *fleetOfRequests {
	return &fleetOfRequests{clk: clk, events: make(chan string, 10000)}
}

// observer returns the Observer that reports the waits.
func (f *fleetOfRequests) observer() *pandadocauth.Observer {
	return &pandadocauth.Observer{LimitWait: func(context.Context, pandadocauth.LimitWaitInfo) { f.events <- "wait" }}
}

// run sends the requests newReq makes and returns their statuses, in
// the order they answered.
func (f *fleetOfRequests) run(t *testing.T, rt http.RoundTripper, n int, newReq func(i int) *http.Request) []int {
	t.Helper()
	statuses := make(chan int, n)
	for i := range n {
		go func() {
			resp, err := rt.RoundTrip(newReq(i))
			status := 0
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			} else {
				t.Errorf("request %d: %v", i, err)
			}
			statuses <- status
			f.events <- "done"
		}()
	}
	// collect takes k events, and waits for the timers of the requests
	// that wait.
	pending := 0
	collect := func(k int) {
		for range k {
			if testutil.Recv(t, f.events, "a request to wait or answer") == "wait" {
				pending++
			}
		}
		f.clk.WaitTimers(pending)
	}
	collect(n)
	for pending > 0 {
		at, _ := f.clk.NextDue()
		before := f.clk.Pending()
		f.clk.Advance(at - f.clk.Mono())
		fired := before - f.clk.Pending()
		pending -= fired
		collect(fired)
	}
	close(statuses)
	var out []int
	for s := range statuses {
		out = append(out, s)
	}
	return out
}

// createReq returns a create from template for the API key, replayable.
func createReq(srv *pandadoctest.Server, i int) *http.Request {
	body := fmt.Sprintf(`{"name":"doc %d","template_uuid":"tpl-1"}`, i)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/public/v1/documents", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return req
}

// TestLimiterAgainstPandadoctest: against the fake PandaDoc's throttle,
// on fake time, a Limiter that knows the limit sends no request into a
// 429 and no more than the limit in any window; one whose limit is
// stale absorbs the 429s it meets, so the caller sees none, and creates
// each document once.
func TestLimiterAgainstPandadoctest(t *testing.T) {
	tests := []struct {
		name         string
		limiterLimit int
		serverLimit  int
		n            int
	}{
		{name: "limit known", limiterLimit: 5, serverLimit: 5, n: 15},
		{name: "limit stale", limiterLimit: 10, serverLimit: 4, n: 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := pandadocauth.NewFakeClock()
			srv := pandadoctest.NewServer(pandadoctest.WithClock(clk.Now), pandadoctest.WithAPIKey("key-1"),
				pandadoctest.WithRateLimits(pandadocauth.Limits{CreateFromTemplate: tt.serverLimit}))
			defer srv.Close()
			f := newFleetOfRequests(clk)
			lim := &pandadocauth.Limiter{
				Base:     srv.Client().Transport,
				Limits:   pandadocauth.Limits{CreateFromTemplate: tt.limiterLimit},
				Margin:   -1, // fake time has no jitter
				Observer: f.observer(),
			}
			pandadocauth.SetLimiterClock(lim, clk)
			rt := &pandadocauth.APIKeyTransport{Key: "key-1", Base: lim}
			start := clk.Mono()
			statuses := f.run(t, rt, tt.n, func(i int) *http.Request { return createReq(srv, i) })
			for _, s := range statuses {
				if s != http.StatusCreated {
					t.Errorf("statuses = %v, want every one 201", statuses)
					break
				}
			}
			if n := srv.APIRequests(http.StatusCreated); n != tt.n {
				t.Errorf("%d documents created, want %d: none twice", n, tt.n)
			}
			throttled := srv.Throttled(pandadocauth.ClassCreateFromTemplate)
			elapsed := clk.Mono() - start
			least := time.Duration((tt.n-1)/tt.serverLimit) * time.Minute
			t.Logf("%d 429s met, done in %v of fake time (least: %v)", throttled, elapsed, least)
			if tt.limiterLimit == tt.serverLimit {
				if throttled != 0 {
					t.Errorf("%d 429s, want none", throttled)
				}
				if n := srv.MaxInWindow(pandadocauth.ClassCreateFromTemplate); n != tt.serverLimit {
					t.Errorf("MaxInWindow = %d, want %d", n, tt.serverLimit)
				}
				if elapsed != least {
					t.Errorf("done in %v, want the least the limit allows, %v", elapsed, least)
				}
			} else if throttled == 0 {
				t.Error("no 429: the stale limit was not exercised")
			}
		})
	}
}
