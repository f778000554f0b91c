package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

const demoUsage = `Usage: pandadoc-oauth demo [flags]

pandadoc-oauth demo runs API traffic against a fake PandaDoc in this
process (package pandadoctest, with refresh-token rotation on), offline
and without credentials, through two clients:

	golang.org/x/oauth2  oauth2.Transport + oauth2.Config.TokenSource
	pandadocauth         pandadocauth.Transport + pandadocauth.TokenSource

Each phase starts both clients afresh, each against a fake of its own in
the same state, and compares what its name says:

	expiry      the token has expired, for the client and the server;
	            requests one at a time: both refresh once
	burst       the token has expired; a burst of concurrent requests
	            while the token endpoint takes -latency to answer:
	            token POSTs, and the wall time of the burst
	failing     the token has expired and the token endpoint answers 503
	            after -latency; a burst: token POSTs, and the time until
	            the last request has failed
	early       the token expires in 10.4s: a burst, then another one
	            once the token is within 10s of its expiry (x/oauth2's
	            margin), the token endpoint taking -latency to answer:
	            requests delayed by a refresh (slower than -latency)
	revocation  the access token is revoked on the server; a burst:
	            requests that fail, token POSTs
	workspaces  -workspaces workspaces (grants) whose tokens have all
	            expired, each with 2 concurrent requests released at
	            once, the token endpoint taking -latency to answer: one
	            x/oauth2 client per workspace against one
	            pandadocauth.Grants: token POSTs, the most in flight at
	            once, wall time, heap retained per workspace
	ratelimits  -creates creates from a template from one grant, -workers
	            at a time, against a fake that throttles like PandaDoc
	            (500 per minute; here five sixths of -creates per
	            -rate-window) and loses the first 201 of every 50th
	            create (a 502, the document created): go-pandadoc's style of
	            retry (429 twice within 0.6 s, POST on 5xx) against a
	            pandadocauth.Limiter: 429s met and returned, duplicate
	            documents, wall time

With -v, the demo also prints what a pandadocauth.Observer counted for
each phase's pandadocauth client: refreshes by outcome and reason,
token-endpoint attempts, callers that waited for a refresh, 401s by what
became of the replay, Save failures and lock waits.

The report is a table of the single-grant phases, one of the workspaces
phase and one of the ratelimits phase, with the numbers of this run.
Requests, token POSTs and failures are the same on every run, and so
are the Limiter's counts; times, memory and go-pandadoc's counts vary
with the machine.
`

// Demo limits.
const (
	demoRequestTimeout = 5 * time.Second
	demoMaxWorkers     = 256
	demoMinLatency     = time.Millisecond
	demoMaxLatency     = 2 * time.Second

	// demoSequential is the number of requests of the expiry phase.
	demoSequential = 4
	// demoEarlyExpiry is when the early phase's token expires, from the
	// phase's start: just outside x/oauth2's 10-second margin.
	demoEarlyExpiry = 10*time.Second + 400*time.Millisecond
	// oauth2ExpiryDelta is how long before Expiry golang.org/x/oauth2
	// treats a token as expired.
	oauth2ExpiryDelta = 10 * time.Second
)

// demoEnv is what a phase runs with: one client against one fake.
type demoEnv struct {
	srv     *pandadoctest.Server
	client  *http.Client
	wait    func() // waits for the client's background work
	workers int
	latency time.Duration
	busy    time.Duration // the bursts' wall time, summed
}

// demoPhase is one phase of the demo.
type demoPhase struct {
	name string
	// token returns the token the client starts with, and sets up the
	// fake; start is the phase's start.
	token func(srv *pandadoctest.Server, latency time.Duration, start time.Time) *oauth2.Token
	// run sends the phase's requests.
	run func(ctx context.Context, env *demoEnv, start time.Time) []requestResult
}

