package pandadocauth_test

// Benchmarks of this package against golang.org/x/oauth2, side by side in
// one process, on identical work. BENCHMARKS.md has the command and the
// results.
//
// Every benchmark has one sub-benchmark per contender, named impl=…:
//
//	pandadocauth  pandadocauth.Transport with a *pandadocauth.TokenSource
//	xoauth2       oauth2.Transport with x/oauth2's ReuseTokenSource
//	limit         the least any Bearer transport can do for the same work
//
// so that `benchstat -col /impl` puts them in columns. The benchmarks
// report figures with b.ReportMetric; they never assert them. They fail
// only when the harness itself breaks (a wrong header, a stray goroutine).
//
// BenchmarkHotPath measures one request with a valid token. The others are
// scenarios: each iteration runs a whole scenario against token endpoints
// and APIs served by httptest on loopback, and stops every server,
// connection and goroutine it started before the next one.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
)

const (
	benchClientID     = "bench-client"
	benchClientSecret = "bench-secret"
	benchAPIURL       = "https://api.pandadoc.com/public/v1/documents"
	pandadocBody401   = `{"type":"authentication_error","detail":"Authentication credentials were not provided."}`

	// deadTokenURL is a token endpoint where nothing listens.
	deadTokenURL = "https://127.0.0.1:1/token"
)

// setup is what a contender is given to authorize requests.
type setup struct {
	tok      *oauth2.Token     // the grant's current token; each contender gets its own copy
	tokenURL string            // the token endpoint
	hc       *http.Client      // the client that reaches tokenURL
	early    time.Duration     // early-refresh window; 0 means each side's default
	base     http.RoundTripper // reaches the API
}

// contender builds one side's RoundTripper. stop, if not nil, ends what
// the RoundTripper started by itself.
type contender struct {
	name  string
	build func(s setup) (rt http.RoundTripper, stop func())
}

// pandadocauthSide is this package, wired as its documentation shows.
var pandadocauthSide = contender{"pandadocauth", func(s setup) (http.RoundTripper, func()) {
	tok := *s.tok
	conf := &pandadocauth.Config{
		ClientID:     benchClientID,
		ClientSecret: benchClientSecret,
		TokenURL:     s.tokenURL,
		HTTPClient:   s.hc,
	}
	src := &pandadocauth.TokenSource{Config: conf, Initial: &tok, EarlyRefresh: s.early}
	return &pandadocauth.Transport{Source: src, Base: s.base}, src.Wait
}}

// grantsSide is a Grants holding the grant, its Transport picking it
// from the request's context (WithGrant), as the many-grants
// documentation shows.
var grantsSide = contender{"grants", func(s setup) (http.RoundTripper, func()) {
	tok := *s.tok
	conf := &pandadocauth.Config{
		ClientID:     benchClientID,
		ClientSecret: benchClientSecret,
		TokenURL:     s.tokenURL,
		HTTPClient:   s.hc,
	}
	g := &pandadocauth.Grants{Config: conf, Store: &sharedKeyedStore{m: map[string]*oauth2.Token{"ws": &tok}}, EarlyRefresh: s.early}
	return g.Transport(s.base), g.Wait
}}

// sharedKeyedStore is an in-memory KeyedStore that returns the tokens it
// holds, not copies: what the grants retain is then only their own
// state, not the Store's tokens.
type sharedKeyedStore struct {
	mu sync.Mutex // guards m
	m  map[string]*oauth2.Token
}

func (k *sharedKeyedStore) Load(ctx context.Context, key string) (*oauth2.Token, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[key], nil
}

func (k *sharedKeyedStore) Save(ctx context.Context, key string, t *oauth2.Token) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[key] = t
	return nil
}

// xoauth2Side is golang.org/x/oauth2 as it is usually wired: Config's
// ReuseTokenSource, or ReuseTokenSourceWithExpiry when an early window is
// compared, under oauth2.Transport.
var xoauth2Side = contender{"xoauth2", func(s setup) (http.RoundTripper, func()) {
	tok := *s.tok
	conf := &oauth2.Config{
		ClientID:     benchClientID,
		ClientSecret: benchClientSecret,
		Endpoint:     pandadocauth.Endpoint,
	}
	if s.tokenURL != "" {
		conf.Endpoint = oauth2.Endpoint{TokenURL: s.tokenURL, AuthStyle: oauth2.AuthStyleInParams}
	}
	ctx := context.Background()
	if s.hc != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, s.hc)
	}
	src := conf.TokenSource(ctx, &tok)
	if s.early > 0 {
		src = oauth2.ReuseTokenSourceWithExpiry(&tok, src, s.early)
	}
	return &oauth2.Transport{Source: src, Base: s.base}, nil
}}

