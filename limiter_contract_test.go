package pandadocauth

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth/internal/testutil"
)

// TestLimiterCloseRequestBody: the request's body, and every body
// GetBody made, is closed exactly once, on every path.
func TestLimiterCloseRequestBody(t *testing.T) {
	errDown := errors.New("connection reset")
	tests := []struct {
		name    string
		method  string
		prefill int // requests before, to fill the limit of 1
		timeout time.Duration
		faults  func(int, *http.Request) (*http.Response, error)
		noURL   bool
		wantErr bool
	}{
		{name: "sent", method: "POST"},
		{name: "no URL", method: "POST", noURL: true, wantErr: true},
		{name: "refused: slot past the deadline", method: "POST", prefill: 1, timeout: time.Second, wantErr: true},
		{name: "429 retried", method: "POST", faults: func(n int, _ *http.Request) (*http.Response, error) {
			if n == 1 {
				return newResponse(429, `{"detail":"Request was throttled. Expected available in 1 second."}`), nil
			}
			return nil, nil
		}},
		{name: "429 returned", method: "POST", timeout: 100 * time.Millisecond, faults: func(n int, _ *http.Request) (*http.Response, error) {
			return newResponse(429, `{"detail":"Request was throttled. Expected available in 30 seconds."}`), nil
		}},
		{name: "network error", method: "POST", faults: func(int, *http.Request) (*http.Response, error) { return nil, errDown }, wantErr: true},
		{name: "5xx retried then returned", method: "PUT", faults: func(int, *http.Request) (*http.Response, error) { return newResponse(503, "busy"), nil }},
		{name: "network errors retried", method: "PUT", faults: func(int, *http.Request) (*http.Response, error) { return nil, errDown }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newAutoClock()
			api := newThrottleAPI(clk, nil)
			lim := testLimiter(clk, api, &Limiter{Limits: Limits{Other: 1}})
			for range tt.prefill {
				req, _ := http.NewRequestWithContext(context.Background(), tt.method, apiURL+"/x/fields", nil)
				if _, err := lim.RoundTrip(req); err != nil {
					t.Fatal(err)
				}
			}
			api.faults = tt.faults
			var mu sync.Mutex
			var bodies []*trackedBody
			newBody := func() *trackedBody {
				mu.Lock()
				defer mu.Unlock()
				b := &trackedBody{Reader: strings.NewReader("{}")}
				bodies = append(bodies, b)
				return b
			}
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			req, _ := http.NewRequestWithContext(ctx, tt.method, apiURL+"/x/fields", newBody())
			req.GetBody = func() (io.ReadCloser, error) { return newBody(), nil }
			if tt.noURL {
				req.URL = nil
			}
			resp, err := lim.RoundTrip(req)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if resp != nil {
				resp.Body.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			for i, b := range bodies {
				if n := b.closes.Load(); n != 1 {
					t.Errorf("body %d of %d closed %d times, want 1", i, len(bodies), n)
				}
			}
		})
	}
}