// expiredToken returns a token of a new grant that has expired on srv
// and, by its Expiry, for the client too.
func expiredToken(srv *pandadoctest.Server, start time.Time) *oauth2.Token {
	tok := srv.IssueToken()
	srv.ExpireAll()
	tok.Expiry = start.Add(-time.Second)
	return tok
}

var demoPhases = []demoPhase{
	{
		name: "expiry",
		token: func(srv *pandadoctest.Server, _ time.Duration, start time.Time) *oauth2.Token {
			return expiredToken(srv, start)
		},
		run: func(ctx context.Context, env *demoEnv, _ time.Time) []requestResult {
			var res []requestResult
			for range demoSequential {
				res = append(res, burst(ctx, env, 1)...)
			}
			return res
		},
	},
	{
		name: "burst",
		token: func(srv *pandadoctest.Server, latency time.Duration, start time.Time) *oauth2.Token {
			srv.FailAlways(pandadoctest.Success(latency))
			return expiredToken(srv, start)
		},
		run: func(ctx context.Context, env *demoEnv, _ time.Time) []requestResult {
			return burst(ctx, env, env.workers)
		},
	},
	{
		name: "failing",
		token: func(srv *pandadoctest.Server, latency time.Duration, start time.Time) *oauth2.Token {
			srv.FailAlways(pandadoctest.Status(http.StatusServiceUnavailable).WithDelay(latency))
			return expiredToken(srv, start)
		},
		run: func(ctx context.Context, env *demoEnv, _ time.Time) []requestResult {
			return burst(ctx, env, env.workers)
		},
	},
	{
		name: "early",
		token: func(srv *pandadoctest.Server, latency time.Duration, start time.Time) *oauth2.Token {
			srv.FailAlways(pandadoctest.Success(latency))
			tok := srv.IssueToken()
			tok.Expiry = start.Add(demoEarlyExpiry)
			return tok
		},
		run: func(ctx context.Context, env *demoEnv, start time.Time) []requestResult {
			res := burst(ctx, env, env.workers)
			env.wait()
			// Wait until x/oauth2 sees the token as expired.
			timer := time.NewTimer(time.Until(start.Add(demoEarlyExpiry - oauth2ExpiryDelta + 50*time.Millisecond)))
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
			}
			return append(res, burst(ctx, env, env.workers)...)
		},
	},
	{
		name: "revocation",
		token: func(srv *pandadoctest.Server, _ time.Duration, _ time.Time) *oauth2.Token {
			tok := srv.IssueToken()
			srv.Revoke(tok.AccessToken)
			return tok
		},
		run: func(ctx context.Context, env *demoEnv, _ time.Time) []requestResult {
			return burst(ctx, env, env.workers)
		},
	},
}

// demoClient is a contender: how to build an authenticated client.
type demoClient struct {
	name string
	desc string
	// setup returns an HTTP client that authenticates with tok against
	// srv through tr, and a function that waits for its background
	// work.
	// obs, if not nil, observes a pandadocauth client.
	setup func(ctx context.Context, srv *pandadoctest.Server, tok *oauth2.Token, tr http.RoundTripper, obs *pandadocauth.Observer) (*http.Client, func())
}

var demoClients = []demoClient{
	{
		name: "golang.org/x/oauth2",
		desc: "oauth2.Transport + oauth2.Config.TokenSource",
		setup: func(ctx context.Context, srv *pandadoctest.Server, tok *oauth2.Token, tr http.RoundTripper, _ *pandadocauth.Observer) (*http.Client, func()) {
			conf := &oauth2.Config{
				ClientID:     pandadoctest.DefaultClientID,
				ClientSecret: pandadoctest.DefaultClientSecret,
				Endpoint: oauth2.Endpoint{
					TokenURL:  srv.URL + "/oauth2/access_token",
					AuthStyle: oauth2.AuthStyleInParams,
				},
			}
			hc := &http.Client{Transport: tr, Timeout: demoRequestTimeout}
			src := conf.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, hc), tok)
			client := &http.Client{Transport: &oauth2.Transport{Source: src, Base: tr}, Timeout: demoRequestTimeout}
			return client, func() {}
		},
	},
	{
		name: "pandadocauth",
		desc: "pandadocauth.Transport + pandadocauth.TokenSource",
		setup: func(_ context.Context, srv *pandadoctest.Server, tok *oauth2.Token, tr http.RoundTripper, obs *pandadocauth.Observer) (*http.Client, func()) {
			cfg := srv.Config()
			cfg.HTTPClient = &http.Client{Transport: tr, Timeout: demoRequestTimeout}
			src := &pandadocauth.TokenSource{Config: cfg, Initial: tok, Observer: obs}
			return pandadocauth.NewClient(&http.Client{Transport: tr, Timeout: demoRequestTimeout}, src), src.Wait
		},
	},
}