// limitTransport is the least work a Bearer transport does per request:
// one req.Clone and one Header.Set of a header value built beforehand.
// The header is read atomically because the scenarios' limits replace it.
type limitTransport struct {
	header atomic.Pointer[string] // "Bearer <token>"
	base   http.RoundTripper
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req2 := req.Clone(req.Context())
	req2.Header.Set("Authorization", *t.header.Load())
	return t.base.RoundTrip(req2)
}

// staticLimit serves the token it was given, whatever happens.
var staticLimit = contender{"limit", func(s setup) (http.RoundTripper, func()) {
	t := &limitTransport{base: s.base}
	h := "Bearer " + s.tok.AccessToken
	t.header.Store(&h)
	return t, nil
}}

// nopTransport is an API that costs nothing: it returns the same
// response to every request.
type nopTransport struct{ resp *http.Response }

func (t *nopTransport) RoundTrip(*http.Request) (*http.Response, error) { return t.resp, nil }

func newNopTransport() *nopTransport {
	return &nopTransport{resp: &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{}, Body: http.NoBody}}
}

// headerCheck records the Authorization header of the last request.
type headerCheck struct {
	next http.RoundTripper
	got  string
}

func (h *headerCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	h.got = req.Header.Get("Authorization")
	return h.next.RoundTrip(req)
}

