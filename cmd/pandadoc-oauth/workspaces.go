package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// The workspaces phase: many grants whose tokens expire together.
const (
	demoDefaultWorkspaces = 200
	demoMaxWorkspaces     = 2000
	// demoPerWorkspace is the number of concurrent requests per
	// workspace in the workspaces phase.
	demoPerWorkspace = 2
)

// workspaceStats is what one contender did in the workspaces phase.
type workspaceStats struct {
	client     string
	workspaces int
	requests   int
	failed     int
	tokenPOSTs int
	peakPOSTs  int           // token requests in flight at once, at most
	wall       time.Duration // of the burst
	heapPerWS  int64         // heap retained per workspace by the clients, approximately
	metrics    *demoMetrics  // pandadocauth's only
}

// workspaceContender builds the clients of n workspaces.
type workspaceContender struct {
	name string
	desc string
	// setup returns a function that sends a request for workspace i,
	// and one that waits for background work. tokens[i] is workspace
	// i's token; tokenTr carries token requests, apiTr API requests.
	setup func(ctx context.Context, srv *pandadoctest.Server, tokens []*oauth2.Token, tokenTr, apiTr http.RoundTripper, obs *pandadocauth.Observer) (send func(ctx context.Context, i int) bool, wait func())
}

var workspaceContenders = []workspaceContender{
	{
		name: "golang.org/x/oauth2",
		desc: "one oauth2.Transport + oauth2.Config.TokenSource per workspace, kept in a map",
		setup: func(ctx context.Context, srv *pandadoctest.Server, tokens []*oauth2.Token, tokenTr, apiTr http.RoundTripper, _ *pandadocauth.Observer) (func(context.Context, int) bool, func()) {
			conf := &oauth2.Config{
				ClientID:     pandadoctest.DefaultClientID,
				ClientSecret: pandadoctest.DefaultClientSecret,
				Endpoint: oauth2.Endpoint{
					TokenURL:  srv.URL + "/oauth2/access_token",
					AuthStyle: oauth2.AuthStyleInParams,
				},
			}
			tctx := context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Transport: tokenTr, Timeout: demoRequestTimeout})
			clients := make(map[string]*http.Client, len(tokens))
			for i, tok := range tokens {
				src := conf.TokenSource(tctx, tok)
				clients[workspaceKey(i)] = &http.Client{Transport: &oauth2.Transport{Source: src, Base: apiTr}, Timeout: demoRequestTimeout}
			}
			url := srv.URL + "/public/v1/documents"
			return func(ctx context.Context, i int) bool {
				return demoRequest(ctx, clients[workspaceKey(i)], url)
			}, func() {}
		},
	},
	{
		name: "pandadocauth",
		desc: "one pandadocauth.Grants; each request names its workspace with WithGrant",
		setup: func(_ context.Context, srv *pandadoctest.Server, tokens []*oauth2.Token, tokenTr, apiTr http.RoundTripper, obs *pandadocauth.Observer) (func(context.Context, int) bool, func()) {
			cfg := srv.Config()
			cfg.HTTPClient = &http.Client{Transport: tokenTr, Timeout: demoRequestTimeout}
			store := &memKeyedStore{m: make(map[string]*oauth2.Token, len(tokens))}
			for i, tok := range tokens {
				store.m[workspaceKey(i)] = tok // in an app: saved when the customer connected
			}
			grants := &pandadocauth.Grants{Config: cfg, Store: store, Observer: obs}
			client := &http.Client{Transport: grants.Transport(apiTr), Timeout: demoRequestTimeout}
			url := srv.URL + "/public/v1/documents"
			return func(ctx context.Context, i int) bool {
				return demoRequest(pandadocauth.WithGrant(ctx, workspaceKey(i)), client, url)
			}, grants.Wait
		},
	},
}

func workspaceKey(i int) string { return fmt.Sprintf("workspace-%d", i) }

// runWorkspaces runs the workspaces phase with each contender in turn.
func runWorkspaces(ctx context.Context, n int, latency time.Duration) ([]workspaceStats, error) {
	var results []workspaceStats
	for _, wc := range workspaceContenders {
		results = append(results, runWorkspacesWith(ctx, wc, n, latency))
		if err := ctx.Err(); err != nil {
			return results, fmt.Errorf("interrupted: %w", err)
		}
	}
	return results, nil
}