func (c *cli) demo(ctx context.Context, args []string) int {
	fs := c.newFlagSet("demo")
	workers := fs.Int("workers", 16, "`number` of concurrent requests in a burst")
	latency := fs.Duration("latency", 50*time.Millisecond, "`duration` the token endpoint takes to answer, in the phases that slow it down")
	workspaces := fs.Int("workspaces", demoDefaultWorkspaces, "`number` of workspaces in the workspaces phase (0: skip it)")
	creates := fs.Int("creates", demoDefaultCreates, "`number` of creates in the ratelimits phase (0: skip it)")
	rateWindow := fs.Duration("rate-window", demoRateWindow, "the fake's rate-limit window in the ratelimits phase (PandaDoc's is 1m)")
	verbose := fs.Bool("v", false, "also print the metrics of the pandadocauth clients, counted with a pandadocauth.Observer")
	pos, code, ok := c.parse(fs, demoUsage, args, false)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return c.usageError(fs, "unexpected arguments %q", pos)
	}
	if *workers < 1 || *workers > demoMaxWorkers {
		return c.usageError(fs, "-workers must be between 1 and %d", demoMaxWorkers)
	}
	if *latency < demoMinLatency || *latency > demoMaxLatency {
		return c.usageError(fs, "-latency must be between %v and %v", demoMinLatency, demoMaxLatency)
	}
	if *workspaces < 0 || *workspaces > demoMaxWorkspaces {
		return c.usageError(fs, "-workspaces must be between 0 and %d", demoMaxWorkspaces)
	}
	if *creates < 0 || *creates > demoMaxCreates {
		return c.usageError(fs, "-creates must be between 0 and %d", demoMaxCreates)
	}
	if *rateWindow < 10*time.Millisecond || *rateWindow > time.Minute {
		return c.usageError(fs, "-rate-window must be between 10ms and 1m")
	}

	fmt.Fprintf(c.stdout, "Fake PandaDoc in this process, refresh-token rotation on; bursts of %d concurrent requests; token endpoint latency %v.\n\n",
		*workers, *latency)
	start := time.Now()
	results, err := runDemo(ctx, *workers, *latency)
	printDemo(c.stdout, results, *latency)
	var wsResults []workspaceStats
	if err == nil && *workspaces > 0 {
		wsResults, err = runWorkspaces(ctx, *workspaces, *latency)
		printWorkspaces(c.stdout, wsResults, *latency)
	}
	if err == nil && *creates > 0 {
		var rl []rateStats
		rl, err = runRateLimits(ctx, *creates, *workers, *rateWindow) // ratelimits.go
		printRateLimits(c.stdout, rl, *rateWindow)
	}
	if *verbose {
		var rows []metricsRow
		for _, r := range results {
			if r.metrics != nil {
				rows = append(rows, metricsRow{r.phase, r.metrics})
			}
		}
		for _, r := range wsResults {
			if r.metrics != nil {
				rows = append(rows, metricsRow{"workspaces", r.metrics})
			}
		}
		printMetrics(c.stdout, rows)
	}
	if err != nil {
		return c.fail(fs, err)
	}
	fmt.Fprintf(c.stdout, "\nRan in %v. \"pandadoc-oauth demo -h\" says what each phase does.\n", time.Since(start).Round(10*time.Millisecond))
	return exitOK
}