// callerHeaders are the headers a caller might set on an API request.
var callerHeaders = [][2]string{
	{"Accept", "application/json"},
	{"Content-Type", "application/json"},
	{"User-Agent", "acme-billing/2.3 (+https://acme.example)"},
	{"X-Request-Id", "7f1c2a9e-5b0d-4e3a-9a61-0c8f3d2b1e44"},
	{"Accept-Language", "en-US"},
	{"Cache-Control", "no-cache"},
	{"Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	{"X-Workspace-Id", "ws_8Hq2LkP"},
	{"Idempotency-Key", "inv-2026-000417"},
	{"X-Client-Version", "2.3.0"},
}

// BenchmarkHotPath is one request with a valid token through each
// contender, to an API that costs nothing: the cost of authentication
// itself. The request carries 1 or 10 headers of its own, which Clone
// copies.
func BenchmarkHotPath(b *testing.B) {
	tok := &oauth2.Token{
		AccessToken:  "at-0",
		TokenType:    "Bearer",
		RefreshToken: "rt-0",
		Expiry:       time.Now().Add(time.Hour),
		ExpiresIn:    3600,
	}
	for _, mode := range []string{"serial", "parallel"} {
		for _, n := range []int{1, 10} {
			for _, c := range []contender{pandadocauthSide, grantsSide, xoauth2Side, staticLimit} {
				name := fmt.Sprintf("%s/headers=%d/impl=%s", mode, n, c.name)
				b.Run(name, func(b *testing.B) {
					// Every request names its grant, for the grants contender;
					// the others ignore it.
					req, err := http.NewRequestWithContext(pandadocauth.WithGrant(context.Background(), "ws"), http.MethodGet, benchAPIURL, nil)
					if err != nil {
						b.Fatal(err)
					}
					for _, h := range callerHeaders[:n] {
						req.Header.Set(h[0], h[1])
					}
					// Nothing listens at deadTokenURL: a refresh would fail
					// the benchmark.
					check := &headerCheck{next: newNopTransport()}
					rt, _ := c.build(setup{tok: tok, tokenURL: deadTokenURL, base: check})
					if _, err := rt.RoundTrip(req); err != nil {
						b.Fatal(err)
					}
					if check.got != "Bearer at-0" {
						b.Fatalf("harness: Authorization = %q, want %q", check.got, "Bearer at-0")
					}
					// The contender measured is a fresh one; its first
					// request, which loads the token, is not measured.
					rt, _ = c.build(setup{tok: tok, tokenURL: deadTokenURL, base: newNopTransport()})
					if _, err := rt.RoundTrip(req); err != nil {
						b.Fatal(err)
					}
					b.ReportAllocs()
					b.ResetTimer()
					if mode == "serial" {
						for i := 0; i < b.N; i++ {
							if _, err := rt.RoundTrip(req); err != nil {
								b.Fatal(err)
							}
						}
						return
					}
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := rt.RoundTrip(req); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		}
	}
}

// tokenEndpoint is a token endpoint that answers refresh grants after a
// delay, with numbered tokens (at-1, at-2, …) or with invalid_grant.
type tokenEndpoint struct {
	delay     time.Duration
	fail      bool  // answer 400 invalid_grant
	expiresIn int64 // seconds
	posts     atomic.Int64
	issued    atomic.Int64
}

func (e *tokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.posts.Add(1)
	if r.Method != http.MethodPost || r.ParseForm() != nil || r.PostForm.Get("grant_type") != "refresh_token" ||
		r.PostForm.Get("client_id") != benchClientID || r.PostForm.Get("client_secret") != benchClientSecret {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	timer := time.NewTimer(e.delay)
	select {
	case <-timer.C:
	case <-r.Context().Done():
		timer.Stop()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if e.fail {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_grant"}`)
		return
	}
	n := e.issued.Add(1)
	fmt.Fprintf(w, `{"access_token":"at-%d","token_type":"Bearer","refresh_token":"rt-%d","expires_in":%d,"scope":"read+write"}`,
		n, n, e.expiresIn)
}

// loopback is one scenario's servers and clients on loopback.
type loopback struct {
	ep       *tokenEndpoint
	tokenSrv *httptest.Server
	tokenTr  *http.Transport
	hc       *http.Client // reaches tokenSrv
}

func newLoopback(ep *tokenEndpoint) *loopback {
	l := &loopback{ep: ep, tokenSrv: httptest.NewServer(ep), tokenTr: newClientTransport()}
	l.hc = &http.Client{Transport: l.tokenTr, Timeout: 30 * time.Second}
	return l
}

func (l *loopback) close() {
	l.tokenTr.CloseIdleConnections()
	l.tokenSrv.Close()
}

// newClientTransport is an http.Transport of its own, whose idle
// connections the scenario closes when it ends.
func newClientTransport() *http.Transport {
	return &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 10 * time.Second}
}

// settle waits until the goroutines started since before have ended, so
// that no scenario runs into the tail of the previous one and none
// outlives its benchmark.
func settle(b *testing.B, before int) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			b.Fatalf("harness: %d goroutines still running after the scenario:\n%s",
				runtime.NumGoroutine()-before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}

// postRefresh is one bare refresh_token grant request, parsed just
// enough, for the limit contenders of the scenarios.
func postRefresh(hc *http.Client, tokenURL, refreshToken string) (header string, err error) {
	resp, err := hc.PostForm(tokenURL, url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refreshToken},
		"client_id":     {benchClientID},
		"client_secret": {benchClientSecret},
	})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK || tr.AccessToken == "" {
		return "", fmt.Errorf("token endpoint: %s %q", resp.Status, tr.Error)
	}
	return "Bearer " + tr.AccessToken, nil
}

// onceTransport is the limit for a burst on an expired token: the first
// request starts exactly one refresh, every request waits for exactly
// that one, then shares its header or its error. Nothing can do with
// fewer requests or less waiting.
type onceTransport struct {
	once   sync.Once
	done   chan struct{}
	header string
	err    error
	post   func() (string, error)
	base   http.RoundTripper
}

func (t *onceTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.once.Do(func() {
		go func() {
			t.header, t.err = t.post()
			close(t.done)
		}()
	})
	<-t.done
	if t.err != nil {
		return nil, t.err
	}
	req2 := req.Clone(req.Context())
	req2.Header.Set("Authorization", t.header)
	return t.base.RoundTrip(req2)
}

var onceLimit = contender{"limit", func(s setup) (http.RoundTripper, func()) {
	t := &onceTransport{done: make(chan struct{}), base: s.base}
	t.post = func() (string, error) { return postRefresh(s.hc, s.tokenURL, s.tok.RefreshToken) }
	return t, func() {
		t.once.Do(func() { close(t.done) }) // never started
		<-t.done
	}
}}

// burstResult is what one burst produced.
type burstResult struct {
	wall   time.Duration
	failed int64
}

// burst sends one request from each of n goroutines at once, through rt,
// and returns when all have been answered. Only the burst is timed.
func burst(b *testing.B, rt http.RoundTripper, n int) burstResult {
	req, err := http.NewRequest(http.MethodGet, benchAPIURL, nil)
	if err != nil {
		b.Fatal(err)
	}
	var (
		gate   = make(chan struct{})
		wg     sync.WaitGroup
		failed atomic.Int64
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			resp, err := rt.RoundTrip(req)
			if err != nil || resp.StatusCode != http.StatusOK {
				failed.Add(1)
			}
		}()
	}
	runtime.Gosched()
	b.StartTimer()
	start := time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start)
	b.StopTimer()
	return burstResult{wall: wall, failed: failed.Load()}
}

// runBurst runs a burst benchmark: per iteration, a fresh token endpoint
// and contender, n goroutines on an expired token.
func runBurst(b *testing.B, c contender, n int, newEndpoint func() *tokenEndpoint) {
	before := runtime.NumGoroutine()
	b.ReportAllocs()
	b.StopTimer()
	var posts, failed int64
	var wall time.Duration
	var mallocs uint64
	var ms runtime.MemStats
	for i := 0; i < b.N; i++ {
		l := newLoopback(newEndpoint())
		tok := &oauth2.Token{AccessToken: "at-0", TokenType: "Bearer", RefreshToken: "rt-0",
			Expiry: time.Now().Add(-time.Minute), ExpiresIn: 3600}
		rt, stop := c.build(setup{tok: tok, tokenURL: l.tokenSrv.URL, hc: l.hc, base: newNopTransport()})
		runtime.ReadMemStats(&ms)
		m0 := ms.Mallocs
		r := burst(b, rt, n)
		runtime.ReadMemStats(&ms)
		mallocs += ms.Mallocs - m0
		if stop != nil {
			stop()
		}
		l.close()
		settle(b, before)
		posts += l.ep.posts.Load()
		failed += r.failed
		wall += r.wall
	}
	b.ReportMetric(float64(posts)/float64(b.N), "posts/op")
	b.ReportMetric(float64(failed)/float64(b.N), "failed/op")
	b.ReportMetric(wall.Seconds()*1e3/float64(b.N), "wall-ms/op")
	b.ReportMetric(float64(mallocs)/float64(b.N)/float64(n), "allocs/waiter")
}

// BenchmarkExpiryBurst: 2,000 goroutines find the token expired at once;
// the token endpoint answers after 50 ms. posts/op is how many refresh
// requests reached it, wall-ms/op how long until every goroutine had its
// answer.
func BenchmarkExpiryBurst(b *testing.B) {
	for _, n := range []int{2000, 10000} {
		for _, c := range []contender{pandadocauthSide, xoauth2Side, onceLimit} {
			b.Run(fmt.Sprintf("goroutines=%d/impl=%s", n, c.name), func(b *testing.B) {
				runBurst(b, c, n, func() *tokenEndpoint {
					return &tokenEndpoint{delay: 50 * time.Millisecond, expiresIn: 3600}
				})
			})
		}
	}
}

// BenchmarkFailureBurst: 200 goroutines find the token expired at once;
// the token endpoint answers 400 invalid_grant after 20 ms. Every request
// fails (failed/op = 200); what differs is how often the endpoint is
// asked and how long callers wait for their error.
func BenchmarkFailureBurst(b *testing.B) {
	const n = 200
	for _, c := range []contender{pandadocauthSide, xoauth2Side, onceLimit} {
		b.Run(fmt.Sprintf("goroutines=%d/impl=%s", n, c.name), func(b *testing.B) {
			runBurst(b, c, n, func() *tokenEndpoint {
				return &tokenEndpoint{delay: 20 * time.Millisecond, fail: true}
			})
		})
	}
}

// earlyTransport is the limit for a refresh under load: the current
// header is always served, and the first request past the early window
// starts one refresh that swaps the header when it succeeds. No request
// ever waits.
type earlyTransport struct {
	limitTransport
	early   time.Time
	started atomic.Bool
	wg      sync.WaitGroup
	post    func() (string, error)
}

func (t *earlyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !time.Now().Before(t.early) && t.started.CompareAndSwap(false, true) {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			if h, err := t.post(); err == nil {
				t.header.Store(&h)
			}
		}()
	}
	return t.limitTransport.RoundTrip(req)
}

