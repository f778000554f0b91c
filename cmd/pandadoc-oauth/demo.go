package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

const demoUsage = `Usage: pandadoc-oauth demo [flags]

pandadoc-oauth demo runs concurrent API traffic against a fake PandaDoc in this process
(package pandadoctest, with refresh-token rotation on), offline and
without credentials, through two clients in turn, each against a fresh
fake with the same settings:

	pandadocauth         pandadocauth.Transport + pandadocauth.TokenSource
	golang.org/x/oauth2  oauth2.Transport + oauth2.Config.TokenSource

Each client goes through the same four phases:

	steady      the token is valid
	expiry      every access token issued so far expires on the server
	revocation  the access token in use is revoked
	faults      access tokens expire again, and the next two token requests
	            answer 503, then 502

The report shows, per phase, the requests that ended in it, those
answered 200 and the others, the POSTs to the token endpoint, and the
p50 and p99 latency. The structure is fixed; the numbers vary from run to
run and from machine to machine.
`

// Demo limits.
const (
	demoRequestTimeout = 5 * time.Second
	demoMaxWorkers     = 256
	demoMinDuration    = 80 * time.Millisecond
	demoMaxDuration    = 5 * time.Minute
)

// demoPhase is one phase of the demo traffic.
type demoPhase struct {
	name string
	what string
	// begin turns the phase's knob on srv; current returns the access
	// token the client is sending.
	begin func(srv *pandadoctest.Server, current func() string)
}

var demoPhases = []demoPhase{
	{"steady", "the token is valid", nil},
	{"expiry", "every access token issued so far expires on the server",
		func(srv *pandadoctest.Server, _ func() string) { srv.ExpireAll() }},
	{"revocation", "the access token in use is revoked",
		func(srv *pandadoctest.Server, current func() string) { srv.Revoke(current()) }},
	{"faults", "access tokens expire; the next token requests answer 503, then 502",
		func(srv *pandadoctest.Server, _ func() string) {
			srv.FailNext(pandadoctest.Status(http.StatusServiceUnavailable), pandadoctest.Status(http.StatusBadGateway))
			srv.ExpireAll()
		}},
}

// demoClient is a contender: how to build an authenticated client.
type demoClient struct {
	name string
	desc string
	// setup returns an HTTP client that authenticates with tok against
	// srv through tr, and the token source it uses.
	setup func(ctx context.Context, srv *pandadoctest.Server, tok *oauth2.Token, tr http.RoundTripper) (*http.Client, oauth2.TokenSource)
}

var demoClients = []demoClient{
	{
		name: "pandadocauth",
		desc: "pandadocauth.Transport + pandadocauth.TokenSource",
		setup: func(_ context.Context, srv *pandadoctest.Server, tok *oauth2.Token, tr http.RoundTripper) (*http.Client, oauth2.TokenSource) {
			cfg := srv.Config()
			cfg.HTTPClient = &http.Client{Transport: tr, Timeout: demoRequestTimeout}
			src := &pandadocauth.TokenSource{Config: cfg, Initial: tok}
			return pandadocauth.NewClient(&http.Client{Transport: tr, Timeout: demoRequestTimeout}, src), src
		},
	},
	{
		name: "golang.org/x/oauth2",
		desc: "oauth2.Transport + oauth2.Config.TokenSource",
		setup: func(ctx context.Context, srv *pandadoctest.Server, tok *oauth2.Token, tr http.RoundTripper) (*http.Client, oauth2.TokenSource) {
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
			return client, src
		},
	},
}

func (c *cli) demo(ctx context.Context, args []string) int {
	fs := c.newFlagSet("demo")
	workers := fs.Int("workers", 16, "`number` of concurrent workers per client")
	duration := fs.Duration("duration", 3*time.Second, "traffic `duration` in all, shared by the two clients and their four phases")
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
	if *duration < demoMinDuration || *duration > demoMaxDuration {
		return c.usageError(fs, "-duration must be between %v and %v", demoMinDuration, demoMaxDuration)
	}
	phaseLen := *duration / time.Duration(len(demoClients)*len(demoPhases))

	fmt.Fprintf(c.stdout, "Fake PandaDoc in this process, refresh-token rotation on; %d workers; %d phases of %v per client:\n",
		*workers, len(demoPhases), phaseLen)
	for _, p := range demoPhases {
		fmt.Fprintf(c.stdout, "  %-10s  %s\n", p.name, p.what)
	}

	start := time.Now()
	results, err := runDemo(ctx, *workers, phaseLen)
	elapsed := time.Since(start)
	for _, r := range results {
		fmt.Fprintln(c.stdout)
		r.print(c.stdout)
	}
	if err != nil {
		return c.fail(fs, err)
	}

	fmt.Fprintln(c.stdout)
	for _, r := range results {
		fmt.Fprintf(c.stdout, "%s: %d of %d requests failed, %d token POSTs.\n",
			r.client.name, r.total.failed, r.total.requests, r.total.tokenPOSTs)
	}
	for _, r := range results {
		if r.client.name == "golang.org/x/oauth2" && r.total.failed > 0 {
			fmt.Fprintln(c.stdout, "golang.org/x/oauth2 refreshes only when its own clock says the token has expired:\n"+
				"it does not act on 401, so it keeps sending a token that the API has rejected.")
		}
	}
	fmt.Fprintf(c.stdout, "Ran in %v.\n", elapsed.Round(10*time.Millisecond))
	return exitOK
}