// runWorkspacesWith serves n workspaces through wc against a fresh fake:
// every token has expired, and each workspace gets demoPerWorkspace
// concurrent requests, all released together.
func runWorkspacesWith(ctx context.Context, wc workspaceContender, n int, latency time.Duration) workspaceStats {
	srv := pandadoctest.NewServer(pandadoctest.WithRotation(true))
	defer srv.Close()
	srv.FailAlways(pandadoctest.Success(latency))
	tr := newHTTPTransport()
	tr.MaxIdleConnsPerHost = n * demoPerWorkspace
	defer tr.CloseIdleConnections()
	counting := &inFlightCounter{base: tr}

	start := time.Now()
	tokens := make([]*oauth2.Token, n)
	for i := range tokens {
		tokens[i] = srv.IssueToken()
	}
	srv.ExpireAll()
	for _, tok := range tokens {
		tok.Expiry = start.Add(-time.Second)
	}

	goroutines := runtime.NumGoroutine()
	heapBefore := liveHeap()
	m := &demoMetrics{}
	send, wait := wc.setup(ctx, srv, tokens, counting, tr, m.observer())
	ok := make([]bool, n*demoPerWorkspace)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for j := range ok {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			ok[j] = send(ctx, j%n)
		}()
	}
	t0 := time.Now()
	close(release)
	wg.Wait()
	wall := time.Since(t0)
	wait()
	// The clients' own state: not the connections (x/oauth2 opens one
	// per concurrent refresh), whose goroutines hold their buffers until
	// they end.
	tr.CloseIdleConnections()
	settle(goroutines)
	heapAfter := liveHeap()
	runtime.KeepAlive(send)

	st := workspaceStats{client: wc.name, workspaces: n, requests: len(ok), tokenPOSTs: srv.TotalTokenRequests(),
		peakPOSTs: int(counting.peak.Load()), wall: wall, heapPerWS: (heapAfter - heapBefore) / int64(n)}
	if wc.name == "pandadocauth" {
		st.metrics = m
	}
	for _, r := range ok {
		if !r {
			st.failed++
		}
	}
	return st
}

// settle waits, for a second at most, until no more than n goroutines
// run: until the closed connections' goroutines have ended.
func settle(n int) {
	deadline := time.Now().Add(time.Second)
	for runtime.NumGoroutine() > n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// liveHeap returns the bytes of live heap objects, after collections:
// three, so that objects freed by finalizers (closed connections' files)
// are gone too.
func liveHeap() int64 {
	for range 3 {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// printWorkspaces writes the workspaces phase's table.
func printWorkspaces(w io.Writer, results []workspaceStats, latency time.Duration) {
	if len(results) == 0 {
		return
	}
	fmt.Fprintf(w, "\nMany workspaces: %d workspaces whose tokens all expired together, %d concurrent requests\n"+
		"each, released at once; the token endpoint takes %v to answer.\n",
		results[0].workspaces, demoPerWorkspace, latency)
	for _, wc := range workspaceContenders {
		fmt.Fprintf(w, "  %-19s  %s\n", wc.name, wc.desc)
	}
	fmt.Fprintln(w)
	const format = "%-19s  %8v  %6v  %11v  %13v  %8v  %10v\n"
	fmt.Fprintf(w, format, "client", "requests", "failed", "token POSTs", "peak in flight", "wall", "heap/ws")
	for _, r := range results {
		fmt.Fprintf(w, format, r.client, r.requests, r.failed, r.tokenPOSTs, r.peakPOSTs, formatWall(r.wall), formatBytes(r.heapPerWS))
	}
	fmt.Fprintf(w, "\npeak in flight: token requests at once; pandadocauth caps them at Grants.MaxRefreshes\n"+
		"(%d by default) to stay under PandaDoc's rate limit, so it takes about workspaces/%d x %v.\n"+
		"heap/ws: heap retained per workspace once served, measured roughly with\n"+
		"runtime.ReadMemStats: the clients, their tokens and the fake's records of them, not the\n"+
		"connections (BENCHMARKS.md measures the clients alone).\n", pandadocauth.DefaultMaxRefreshes, pandadocauth.DefaultMaxRefreshes, latency)
}

func formatBytes(n int64) string {
	if n < 0 {
		return "?"
	}
	return fmt.Sprintf("%d B", n)
}

// inFlightCounter is a RoundTripper that counts the requests in flight
// through it, and remembers the most at once.
type inFlightCounter struct {
	base http.RoundTripper
	now  atomic.Int64
	peak atomic.Int64
}

func (c *inFlightCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	n := c.now.Add(1)
	defer c.now.Add(-1)
	for {
		p := c.peak.Load()
		if n <= p || c.peak.CompareAndSwap(p, n) {
			break
		}
	}
	resp, err := c.base.RoundTrip(req)
	if err == nil {
		// The token response is read by the caller; count until it is
		// closed, as the request is in flight until then.
		resp.Body = &countedBody{ReadCloser: resp.Body, done: c.now.Add}
		c.now.Add(1)
	}
	return resp, err
}

// countedBody decrements the in-flight count once, when closed.
type countedBody struct {
	io.ReadCloser
	done func(int64) int64
	once sync.Once
}

func (b *countedBody) Close() error {
	b.once.Do(func() { b.done(-1) })
	return b.ReadCloser.Close()
}

// memKeyedStore is an in-memory pandadocauth.KeyedStore.
type memKeyedStore struct {
	mu sync.Mutex // guards m
	m  map[string]*oauth2.Token
}

func (s *memKeyedStore) Load(_ context.Context, key string) (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.m[key]; t != nil {
		t2 := *t
		return &t2, nil
	}
	return nil, nil
}

func (s *memKeyedStore) Save(_ context.Context, key string, t *oauth2.Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t2 := *t
	s.m[key] = &t2
	return nil
}