var earlyLimit = contender{"limit", func(s setup) (http.RoundTripper, func()) {
	t := &earlyTransport{early: s.tok.Expiry.Add(-s.early)}
	t.base = s.base
	h := "Bearer " + s.tok.AccessToken
	t.header.Store(&h)
	t.post = func() (string, error) { return postRefresh(s.hc, s.tokenURL, s.tok.RefreshToken) }
	return t, t.wg.Wait
}}

// BenchmarkEarlyRefresh: a request every millisecond for 2 s, open loop
// (each on its own goroutine, whatever the others do). The token expires
// 1.5 s into the run with a 1 s early window, so the refresh is due at
// 0.5 s; the token endpoint answers after 200 ms. delayed/op counts the
// requests whose RoundTrip took more than 20 ms, max-ms/op is the longest
// (the API costs nothing, so this is latency added by authentication).
func BenchmarkEarlyRefresh(b *testing.B) {
	const (
		run       = 2 * time.Second
		every     = time.Millisecond
		expiresIn = 1500 * time.Millisecond
		lifetime  = 3 // seconds: expires_in of the first and of new tokens
		window    = time.Second
		slow      = 20 * time.Millisecond
	)
	for _, c := range []contender{pandadocauthSide, xoauth2Side, earlyLimit} {
		b.Run("every=1ms/impl="+c.name, func(b *testing.B) {
			before := runtime.NumGoroutine()
			b.ReportAllocs()
			var posts, sent, delayed, failed int64
			var maxLat time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				l := newLoopback(&tokenEndpoint{delay: 200 * time.Millisecond, expiresIn: lifetime})
				req, err := http.NewRequest(http.MethodGet, benchAPIURL, nil)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				tok := &oauth2.Token{AccessToken: "at-0", TokenType: "Bearer", RefreshToken: "rt-0",
					Expiry: start.Add(expiresIn), ExpiresIn: lifetime}
				rt, stop := c.build(setup{tok: tok, tokenURL: l.tokenSrv.URL, hc: l.hc, early: window, base: newNopTransport()})
				var (
					wg    sync.WaitGroup
					mu    sync.Mutex // guards worst
					worst time.Duration
					nSlow atomic.Int64
					nFail atomic.Int64
					nSent int64
				)
				// Request k is due at start+k*every; one the driver is
				// late for is sent at once, so a busy machine bunches
				// requests but never drops them.
				for k := time.Duration(0); k*every < run; k++ {
					if d := time.Until(start.Add(k * every)); d > 0 {
						time.Sleep(d)
					}
					nSent++
					wg.Add(1)
					go func() {
						defer wg.Done()
						t0 := time.Now()
						resp, err := rt.RoundTrip(req)
						d := time.Since(t0)
						if err != nil || resp.StatusCode != http.StatusOK {
							nFail.Add(1)
						}
						if d > slow {
							nSlow.Add(1)
						}
						mu.Lock()
						worst = max(worst, d)
						mu.Unlock()
					}()
				}
				wg.Wait()
				b.StopTimer()
				if stop != nil {
					stop()
				}
				l.close()
				settle(b, before)
				posts += l.ep.posts.Load()
				sent += nSent
				delayed += nSlow.Load()
				failed += nFail.Load()
				maxLat = max(maxLat, worst)
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(float64(posts)/n, "posts/op")
			b.ReportMetric(float64(sent)/n, "requests/op")
			b.ReportMetric(float64(failed)/n, "failed/op")
			b.ReportMetric(float64(delayed)/n, "delayed/op")
			b.ReportMetric(maxLat.Seconds()*1e3, "max-ms/op")
		})
	}
}