// TestLimiterRequestUnchanged: the caller's request is not modified, on
// any path, and what is sent carries no Idempotency-Key or
// X-Idempotency-Key (net/http would replay a POST that has one).
func TestLimiterRequestUnchanged(t *testing.T) {
	clk := newAutoClock()
	api := newThrottleAPI(clk, nil)
	api.faults = func(n int, _ *http.Request) (*http.Response, error) {
		if n == 1 {
			return newResponse(429, `{"detail":"Request was throttled. Expected available in 2 seconds."}`), nil
		}
		return nil, nil
	}
	lim := testLimiter(clk, api, &Limiter{})
	ctx := WithGrant(context.Background(), "acme")
	req, _ := http.NewRequestWithContext(ctx, "POST", apiURL, strings.NewReader(`{"template_uuid":"t"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "inv-1")
	req.Header["X-Idempotency-Key"] = nil // net/http's "replayable, send nothing"
	req.Header.Set("X-Request-Id", "r-1")
	body, getBody := req.Body, req.GetBody
	header := req.Header.Clone()
	u := *req.URL
	resp, err := lim.RoundTrip(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v, %v", resp, err)
	}
	resp.Body.Close()
	if !reflect.DeepEqual(req.Header, header) {
		t.Errorf("caller's header changed: %v, was %v", req.Header, header)
	}
	if *req.URL != u || req.Body != body || req.Context() != ctx || reflect.ValueOf(req.GetBody).Pointer() != reflect.ValueOf(getBody).Pointer() {
		t.Error("caller's request changed")
	}
	all := api.all()
	if len(all) != 2 {
		t.Fatalf("%d attempts, want 2", len(all))
	}
	for i, a := range all {
		_, k1 := a.header["Idempotency-Key"]
		_, k2 := a.header["X-Idempotency-Key"]
		if k1 || k2 {
			t.Errorf("attempt %d carried an idempotency header: %v", i+1, a.header)
		}
		if a.header.Get("X-Request-Id") != "r-1" || a.header.Get("Content-Type") != "application/json" {
			t.Errorf("attempt %d lost the caller's headers: %v", i+1, a.header)
		}
		if a.body != `{"template_uuid":"t"}` {
			t.Errorf("attempt %d body = %q", i+1, a.body)
		}
	}
}

// TestLimiterUnsentPOSTRetried: a POST whose connection failed before
// its headers were written never reached PandaDoc: it is retried, and
// its slots are given back.
func TestLimiterUnsentPOSTRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connections are refused
	clk := newAutoClock()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	var retried []RetriedInfo
	obs := &Observer{Retried: func(ctx context.Context, info RetriedInfo) { retried = append(retried, info) }}
	lim := testLimiter(clk, tr, &Limiter{Observer: obs})
	body := `{"template_uuid":"t"}`
	req, _ := http.NewRequestWithContext(WithGrant(context.Background(), "acme"), "POST", "http://"+addr+"/public/v1/documents", strings.NewReader(body))
	_, err = lim.RoundTrip(req)
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("err = %v, want the dial error", err)
	}
	if len(retried) != DefaultRetries {
		t.Fatalf("Retried events = %+v, want %d", retried, DefaultRetries)
	}
	for _, info := range retried {
		if info.Reason != RetryUnsent || info.Err == nil {
			t.Errorf("Retried event = %+v, want reason unsent", info)
		}
	}
	lim.local.mu.Lock()
	defer lim.local.mu.Unlock()
	if u := lim.local.m["acme"]; u == nil || u[ClassCreateFromTemplate] == nil || u[ClassCreateFromTemplate].log.n != 0 {
		t.Errorf("buckets = %+v: the unsent attempts' slots must be given back", u)
	}
}

// TestLimiterSentPOSTNotRetried: a POST that reached the server, whose
// connection then broke, may have created a document: it is not sent
// again. A GET is.
func TestLimiterSentPOSTNotRetried(t *testing.T) {
	for _, tt := range []struct {
		method string
		want   int32
	}{{"POST", 1}, {"PATCH", 1}, {"GET", 1 + DefaultRetries}, {"PUT", 1 + DefaultRetries}} {
		t.Run(tt.method, func(t *testing.T) {
			var arrived atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				arrived.Add(1)
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close() // the request arrived; the answer never does
				}
			}))
			defer srv.Close()
			clk := newAutoClock()
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			lim := testLimiter(clk, tr, &Limiter{})
			req, _ := http.NewRequest(tt.method, srv.URL+"/public/v1/documents/abc", strings.NewReader(`{"name":"n"}`))
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(`{"name":"n"}`)), nil }
			if _, err := lim.RoundTrip(req); err == nil {
				t.Fatal("no error; want the broken connection's")
			}
			if n := arrived.Load(); n != tt.want {
				t.Errorf("the server got %d requests, want %d", n, tt.want)
			}
		})
	}
}

// TestLimiterTokenEndpointNotLimited: requests to /oauth2/ pass without
// a slot, whatever the limits.
func TestLimiterTokenEndpointNotLimited(t *testing.T) {
	clk := newFakeClock()
	api := newThrottleAPI(clk, nil)
	lim := testLimiter(clk, api, &Limiter{Sandbox: true, Limits: Limits{Other: 1}, MaxWait: time.Nanosecond})
	for i := range 5 {
		req, _ := http.NewRequest("POST", "https://api.pandadoc.com/oauth2/access_token", strings.NewReader("grant_type=refresh_token"))
		resp, err := lim.RoundTrip(req)
		if err != nil {
			t.Fatalf("token request %d: %v", i+1, err)
		}
		resp.Body.Close()
	}
	if n := lim.local.size(); n != 0 {
		t.Errorf("%d buckets: the token endpoint must take no slot", n)
	}
}

// TestLimiterBelowGrants: under Grants.Transport, every request on the
// wire takes a slot, the replay after a 401 too; the token endpoint,
// reached through the same Limiter, takes none.
func TestLimiterBelowGrants(t *testing.T) {
	mt := httpmock.NewMockTransport()
	srv := newTokenServer(t, 3600)
	mt.RegisterResponder("POST", TokenURL, srv.RoundTrip)
	var apiCalls atomic.Int32
	mt.RegisterResponder("GET", apiURL, func(req *http.Request) (*http.Response, error) {
		if apiCalls.Add(1) == 1 {
			return httpmock.NewStringResponse(401, `{"type":"authentication_error"}`), nil
		}
		return httpmock.NewStringResponse(200, `{"results":[]}`), nil
	})
	clk := newFakeClock()
	// Limits of 2 a minute for the API, 1 for Other, which the token
	// endpoint would be; MaxWait turns any wait into an error.
	lim := testLimiter(clk, mt, &Limiter{Limits: Limits{ListStatusDelete: 2, Other: 1}, MaxWait: time.Nanosecond})
	conf := testConfig(mt)
	conf.HTTPClient = &http.Client{Transport: lim}
	tok := &oauth2.Token{AccessToken: testAccess, RefreshToken: testRefresh, TokenType: "Bearer", Expiry: clk.Now().Add(-time.Minute)}
	g := &Grants{Config: conf, Store: &keyedMemStore{m: map[string]*oauth2.Token{"acme": tok}}, clk: &clockRef{clk}}
	defer g.Wait()
	client := &http.Client{Transport: g.Transport(lim)}
	get := func() (*http.Response, error) {
		req, _ := http.NewRequestWithContext(WithGrant(context.Background(), "acme"), "GET", apiURL, nil)
		return client.Do(req)
	}
	resp, err := get() // expired: refresh; 401: refresh again, replay
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v, %v", resp, err)
	}
	resp.Body.Close()
	if n := mt.GetCallCountInfo()[tokenCall]; n != 2 {
		t.Fatalf("%d token requests, want 2 (both through the Limiter, neither limited)", n)
	}
	if n := apiCalls.Load(); n != 2 {
		t.Fatalf("%d API requests, want 2: the request and its replay", n)
	}
	_, err = get()
	var rle *RateLimitError
	if !errors.As(err, &rle) || rle.Grant != "acme" || rle.Class != ClassListStatusDelete {
		t.Fatalf("third request: err = %v, want a *RateLimitError: the replay took the second slot", err)
	}
}

// keyedMemStore is an in-memory KeyedStore.
type keyedMemStore struct {
	mu sync.Mutex // guards m
	m  map[string]*oauth2.Token
}

func (k *keyedMemStore) Load(ctx context.Context, key string) (*oauth2.Token, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[key], nil
}

func (k *keyedMemStore) Save(ctx context.Context, key string, t *oauth2.Token) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[key] = t
	return nil
}

// failingStore is a LimitStore that fails, counting its calls.
type failingStore struct{ calls atomic.Int32 }

func (s *failingStore) Reserve(ctx context.Context, op LimitOp) (LimitSlot, error) {
	s.calls.Add(1)
	return LimitSlot{}, errors.New("dial tcp 10.0.0.1:6379: connection refused")
}

func (s *failingStore) Report(ctx context.Context, op LimitOp) error {
	s.calls.Add(1)
	return errors.New("dial tcp 10.0.0.1:6379: connection refused")
}

// TestLimiterStoreFails: when Store fails, requests are limited in this
// process instead, none fails, and Logger hears of it once a minute.
func TestLimiterStoreFails(t *testing.T) {
	clk := newFakeClock()
	api := newThrottleAPI(clk, nil)
	logger, logs := newTestLogger()
	store := &failingStore{}
	lim := testLimiter(clk, api, &Limiter{Store: store, Limits: Limits{ListStatusDelete: 2}, Logger: logger})
	for i := range 2 {
		resp, err := lim.RoundTrip(getReq(t, "acme", i))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d: %v, %v", i, resp, err)
		}
	}
	ch := goRoundTrip(lim, getReq(t, "acme", 3))
	clk.WaitTimers(1) // limited here: the third waits for a minute
	if got := clk.Waits(); len(got) != 1 || got[0] != time.Minute {
		t.Fatalf("waits = %v, want [1m]", got)
	}
	clk.Advance(time.Minute)
	if r := testutil.Recv(t, ch, "the third request"); r.err != nil {
		t.Fatal(r.err)
	}
	if n := strings.Count(logs.String(), "Limiter.Store failed"); n != 1 {
		t.Errorf("logged %d times in the first minute, want 1:\n%s", n, logs.String())
	}
	clk.Advance(time.Minute)
	if _, err := lim.RoundTrip(getReq(t, "acme", 4)); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "Limiter.Store failed"); n != 2 {
		t.Errorf("logged %d times after a minute more, want 2", n)
	}
	if !strings.Contains(logs.String(), "failures=") {
		t.Errorf("the log does not count the failures: %s", logs.String())
	}
	if n := store.calls.Load(); n != 4 {
		t.Errorf("Store called %d times, want 4: one per request", n)
	}
}