// requestResult is the outcome of one API request.
type requestResult struct {
	ok      bool // answered 200
	latency time.Duration
}

// phaseStats is what one client did in one phase.
type phaseStats struct {
	phase      string
	client     string
	requests   int
	failed     int // an error or a status other than 200
	tokenPOSTs int
	wall       time.Duration // of the bursts, from the first request's start to the last one's end
	delayed    int           // requests that took -latency or longer
	metrics    *demoMetrics  // what an Observer counted; pandadocauth's only
}

// printDemo writes the report table.
func printDemo(w io.Writer, results []phaseStats, latency time.Duration) {
	const format = "%-10s  %-19s  %8v  %6v  %11v  %8v  %7v\n"
	fmt.Fprintf(w, format, "phase", "client", "requests", "failed", "token POSTs", "wall", "delayed")
	for i, r := range results {
		name := r.phase
		if i > 0 && results[i-1].phase == r.phase {
			name = ""
		}
		fmt.Fprintf(w, format, name, r.client, r.requests, r.failed, r.tokenPOSTs, formatWall(r.wall), r.delayed)
	}
	fmt.Fprintf(w, "\nwall: the time the bursts took, from the first request's start to the last one's end (the\n"+
		"time to fail, in the failing phase). delayed: requests that took %v (the token endpoint's\n"+
		"latency) or longer, which waited for a refresh.\n", latency)
}

func formatWall(d time.Duration) string {
	return fmt.Sprintf("%.3fs", d.Seconds())
}

// runDemo runs every phase with each client in turn, and returns one
// result per phase and client, in that order.
func runDemo(ctx context.Context, workers int, latency time.Duration) ([]phaseStats, error) {
	var results []phaseStats
	for _, p := range demoPhases {
		for _, dc := range demoClients {
			results = append(results, runPhase(ctx, p, dc, workers, latency))
			if err := ctx.Err(); err != nil {
				return results, fmt.Errorf("interrupted: %w", err)
			}
		}
	}
	return results, nil
}

// runPhase runs phase p with a fresh client dc against a fresh fake.
func runPhase(ctx context.Context, p demoPhase, dc demoClient, workers int, latency time.Duration) phaseStats {
	srv := pandadoctest.NewServer(pandadoctest.WithRotation(true))
	defer srv.Close()
	tr := newHTTPTransport()
	tr.MaxIdleConnsPerHost = workers
	defer tr.CloseIdleConnections()

	start := time.Now()
	tok := p.token(srv, latency, start)
	m := &demoMetrics{}
	client, wait := dc.setup(ctx, srv, tok, tr, m.observer())
	env := &demoEnv{srv: srv, client: client, wait: wait, workers: workers, latency: latency}
	res := p.run(ctx, env, start)
	wait()

	st := phaseStats{phase: p.name, client: dc.name, requests: len(res), tokenPOSTs: srv.TotalTokenRequests(), wall: env.busy}
	if dc.name == "pandadocauth" {
		st.metrics = m
	}
	for _, r := range res {
		if !r.ok {
			st.failed++
		}
		if r.latency >= latency {
			st.delayed++
		}
	}
	return st
}

// burst sends n concurrent requests through env's client, released
// together, and returns their outcomes.
func burst(ctx context.Context, env *demoEnv, n int) []requestResult {
	url := env.srv.URL + "/public/v1/documents"
	res := make([]requestResult, n)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			t0 := time.Now()
			ok := demoRequest(ctx, env.client, url)
			res[i] = requestResult{ok: ok, latency: time.Since(t0)}
		}()
	}
	t0 := time.Now()
	close(release)
	wg.Wait()
	env.busy += time.Since(t0)
	return res
}

// demoRequest lists the documents and reports whether the API answered
// 200.
func demoRequest(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