// revokingAPI is an API on loopback that accepts any "Bearer at-N" token
// until its revokeAt-th request, then rejects the token that request
// carried, as PandaDoc does a revoked token.
type revokingAPI struct {
	revokeAt int64
	requests atomic.Int64
	rejected atomic.Int64
	mu       sync.Mutex // guards revoked
	revoked  string
}

func (a *revokingAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	auth := r.Header.Get("Authorization")
	n := a.requests.Add(1)
	a.mu.Lock()
	if n == a.revokeAt {
		a.revoked = auth
	}
	bad := auth == a.revoked || !strings.HasPrefix(auth, "Bearer at-")
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if bad {
		a.rejected.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, pandadocBody401)
		return
	}
	if r.Method == http.MethodPost {
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":"doc_1","status":"document.uploaded"}`)
		return
	}
	io.WriteString(w, `{"results":[]}`)
}

// BenchmarkRevocation: 20 workers send 50 requests each (alternately a
// GET and a POST with a replayable body) to an API on loopback that, at
// its 500th request, revokes the token in use and answers 401 to it from
// then on; the token endpoint answers after 50 ms. ok-%/op is the share
// of requests that succeeded; api-401/op how many 401s the API sent.
// The limit is 100% with one refresh.
func BenchmarkRevocation(b *testing.B) {
	const (
		workers   = 20
		perWorker = 50
		total     = workers * perWorker
	)
	for _, c := range []contender{pandadocauthSide, xoauth2Side} {
		b.Run(fmt.Sprintf("requests=%d/impl=%s", total, c.name), func(b *testing.B) {
			before := runtime.NumGoroutine()
			b.ReportAllocs()
			var posts, ok, rejected int64
			var wall time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				l := newLoopback(&tokenEndpoint{delay: 50 * time.Millisecond, expiresIn: 3600})
				api := &revokingAPI{revokeAt: total / 2}
				apiSrv := httptest.NewServer(api)
				apiTr := newClientTransport()
				tok := &oauth2.Token{AccessToken: "at-0", TokenType: "Bearer", RefreshToken: "rt-0",
					Expiry: time.Now().Add(time.Hour), ExpiresIn: 3600}
				rt, stop := c.build(setup{tok: tok, tokenURL: l.tokenSrv.URL, hc: l.hc, base: apiTr})
				client := &http.Client{Transport: rt, Timeout: 30 * time.Second}
				var (
					wg  sync.WaitGroup
					nOK atomic.Int64
				)
				b.StartTimer()
				start := time.Now()
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := range perWorker {
							var req *http.Request
							var err error
							if (w+j)%2 == 0 {
								req, err = http.NewRequest(http.MethodGet, apiSrv.URL+"/public/v1/documents", nil)
							} else {
								body := `{"name":"Invoice ` + strconv.Itoa(w*perWorker+j) + `","url":"https://example.com/invoice.pdf"}`
								req, err = http.NewRequest(http.MethodPost, apiSrv.URL+"/public/v1/documents", strings.NewReader(body))
								if err == nil {
									req.Header.Set("Content-Type", "application/json")
								}
							}
							if err != nil {
								b.Error(err)
								return
							}
							resp, err := client.Do(req)
							if err != nil {
								continue
							}
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							if resp.StatusCode < 300 {
								nOK.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				wall += time.Since(start)
				b.StopTimer()
				if stop != nil {
					stop()
				}
				apiTr.CloseIdleConnections()
				apiSrv.Close()
				l.close()
				settle(b, before)
				posts += l.ep.posts.Load()
				ok += nOK.Load()
				rejected += api.rejected.Load()
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(100*float64(ok)/(total*n), "ok-%/op")
			b.ReportMetric(float64(posts)/n, "posts/op")
			b.ReportMetric(float64(rejected)/n, "api-401/op")
			b.ReportMetric(wall.Seconds()*1e3/n, "wall-ms/op")
		})
	}
}

// clockSink keeps BenchmarkClock's reads from being optimised away.
var clockSink struct {
	t time.Time
	d time.Duration
}

// BenchmarkClock is the cost of one clock read on the machine, to read
// BenchmarkHotPath by: time.Now reads the wall and the monotonic clock,
// time.Since of a time.Time that carries a monotonic reading only the
// latter.
func BenchmarkClock(b *testing.B) {
	b.Run("call=Now", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			clockSink.t = time.Now()
		}
	})
	start := time.Now()
	b.Run("call=Since", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			clockSink.d = time.Since(start)
		}
	})
}