// demoResult is what one client did in the demo.
type demoResult struct {
	client demoClient
	phases []phaseStats
	total  phaseStats
}

// phaseStats counts the requests that ended in one phase.
type phaseStats struct {
	requests   int
	ok         int // answered 200
	failed     int // an error or another status
	tokenPOSTs int
	latency    histogram
}

func (s *phaseStats) add(o *phaseStats) {
	s.requests += o.requests
	s.ok += o.ok
	s.failed += o.failed
	s.tokenPOSTs += o.tokenPOSTs
	s.latency.add(&o.latency)
}

func (r *demoResult) print(w io.Writer) {
	fmt.Fprintf(w, "%s (%s)\n", r.client.name, r.client.desc)
	const format = "  %-10s %9v %9v %7v %11v %10v %10v\n"
	fmt.Fprintf(w, format, "phase", "requests", "ok", "failed", "token POSTs", "p50", "p99")
	row := func(name string, s *phaseStats) {
		fmt.Fprintf(w, format, name, s.requests, s.ok, s.failed, s.tokenPOSTs,
			formatLatency(s.latency.quantile(0.50)), formatLatency(s.latency.quantile(0.99)))
	}
	for i := range r.phases {
		row(demoPhases[i].name, &r.phases[i])
	}
	row("total", &r.total)
}

func formatLatency(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

// runDemo runs the demo traffic through each client in turn.
func runDemo(ctx context.Context, workers int, phaseLen time.Duration) ([]demoResult, error) {
	var results []demoResult
	for _, dc := range demoClients {
		results = append(results, runDemoClient(ctx, dc, workers, phaseLen))
		if err := ctx.Err(); err != nil {
			return results, fmt.Errorf("interrupted: %w", err)
		}
	}
	return results, nil
}

// runDemoClient runs the phases against a fresh fake PandaDoc through
// dc's client. Every request has a timeout and the workers stop after the
// last phase, so it returns soon after phaseLen*len(demoPhases) whatever
// the client does.
func runDemoClient(ctx context.Context, dc demoClient, workers int, phaseLen time.Duration) demoResult {
	srv := pandadoctest.NewServer(pandadoctest.WithRotation(true))
	defer srv.Close()
	tr := newHTTPTransport()
	tr.MaxIdleConnsPerHost = workers
	defer tr.CloseIdleConnections()
	client, src := dc.setup(ctx, srv, srv.IssueToken(), tr)
	current := func() string {
		tok, err := src.Token()
		if err != nil {
			return ""
		}
		return tok.AccessToken
	}
	url := srv.URL + "/public/v1/documents"

	// phase is the index of the current phase, set before its knob is
	// turned; past the last one, the workers stop.
	var phase atomic.Int32
	perWorker := make([][]phaseStats, workers)
	var wg sync.WaitGroup
	for i := range perWorker {
		stats := make([]phaseStats, len(demoPhases))
		perWorker[i] = stats
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && int(phase.Load()) < len(demoPhases) {
				t0 := time.Now()
				ok := demoRequest(ctx, client, url)
				// A request counts in the phase it ends in: one
				// that a phase's knob turned against ends after
				// the knob was turned, so after the phase began.
				s := &stats[min(int(phase.Load()), len(demoPhases)-1)]
				s.requests++
				if ok {
					s.ok++
				} else {
					s.failed++
				}
				s.latency.record(time.Since(t0))
			}
		}()
	}

	posts := make([]int, len(demoPhases)+1)
	for i, p := range demoPhases {
		posts[i] = srv.TotalTokenRequests()
		phase.Store(int32(i))
		if p.begin != nil {
			p.begin(srv, current)
		}
		timer := time.NewTimer(phaseLen)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
		}
	}
	phase.Store(int32(len(demoPhases)))
	wg.Wait()
	posts[len(demoPhases)] = srv.TotalTokenRequests()

	res := demoResult{client: dc, phases: make([]phaseStats, len(demoPhases))}
	for i := range res.phases {
		for _, stats := range perWorker {
			res.phases[i].add(&stats[i])
		}
		res.phases[i].tokenPOSTs = posts[i+1] - posts[i]
		res.total.add(&res.phases[i])
	}
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

// histogram records latencies in buckets about 3% wide, in constant
// memory however many requests a phase sees. The zero value is empty.
type histogram struct {
	counts [histBuckets]int64
	n      int64
}

// histScale is the number of buckets per factor e of latency; bucket i
// holds latencies of about exp(i/histScale) nanoseconds.
const (
	histScale   = 32
	histBuckets = 26 * histScale // up to e^26 ns, about 2 days
)

func (h *histogram) record(d time.Duration) {
	i := 0
	if d > 1 {
		i = min(int(math.Log(float64(d))*histScale), histBuckets-1)
	}
	h.counts[i]++
	h.n++
}

func (h *histogram) add(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the latency below which a fraction q of the recorded
// ones lie, or 0 when none are recorded.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= max(rank, 1) {
			// The middle of the bucket.
			return time.Duration(math.Exp((float64(i) + 0.5) / histScale))
		}
	}
	return 0
}