// BenchmarkFootprint: 100,000 grants, each sends one request; then the
// heap is measured after a GC with every grant still reachable.
// B/grant is the heap retained per grant, the grant's tokens included,
// as a user's heap holds them: each grant's token is made during the
// run, as a Store's Load or a login would make it. allocs/grant counts
// the allocations of making the token, setting the grant up and using
// it once; goroutines/grant what is left running at rest.
//
//	pandadocauth  a TokenSource (Initial: the token) and a Transport per grant
//	xoauth2       Config.TokenSource(ctx, token) and an oauth2.Transport per grant
//	grants        one Grants and its Transport; a KeyedStore decodes each
//	              grant's token on Load and keeps nothing on Save, as a
//	              database does
//
// state=valid: the token is valid. state=refreshed: it has expired, so
// the request first refreshes it, at an in-process token endpoint that
// answers as PandaDoc does (with a scope and a rotated refresh token):
// what is retained then is what a grant keeps of a refresh.
func BenchmarkFootprint(b *testing.B) {
	const grants = 100000
	keys := make([]string, grants)
	reqs := make([]*http.Request, grants)
	for i := range keys {
		keys[i] = fmt.Sprintf("workspace-%06d", i)
		req, err := http.NewRequestWithContext(pandadocauth.WithGrant(context.Background(), keys[i]), http.MethodGet, benchAPIURL, nil)
		if err != nil {
			b.Fatal(err)
		}
		reqs[i] = req
	}
	endpoint := &http.Client{Transport: footprintEndpoint{}}
	conf := &pandadocauth.Config{ClientID: benchClientID, ClientSecret: benchClientSecret, TokenURL: benchTokenURL, HTTPClient: endpoint}
	xconf := &oauth2.Config{ClientID: benchClientID, ClientSecret: benchClientSecret, Endpoint: oauth2.Endpoint{TokenURL: benchTokenURL, AuthStyle: oauth2.AuthStyleInParams}}
	xctx := context.WithValue(context.Background(), oauth2.HTTPClient, endpoint)
	nop := newNopTransport()
	for _, state := range []string{"valid", "refreshed"} {
		expiry := time.Now().Add(time.Hour)
		if state == "refreshed" {
			expiry = time.Now().Add(-time.Minute)
		}
		sides := []struct {
			name  string
			setup func() (use func(i int) (http.RoundTripper, *http.Request), keep func() any)
		}{
			{"pandadocauth", func() (func(int) (http.RoundTripper, *http.Request), func() any) {
				rts := make([]http.RoundTripper, grants)
				return func(i int) (http.RoundTripper, *http.Request) {
					rts[i] = &pandadocauth.Transport{Source: &pandadocauth.TokenSource{Config: conf, Initial: footprintToken(i, expiry)}, Base: nop}
					return rts[i], reqs[i]
				}, func() any { return rts }
			}},
			{"xoauth2", func() (func(int) (http.RoundTripper, *http.Request), func() any) {
				rts := make([]http.RoundTripper, grants)
				return func(i int) (http.RoundTripper, *http.Request) {
					rts[i] = &oauth2.Transport{Source: xconf.TokenSource(xctx, footprintToken(i, expiry)), Base: nop}
					return rts[i], reqs[i]
				}, func() any { return rts }
			}},
			{"grants", func() (func(int) (http.RoundTripper, *http.Request), func() any) {
				g := &pandadocauth.Grants{Config: conf, Store: decodingKeyedStore{expiry: expiry}}
				rt := g.Transport(nop)
				return func(i int) (http.RoundTripper, *http.Request) { return rt, reqs[i] }, func() any { return g }
			}},
		}
		for _, side := range sides {
			b.Run(fmt.Sprintf("grants=%d/state=%s/impl=%s", grants, state, side.name), func(b *testing.B) {
				var retained, allocs, goroutines float64
				var ms runtime.MemStats
				for i := 0; i < b.N; i++ {
					use, keep := side.setup()
					runtime.GC()
					runtime.ReadMemStats(&ms)
					h0, m0, g0 := ms.HeapAlloc, ms.Mallocs, runtime.NumGoroutine()
					for j := range grants {
						rt, req := use(j)
						if _, err := rt.RoundTrip(req); err != nil {
							b.Fatal(err)
						}
					}
					runtime.ReadMemStats(&ms)
					m1 := ms.Mallocs
					runtime.GC()
					runtime.ReadMemStats(&ms)
					h1 := ms.HeapAlloc
					goroutines += float64(runtime.NumGoroutine() - g0)
					runtime.KeepAlive(keep())
					retained += (float64(h1) - float64(h0)) / grants
					allocs += float64(m1-m0) / grants
				}
				b.ReportMetric(retained/float64(b.N), "B/grant")
				b.ReportMetric(allocs/float64(b.N), "allocs/grant")
				b.ReportMetric(goroutines/float64(b.N)/grants, "goroutines/grant")
			})
		}
	}
}

// benchTokenURL is the footprint's in-process token endpoint.
const benchTokenURL = "https://auth.example/oauth2/access_token"

// footprintToken is grant i's token, made as a Store's Load makes one.
func footprintToken(i int, expiry time.Time) *oauth2.Token {
	return &oauth2.Token{AccessToken: fmt.Sprintf("at-%08d-0123456789abcdef", i), TokenType: "Bearer", RefreshToken: fmt.Sprintf("rt-%08d-0123456789abcdef", i), Expiry: expiry, ExpiresIn: 3600}
}

// decodingKeyedStore makes each grant's token on Load, from its key, and
// keeps nothing on Save, as a database does.
type decodingKeyedStore struct{ expiry time.Time }

func (s decodingKeyedStore) Load(ctx context.Context, key string) (*oauth2.Token, error) {
	i, err := strconv.Atoi(strings.TrimPrefix(key, "workspace-"))
	if err != nil {
		return nil, err
	}
	return footprintToken(i, s.expiry), nil
}

func (decodingKeyedStore) Save(ctx context.Context, key string, t *oauth2.Token) error { return nil }

// footprintEndpoint answers a refresh as PandaDoc does: a new access
// token and a rotated refresh token, named after the grant's.
type footprintEndpoint struct{}

func (footprintEndpoint) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, err
	}
	n := strings.TrimPrefix(strings.TrimSuffix(form.Get("refresh_token"), "-0123456789abcdef"), "rt-")
	answer := `{"access_token":"at-` + n + `-fedcba9876543210","token_type":"Bearer","expires_in":31535999,"refresh_token":"rt-` + n + `-fedcba9876543210","scope":"read+write"}`
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(answer)), Request: req}, nil
}

// BenchmarkGrantsColdStart: 1,000 grants whose tokens expired together
// (a deploy, a clock jump) each get one request at once; the token
// endpoint answers in 50 ms and the Grants allows 16 refreshes at a time
// (its default), so the least it can take is 1,000 / 16 × 50 ms =
// 3,125 ms. wall-ms/op is how long until every request was answered,
// posts/op the refreshes, max-in-flight the most POSTs at once.
func BenchmarkGrantsColdStart(b *testing.B) {
	const grants = 1000
	b.Run(fmt.Sprintf("grants=%d/cap=16/impl=grants", grants), func(b *testing.B) {
		before := runtime.NumGoroutine()
		var wall time.Duration
		var posts, failed, maxIn int64
		for i := 0; i < b.N; i++ {
			ep := &countingEndpoint{tokenEndpoint: tokenEndpoint{delay: 50 * time.Millisecond, expiresIn: 3600}}
			srv := httptest.NewServer(ep)
			tr := newClientTransport()
			store := &sharedKeyedStore{m: map[string]*oauth2.Token{}}
			for j := range grants {
				store.m[fmt.Sprint("ws", j)] = &oauth2.Token{AccessToken: fmt.Sprint("at-old-", j), RefreshToken: fmt.Sprint("rt-old-", j), Expiry: time.Now().Add(-time.Minute), ExpiresIn: 3600}
			}
			g := &pandadocauth.Grants{
				Config: &pandadocauth.Config{ClientID: benchClientID, ClientSecret: benchClientSecret, TokenURL: srv.URL, HTTPClient: &http.Client{Transport: tr}},
				Store:  store,
			}
			rt := g.Transport(newNopTransport())
			var wg sync.WaitGroup
			var bad atomic.Int64
			start := time.Now()
			for j := range grants {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequestWithContext(pandadocauth.WithGrant(context.Background(), fmt.Sprint("ws", j)), http.MethodGet, benchAPIURL, nil)
					if resp, err := rt.RoundTrip(req); err != nil || resp.StatusCode != http.StatusOK {
						bad.Add(1)
					}
				}()
			}
			wg.Wait()
			wall += time.Since(start)
			g.Wait()
			tr.CloseIdleConnections()
			srv.Close()
			settle(b, before)
			posts += ep.posts.Load()
			failed += bad.Load()
			maxIn = max(maxIn, ep.maxIn.Load())
		}
		b.ReportMetric(wall.Seconds()*1e3/float64(b.N), "wall-ms/op")
		b.ReportMetric(float64(posts)/float64(b.N), "posts/op")
		b.ReportMetric(float64(failed)/float64(b.N), "failed/op")
		b.ReportMetric(float64(maxIn), "max-in-flight")
	})
}

// countingEndpoint is a tokenEndpoint that records the most requests it
// served at once.
type countingEndpoint struct {
	tokenEndpoint
	in, maxIn atomic.Int64
}

func (e *countingEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := e.in.Add(1)
	for {
		m := e.maxIn.Load()
		if n <= m || e.maxIn.CompareAndSwap(m, n) {
			break
		}
	}
	defer e.in.Add(-1)
	e.tokenEndpoint.ServeHTTP(w, r)
}
