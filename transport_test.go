package pandadocauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth/internal/fakepandadoc"
)

// apiResponder answers 200 to requests whose Bearer token is accepted
// and PandaDoc's 401 to the others, recording the bodies it received.
type apiResponder struct {
	accept func(token string) bool
	mu     sync.Mutex // guards bodies and auths
	bodies []string
	auths  []string
}

func (a *apiResponder) responder() httpmock.Responder {
	return func(req *http.Request) (*http.Response, error) {
		var body []byte
		if req.Body != nil {
			body, _ = io.ReadAll(req.Body)
		}
		auth := req.Header.Get("Authorization")
		a.mu.Lock()
		a.bodies = append(a.bodies, string(body))
		a.auths = append(a.auths, auth)
		a.mu.Unlock()
		if !a.accept(strings.TrimPrefix(auth, "Bearer ")) {
			return httpmock.NewStringResponse(401, `{"type":"authentication_error","detail":"Authentication credentials were not provided."}`), nil
		}
		return httpmock.NewStringResponse(200, `{"results":[]}`), nil
	}
}

// closeCounter is a request body that counts Close calls.
type closeCounter struct {
	io.Reader
	closed atomic.Int32
}

func (c *closeCounter) Close() error {
	c.closed.Add(1)
	return nil
}

// errSource is an oauth2.TokenSource that fails.
type errSource struct{}

func (errSource) Token() (*oauth2.Token, error) { return nil, errors.New("no token today") }

func TestTransportSetsBearerAndLeavesRequestAlone(t *testing.T) {
	t.Parallel()
	ts, mt, _ := newSource(t, newTokenServer(t, 0), time.Hour)
	api := &apiResponder{accept: func(string) bool { return true }}
	mt.RegisterResponder("GET", apiURL, api.responder())
	req, _ := http.NewRequest("GET", apiURL, nil)
	req.Header.Set("X-Caller", "kept")
	before := req.Header.Clone()
	resp, err := (&Transport{Source: ts, Base: mt}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := api.auths[0]; got != "Bearer "+testAccess {
		t.Errorf("Authorization %q", got)
	}
	if len(req.Header) != len(before) || req.Header.Get("Authorization") != "" || req.Header.Get("X-Caller") != "kept" {
		t.Errorf("the caller's request was modified: %v", req.Header)
	}
}

func TestTransportCloseRequestBody(t *testing.T) {
	t.Parallel()
	okBase := httpmock.NewMockTransport()
	okBase.RegisterResponder("POST", apiURL, func(req *http.Request) (*http.Response, error) {
		req.Body.Close() // as a real transport does
		return httpmock.NewStringResponse(200, ""), nil
	})
	errBase := httpmock.NewMockTransport()
	errBase.RegisterNoResponder(func(req *http.Request) (*http.Response, error) {
		req.Body.Close()
		return nil, errors.New("network down")
	})
	valid := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: testAccess})
	expired := &TokenSource{Config: testConfig(httpmock.NewMockTransport()), Initial: &oauth2.Token{AccessToken: testAccess, Expiry: time.Now().Add(-time.Hour)}}
	cases := []struct {
		name    string
		rt      http.RoundTripper
		url     string
		wantErr bool
	}{
		{"success", &Transport{Source: valid, Base: okBase}, apiURL, false},
		{"base error", &Transport{Source: valid, Base: errBase}, apiURL, true},
		{"nil source", &Transport{Base: okBase}, apiURL, true},
		{"token source error", &Transport{Source: errSource{}, Base: okBase}, apiURL, true},
		{"TokenSource error", &Transport{Source: expired, Base: okBase}, apiURL, true},
		{"plain http", &Transport{Source: valid, Base: okBase}, "http://api.pandadoc.com/public/v1/documents", true},
		{"API key success", &APIKeyTransport{Key: "key-SECRET", Base: okBase}, apiURL, false},
		{"API key empty", &APIKeyTransport{Base: okBase}, apiURL, true},
		{"API key plain http", &APIKeyTransport{Key: "key-SECRET", Base: okBase}, "http://api.pandadoc.com/x", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := &closeCounter{Reader: strings.NewReader("{}")}
			req, _ := http.NewRequest("POST", tc.url, body)
			resp, err := tc.rt.RoundTrip(req)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				if resp != nil {
					t.Error("a response came back with the error")
				}
				// Base's errors pass through unchanged, like x/oauth2's.
				if tc.name != "base error" && !strings.HasPrefix(err.Error(), "pandadocauth: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				assertNoSecret(t, "error", err.Error())
			} else {
				resp.Body.Close()
			}
			if n := body.closed.Load(); n != 1 {
				t.Errorf("request body closed %d times, want 1", n)
			}
		})
	}
}

func TestTransportRefusesPlainHTTP(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url  string
		sent bool
	}{
		{"http://api.pandadoc.com/public/v1/documents", false},
		{"http://10.0.0.1/x", false},
		{"http://localhost.evil.example/x", false},
		{"http://127.0.0.1.evil.example/x", false},
		// Go's resolver may ask DNS for names under .localhost.
		{"http://api.localhost:8080/x", false},
		{"http://evil.localhost./x", false},
		{"http://a.b.LOCALHOST/x", false},
		{"http://127.0.0.1:8080/x", true},
		{"http://127.0.0.2:8080/x", true},
		{"http://localhost:8080/x", true},
		{"http://LocalHost.:8080/x", true},
		{"http://[::1]:8080/x", true},
		{"https://api.pandadoc.com/public/v1/documents", true},
	} {
		for _, rt := range []func(http.RoundTripper) http.RoundTripper{
			func(b http.RoundTripper) http.RoundTripper {
				return &Transport{Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: testAccess}), Base: b}
			},
			func(b http.RoundTripper) http.RoundTripper { return &APIKeyTransport{Key: "key-SECRET", Base: b} },
		} {
			mt := httpmock.NewMockTransport()
			mt.RegisterNoResponder(httpmock.NewStringResponder(200, "ok"))
			req, _ := http.NewRequest("GET", tc.url, nil)
			resp, err := rt(mt).RoundTrip(req)
			if tc.sent {
				if err != nil {
					t.Errorf("%s: %v", tc.url, err)
					continue
				}
				resp.Body.Close()
			} else if !errors.Is(err, ErrInsecureRequest) {
				t.Errorf("%s: %v, want ErrInsecureRequest", tc.url, err)
			}
			if got, want := mt.GetTotalCallCount(), map[bool]int{true: 1, false: 0}[tc.sent]; got != want {
				t.Errorf("%s: Base called %d times, want %d", tc.url, got, want)
			}
		}
	}
}

func TestTransportNoTokenOnCrossHostRedirect(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex // guards seen
	seen := map[string]string{}
	record := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Host+r.URL.Path] = r.Header.Get("Authorization")
		mu.Unlock()
	}
	other := httptest.NewServer(http.HandlerFunc(record))
	defer other.Close()
	// The same server under another hostname: localhost vs 127.0.0.1.
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record(w, r)
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, otherURL+"/landed", http.StatusFound)
		case "/here":
			http.Redirect(w, r, "/stayed", http.StatusFound)
		}
	}))
	defer origin.Close()

	for _, mk := range []func() http.RoundTripper{
		func() http.RoundTripper {
			return &Transport{Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: testAccess}), Base: origin.Client().Transport}
		},
		func() http.RoundTripper { return &APIKeyTransport{Key: "key-SECRET", Base: origin.Client().Transport} },
	} {
		client := &http.Client{Transport: mk()}
		for _, path := range []string{"/away", "/here"} {
			resp, err := client.Get(origin.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		mu.Lock()
		originHost := strings.TrimPrefix(origin.URL, "http://")
		if seen[originHost+"/away"] == "" || seen[originHost+"/stayed"] == "" {
			t.Errorf("no credential on the origin host: %v", seen)
		}
		if got := seen[strings.TrimPrefix(otherURL, "http://")+"/landed"]; got != "" {
			t.Errorf("credential %q sent to another host after a redirect", got)
		}
		clear(seen)
		mu.Unlock()
	}
}

func TestTransport401RefreshesAndRetriesOnce(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, mt, _ := newSource(t, srv, time.Hour)
	api := &apiResponder{accept: func(tok string) bool { return tok != testAccess }}
	mt.RegisterResponder("POST", apiURL, api.responder())
	client := &http.Client{Transport: &Transport{Source: ts, Base: mt}}

	resp, err := client.Post(apiURL, "application/json", bytes.NewBufferString(`{"name":"contract"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200 after the retry", resp.StatusCode)
	}
	if len(api.bodies) != 2 || api.bodies[0] != api.bodies[1] || api.bodies[1] != `{"name":"contract"}` {
		t.Errorf("bodies sent: %q; want the body replayed once", api.bodies)
	}
	if api.auths[1] != "Bearer at-SECRET-1" {
		t.Errorf("retry carried %q", api.auths[1])
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
		t.Errorf("%d token POSTs, want 1", n)
	}
}

func TestTransportRefreshTokenOnlyRefreshesFirst(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	srv := newTokenServer(t, 3600)
	mt.RegisterResponder("POST", TokenURL, srv.RoundTrip)
	api := &apiResponder{accept: func(tok string) bool { return tok == "at-SECRET-1" }}
	mt.RegisterResponder("GET", apiURL, api.responder())
	src := testConfig(mt).TokenSource(&oauth2.Token{RefreshToken: testRefresh})
	resp, err := NewClient(&http.Client{Transport: mt}, src).Get(apiURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(api.auths) != 1 {
		t.Errorf("status %d after %d API calls; want 200 after 1: a token with no access token is refreshed before use", resp.StatusCode, len(api.auths))
	}
}

func TestTransport401NeverRetriesTwice(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, mt, _ := newSource(t, srv, time.Hour)
	api := &apiResponder{accept: func(string) bool { return false }}
	mt.RegisterResponder("GET", apiURL, api.responder())
	resp, err := (&http.Client{Transport: &Transport{Source: ts, Base: mt}}).Get(apiURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(body), "authentication_error") {
		t.Fatalf("status %d body %q; want the API's 401", resp.StatusCode, body)
	}
	if n := mt.GetCallCountInfo()["GET "+apiURL]; n != 2 {
		t.Errorf("%d API calls, want 2 (one retry)", n)
	}
}

func TestTransport401WithUnreplayableBody(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, mt, _ := newSource(t, srv, time.Hour)
	api := &apiResponder{accept: func(tok string) bool { return tok != testAccess }}
	mt.RegisterResponder("POST", apiURL, api.responder())
	tr := &Transport{Source: ts, Base: mt}

	req, _ := http.NewRequest("POST", apiURL, io.NopCloser(strings.NewReader("once")))
	req.GetBody = nil
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("status %d, want the 401 returned", resp.StatusCode)
	}
	if n := mt.GetCallCountInfo()["POST "+apiURL]; n != 1 {
		t.Fatalf("%d API calls, want 1: the body cannot be replayed", n)
	}
	// The next request uses a new token.
	req, _ = http.NewRequest("POST", apiURL, strings.NewReader("next"))
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || api.auths[1] != "Bearer at-SECRET-1" {
		t.Errorf("next request: status %d with %q", resp.StatusCode, api.auths[1])
	}
}

func TestTransport401StormRefreshesOnce(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	srv.HoldTokenRequests()
	ts, mt, _ := newSource(t, srv, time.Hour)
	api := &apiResponder{accept: func(tok string) bool { return tok != testAccess }}
	mt.RegisterResponder("GET", apiURL, api.responder())
	client := &http.Client{Transport: &Transport{Source: ts, Base: mt}}

	const n = 40
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(apiURL)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	waitPosts(t, srv, 1)
	srv.ReleaseTokenRequests()
	wg.Wait()
	for i, s := range statuses {
		if s != 200 {
			t.Errorf("request %d: status %d", i, s)
		}
	}
	if got := mt.GetCallCountInfo()[tokenCall]; got != 1 {
		t.Errorf("%d token POSTs for a storm of %d 401s, want 1", got, n)
	}
}

func TestTransportLate401KeepsNewerToken(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, mt, _ := newSource(t, srv, time.Hour)
	// The API holds the first request until the token has been replaced,
	// then rejects the old token.
	replaced := make(chan struct{})
	arrived := make(chan struct{}, 1)
	first := true
	var mu sync.Mutex // guards first
	mt.RegisterResponder("GET", apiURL, func(req *http.Request) (*http.Response, error) {
		mu.Lock()
		wasFirst := first
		first = false
		mu.Unlock()
		if wasFirst {
			arrived <- struct{}{}
			<-replaced
			return httpmock.NewStringResponse(401, "{}"), nil
		}
		return httpmock.NewStringResponse(200, "{}"), nil
	})
	tr := &Transport{Source: ts, Base: mt}
	done := make(chan *http.Response)
	go func() {
		req, _ := http.NewRequest("GET", apiURL, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	<-arrived // the first API call
	old, _ := ts.Token()
	ts.Invalidate(old)
	newer, err := ts.Token()
	if err != nil || newer.AccessToken != "at-SECRET-1" {
		t.Fatalf("%v, %v", newer, err)
	}
	close(replaced)
	if resp := <-done; resp != nil {
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("late-rejected request: status %d, want 200 from the retry with the newer token", resp.StatusCode)
		}
	}
	if tok, _ := ts.Token(); tok != newer {
		t.Error("a late 401 replaced the newer token")
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
		t.Errorf("%d token POSTs, want 1: a late 401 starts no refresh", n)
	}
}

// TestTransport401RefreshFails: when the API answers 401 and no new
// token can be had, the caller gets the reason as RoundTrip's error (the
// RetrieveError of the refusal, or its context's error), not a 401 that
// reads like missing credentials; the 401 is closed, and the next
// request fails fast with the same error before it is sent.
func TestTransport401RefreshFails(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		endpoint httpmock.Responder
		cancel   bool // the caller's context ends while it waits
		check    func(t *testing.T, err error)
		posts    int
	}{
		{
			name:     "invalid_grant",
			endpoint: httpmock.NewStringResponder(400, `{"error":"invalid_grant"}`),
			check: func(t *testing.T, err error) {
				var re *oauth2.RetrieveError
				if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
					t.Errorf("%v, want a RetrieveError with invalid_grant", err)
				}
			},
			posts: 1,
		},
		{
			name:     "endpoint down",
			endpoint: httpmock.NewStringResponder(503, `<html>down</html>`),
			check: func(t *testing.T, err error) {
				var re *oauth2.RetrieveError
				if !errors.As(err, &re) || re.Response.StatusCode != 503 {
					t.Errorf("%v, want a RetrieveError with status 503", err)
				}
			},
			posts: maxAttempts,
		},
		{
			name:   "caller leaves",
			cancel: true,
			check: func(t *testing.T, err error) {
				if !errors.Is(err, context.Canceled) {
					t.Errorf("%v, want context.Canceled", err)
				}
			},
			posts: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var srv *fakepandadoc.Server
			if tc.cancel {
				srv = newTokenServer(t, 3600)
				srv.HoldTokenRequests()
			}
			ts, mt, _ := newSource(t, srv, time.Hour)
			if tc.endpoint != nil {
				mt.RegisterResponder("POST", TokenURL, tc.endpoint)
			}
			rejection := &closeCounter{Reader: strings.NewReader(`{"type":"authentication_error"}`)}
			mt.RegisterResponder("GET", apiURL, func(req *http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: 401, Status: "401 Unauthorized", Header: http.Header{}, Body: rejection}, nil
			})
			tr := &Transport{Source: ts, Base: mt}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				go func() {
					waitPosts(t, srv, 1)
					cancel()
				}()
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", apiURL, nil)
			resp, err := tr.RoundTrip(req)
			if tc.cancel {
				srv.ReleaseTokenRequests()
			}
			if resp != nil || err == nil {
				t.Fatalf("%v, %v; want the refresh's error", resp, err)
			}
			tc.check(t, err)
			if !strings.Contains(err.Error(), "401") {
				t.Errorf("%q does not say that the API answered 401", err)
			}
			if !strings.HasPrefix(err.Error(), "pandadocauth: ") {
				t.Errorf("%q lacks the package prefix", err)
			}
			assertNoSecret(t, "error", err.Error())
			if n := rejection.closed.Load(); n != 1 {
				t.Errorf("the 401 response was closed %d times, want 1", n)
			}
			if tc.cancel {
				return
			}
			// The next request fails fast with the refresh error.
			req, _ = http.NewRequest("GET", apiURL, nil)
			if _, err := tr.RoundTrip(req); err == nil {
				t.Error("next request: no error")
			} else {
				tc.check(t, err)
			}
			if n := mt.GetCallCountInfo()[tokenCall]; n != tc.posts {
				t.Errorf("%d token POSTs, want %d", n, tc.posts)
			}
			if n := mt.GetCallCountInfo()["GET "+apiURL]; n != 1 {
				t.Errorf("%d API calls, want 1: the second request fails before it is sent", n)
			}
		})
	}
}

// TestTransport401RefreshFailsThroughWrapper: the same through an
// Invalidator that is not a *TokenSource.
func TestTransport401RefreshFailsThroughWrapper(t *testing.T) {
	t.Parallel()
	ts, mt, _ := newSource(t, nil, time.Hour)
	mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(400, `{"error":"invalid_grant"}`))
	rejection := &closeCounter{Reader: strings.NewReader("denied")}
	mt.RegisterResponder("GET", apiURL, func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 401, Header: http.Header{}, Body: rejection}, nil
	})
	req, _ := http.NewRequest("GET", apiURL, nil)
	resp, err := (&Transport{Source: invalidatingWrapper{ts}, Base: mt}).RoundTrip(req)
	var re *oauth2.RetrieveError
	if resp != nil || !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("%v, %v; want a RetrieveError with invalid_grant", resp, err)
	}
	if n := rejection.closed.Load(); n != 1 {
		t.Errorf("the 401 response was closed %d times, want 1", n)
	}
}

func TestTransportCallerContextLeavesDuringRefresh(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	srv.HoldTokenRequests()
	ts, mt, clock := newSource(t, srv, time.Hour)
	mt.RegisterResponder("GET", apiURL, httpmock.NewStringResponder(200, "{}"))
	clock.Advance(2 * time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", apiURL, nil)
	_, err := (&Transport{Source: ts, Base: mt}).RoundTrip(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want context.DeadlineExceeded", err)
	}
	srv.ReleaseTokenRequests()
	// The refresh went on: the next request gets the new token.
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != "at-SECRET-1" {
		t.Fatalf("%v, %v", tok, err)
	}
	if n := mt.GetCallCountInfo()[tokenCall]; n != 1 {
		t.Errorf("%d token POSTs, want 1", n)
	}
}

func TestTransportAllocations(t *testing.T) {
	ts, _, _ := newSource(t, newTokenServer(t, 0), time.Hour)
	tr := &Transport{Source: ts, Base: noopTransport{}}
	req, _ := http.NewRequest("GET", apiURL, nil)
	req.Header.Set("Accept", "application/json")
	if _, err := tr.RoundTrip(req); err != nil { // first use loads Initial
		t.Fatal(err)
	}
	got := testing.AllocsPerRun(1000, func() { tr.RoundTrip(req) })
	header := "Bearer " + testAccess
	limit := testing.AllocsPerRun(1000, func() {
		r := req.Clone(req.Context())
		r.Header.Set("Authorization", header)
		noopTransport{}.RoundTrip(r)
	})
	// The copy shares the URL and puts every header value, the
	// Authorization's too, in one allocation: two fewer than Clone+Set.
	if got > limit-2 {
		t.Errorf("RoundTrip allocates %.0f times, a bare Clone+Set %.0f: the hot path must allocate two fewer", got, limit)
	}
}

// noopTransport answers every request with a shared empty response.
type noopTransport struct{}

var noopResponse = &http.Response{StatusCode: 200, Body: http.NoBody}

func (noopTransport) RoundTrip(*http.Request) (*http.Response, error) { return noopResponse, nil }

func TestTransportThroughRealServers(t *testing.T) {
	t.Parallel()
	var refreshes atomic.Int32
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || r.Header.Get("Authorization") != "" {
			http.Error(w, `{"error":"invalid_request"}`, 400)
			return
		}
		r.ParseForm()
		if r.PostForm.Get("client_secret") != testClientSecret || r.PostForm.Get("grant_type") != "refresh_token" {
			http.Error(w, `{"error":"invalid_client"}`, 401)
			return
		}
		refreshes.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"at-SECRET-new","token_type":"Bearer","expires_in":31535999,"scope":"read+write","refresh_token":"rt-SECRET-new"}`)
	}))
	defer tokenSrv.Close()
	apiSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer at-SECRET-new" {
			w.WriteHeader(401)
			io.WriteString(w, `{"type":"authentication_error","detail":"Authentication credentials were not provided."}`)
			return
		}
		io.WriteString(w, `{"results":[]}`)
	}))
	defer apiSrv.Close()

	conf := &Config{ClientID: testClientID, ClientSecret: testClientSecret, TokenURL: tokenSrv.URL}
	src := conf.TokenSource(&oauth2.Token{AccessToken: testAccess, RefreshToken: testRefresh, Expiry: time.Now().Add(time.Hour)})
	client := NewClient(&http.Client{Timeout: 5 * time.Second}, src)
	if client.Timeout != 5*time.Second {
		t.Error("NewClient dropped the base client's settings")
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(apiSrv.URL + "/public/v1/documents")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if n := refreshes.Load(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	tokenSrv.Client().CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

func TestTransport401Contract(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		getBodyErr bool
		refreshOK  bool
		wantStatus int
	}{
		{"retry", false, true, 200},
		{"GetBody error", true, true, 401},
		{"refresh fails", false, false, 0}, // the refresh's error
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts, mt, _ := newSource(t, nil, time.Hour)
			if tc.refreshOK {
				mt.RegisterResponder("POST", TokenURL, newTokenServer(t, 3600).RoundTrip)
			} else {
				mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(400, `{"error":"invalid_grant"}`))
			}
			rejection := &closeCounter{Reader: strings.NewReader("denied")}
			mt.RegisterResponder("POST", apiURL, func(req *http.Request) (*http.Response, error) {
				io.ReadAll(req.Body)
				req.Body.Close()
				if req.Header.Get("Authorization") == "Bearer "+testAccess {
					return &http.Response{StatusCode: 401, Header: http.Header{}, Body: rejection}, nil
				}
				return httpmock.NewStringResponse(200, "ok"), nil
			})
			orig := &closeCounter{Reader: strings.NewReader("x")}
			replay := &closeCounter{Reader: strings.NewReader("x")}
			req, _ := http.NewRequest("POST", apiURL, orig)
			req.GetBody = func() (io.ReadCloser, error) {
				if tc.getBodyErr {
					return nil, errors.New("no body twice")
				}
				return replay, nil
			}
			before := req.Header.Clone()
			resp, err := (&Transport{Source: ts, Base: mt}).RoundTrip(req)
			if tc.wantStatus == 0 {
				if err == nil || resp != nil {
					t.Fatalf("%v, %v; want an error", resp, err)
				}
				if n := rejection.closed.Load(); n != 1 {
					t.Errorf("the 401 was closed %d times, want 1", n)
				}
				if n := replay.closed.Load(); n != 1 {
					t.Errorf("the body for the replay was closed %d times, want 1", n)
				}
				if n := orig.closed.Load(); n != 1 {
					t.Errorf("the request body was closed %d times, want 1", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if tc.wantStatus == 401 {
				if n := rejection.closed.Load(); n != 0 {
					t.Error("the 401 returned to the caller was closed")
				}
				if b, _ := io.ReadAll(resp.Body); string(b) != "denied" {
					t.Errorf("the 401 returned has body %q, want it unread", b)
				}
			} else if n := rejection.closed.Load(); n != 1 {
				t.Errorf("the 401 was closed %d times before the retry, want 1", n)
			}
			resp.Body.Close()
			if n := orig.closed.Load(); n != 1 {
				t.Errorf("the request body was closed %d times, want 1", n)
			}
			if n := replay.closed.Load(); tc.name == "retry" && n != 1 {
				t.Errorf("the replayed body was closed %d times, want 1", n)
			}
			if len(req.Header) != len(before) || req.Header.Get("Authorization") != "" {
				t.Error("the caller's request was modified")
			}
		})
	}
}

func TestTransportRedirectChains(t *testing.T) {
	t.Parallel()
	first, _ := http.NewRequest("GET", apiURL, nil)
	cases := []struct {
		name     string
		url      string
		response *http.Response
		token    bool
	}{
		{"same origin", apiURL + "?page=2", &http.Response{Request: first}, true},
		{"same origin, explicit default port", "https://API.pandadoc.com:443/x", &http.Response{Request: first}, true},
		{"other host", "https://other.example/x", &http.Response{Request: first}, false},
		{"same host, other port", "https://api.pandadoc.com:8443/x", &http.Response{Request: first}, false},
		{"same host, https to http", "http://api.pandadoc.com/x", &http.Response{Request: first}, false},
		{"origin unknown", apiURL, &http.Response{}, false},
	}
	for _, tc := range cases {
		for _, rt := range []func(http.RoundTripper) http.RoundTripper{
			func(b http.RoundTripper) http.RoundTripper {
				return &Transport{Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: testAccess}), Base: b}
			},
			func(b http.RoundTripper) http.RoundTripper { return &APIKeyTransport{Key: "key-SECRET", Base: b} },
		} {
			var auth string
			mt := httpmock.NewMockTransport()
			mt.RegisterNoResponder(func(req *http.Request) (*http.Response, error) {
				auth = req.Header.Get("Authorization")
				req.Body.Close()
				return httpmock.NewStringResponse(200, ""), nil
			})
			body := &closeCounter{Reader: strings.NewReader("x")}
			req, _ := http.NewRequest("POST", tc.url, body)
			req.Response = tc.response
			resp, err := rt(mt).RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if (auth != "") != tc.token {
				t.Errorf("%s: Authorization %q, want a credential: %v", tc.name, auth, tc.token)
			}
			if n := body.closed.Load(); n != 1 {
				t.Errorf("%s: body closed %d times", tc.name, n)
			}
		}
	}
}

func TestTransportPersistent401BacksOff(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	ts, mt, clock := newSource(t, srv, time.Hour)
	accept := atomic.Bool{}
	api := &apiResponder{accept: func(string) bool { return accept.Load() }}
	mt.RegisterResponder("GET", apiURL, api.responder())
	client := &http.Client{Transport: &Transport{Source: ts, Base: mt}}
	get := func() int {
		t.Helper()
		resp, err := client.Get(apiURL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	posts := func() int { return mt.GetCallCountInfo()[tokenCall] }

	// The loaded token is rejected: refresh at once. The new token is
	// rejected too, and so are the next requests: no refresh each time.
	for range 10 {
		if s := get(); s != 401 {
			t.Fatalf("status %d", s)
		}
	}
	if n := posts(); n != 1 {
		t.Fatalf("%d token POSTs for 10 rejected requests, want 1", n)
	}
	clock.Advance(time.Second) // the back-off after one rejection
	get()
	if n := posts(); n != 2 {
		t.Fatalf("%d token POSTs after the back-off, want 2", n)
	}
	clock.Advance(time.Second) // two rejections in a row: 2 s now
	get()
	if n := posts(); n != 2 {
		t.Fatalf("%d token POSTs within the doubled back-off, want 2", n)
	}
	// Once a token works, a 401 refreshes at once again.
	clock.Advance(time.Second)
	accept.Store(true)
	if s := get(); s != 200 {
		t.Fatalf("status %d", s)
	}
	accept.Store(false)
	get()
	if n := posts(); n != 3 {
		t.Errorf("%d token POSTs, want 3: a rejection after success refreshes at once", n)
	}
}

// TestTransportMalformedRequests: what net/http answers with an error is
// an error here too, never a panic, and the body is closed.
func TestTransportMalformedRequests(t *testing.T) {
	t.Parallel()
	ok := httpmock.NewMockTransport()
	ok.RegisterNoResponder(httpmock.NewStringResponder(200, ""))
	nilResp := roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, nil })
	ts, mt, _ := newSource(t, newTokenServer(t, 0), time.Hour)
	_ = mt
	transports := map[string]func(base http.RoundTripper) http.RoundTripper{
		"Transport with a *TokenSource": func(b http.RoundTripper) http.RoundTripper { return &Transport{Source: ts, Base: b} },
		"Transport with a static source": func(b http.RoundTripper) http.RoundTripper {
			return &Transport{Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: testAccess}), Base: b}
		},
		"APIKeyTransport": func(b http.RoundTripper) http.RoundTripper { return &APIKeyTransport{Key: "key-SECRET", Base: b} },
	}
	for name, mk := range transports {
		t.Run(name+"/nil Header", func(t *testing.T) {
			var auth string
			base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				auth = req.Header.Get("Authorization")
				return ok.RoundTrip(req)
			})
			req, _ := http.NewRequest("GET", apiURL, nil)
			req.Header = nil
			resp, err := mk(base).RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if auth == "" {
				t.Error("no Authorization sent")
			}
			if req.Header != nil {
				t.Error("the caller's request was modified")
			}
		})
		t.Run(name+"/nil URL", func(t *testing.T) {
			body := &closeCounter{Reader: strings.NewReader("x")}
			req := &http.Request{Method: "POST", Header: http.Header{}, Body: body}
			if _, err := mk(ok).RoundTrip(req); err == nil {
				t.Error("want an error")
			}
			if n := body.closed.Load(); n != 1 {
				t.Errorf("body closed %d times, want 1", n)
			}
		})
		t.Run(name+"/Base returns nil, nil", func(t *testing.T) {
			req, _ := http.NewRequest("GET", apiURL, nil)
			resp, err := mk(nilResp).RoundTrip(req)
			if err == nil || resp != nil {
				t.Errorf("%v, %v; want an error", resp, err)
			}
		})
	}
}

// roundTripFunc is an http.RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// invalidatingWrapper wraps a source the way users do, passing
// Invalidate on.
type invalidatingWrapper struct{ src *TokenSource }

func (w invalidatingWrapper) Token() (*oauth2.Token, error)   { return w.src.Token() }
func (w invalidatingWrapper) Invalidate(t *oauth2.Token) bool { return w.src.Invalidate(t) }

// TestTransport401ThroughWrappers: a wrapper that implements Invalidator
// keeps 401 recovery; one that does not (oauth2.ReuseTokenSource) gets
// the 401, and Transport warns once through its Logger.
func TestTransport401ThroughWrappers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		wrap    func(*TokenSource) oauth2.TokenSource
		recover bool
	}{
		{"*TokenSource", func(s *TokenSource) oauth2.TokenSource { return s }, true},
		{"Invalidator wrapper", func(s *TokenSource) oauth2.TokenSource { return invalidatingWrapper{s} }, true},
		{"oauth2.ReuseTokenSource", func(s *TokenSource) oauth2.TokenSource { return oauth2.ReuseTokenSource(nil, s) }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newTokenServer(t, 3600)
			ts, mt, _ := newSource(t, srv, 0)
			api := &apiResponder{accept: func(tok string) bool { return tok != testAccess }}
			mt.RegisterResponder("GET", apiURL, api.responder())
			logger, logs := newTestLogger()
			client := &http.Client{Transport: &Transport{Source: tc.wrap(ts), Base: mt, Logger: logger}}
			for range 3 {
				resp, err := client.Get(apiURL)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if got := resp.StatusCode == 200; got != tc.recover {
					t.Fatalf("status %d, want recovery: %v", resp.StatusCode, tc.recover)
				}
			}
			warnings := strings.Count(logs.String(), "cannot take it back")
			if want := map[bool]int{true: 0, false: 1}[tc.recover]; warnings != want {
				t.Errorf("%d warnings, want %d: %s", warnings, want, logs)
			}
			assertNoSecret(t, "log", logs.String())
		})
	}
}

// TestNewClientDefaultTimeout: NewClient(nil, src) has a timeout; a base
// client's own settings are kept.
func TestNewClientDefaultTimeout(t *testing.T) {
	t.Parallel()
	src := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: testAccess})
	if c := NewClient(nil, src); c.Timeout != DefaultClientTimeout {
		t.Errorf("Timeout %v, want %v", c.Timeout, DefaultClientTimeout)
	}
	if c := NewClient(&http.Client{Timeout: 5 * time.Second}, src); c.Timeout != 5*time.Second {
		t.Errorf("Timeout %v, want the base client's", c.Timeout)
	}
}

// TestTransport401NilBody: a Base that answers 401 with a nil Body (test
// doubles do) gets the request replayed, or the refresh's error, never a
// panic, through every RoundTripper that handles a 401.
func TestTransport401NilBody(t *testing.T) {
	t.Parallel()
	for _, refreshOK := range []bool{true, false} {
		for name, mk := range map[string]func(ts *TokenSource) http.RoundTripper{
			"*TokenSource": func(ts *TokenSource) http.RoundTripper { return &Transport{Source: ts} },
			"Invalidator":  func(ts *TokenSource) http.RoundTripper { return &Transport{Source: invalidatingWrapper{ts}} },
		} {
			t.Run(fmt.Sprintf("%s/refresh ok %v", name, refreshOK), func(t *testing.T) {
				t.Parallel()
				ts, mt, _ := newSource(t, nil, time.Hour)
				if refreshOK {
					mt.RegisterResponder("POST", TokenURL, newTokenServer(t, 3600).RoundTrip)
				} else {
					mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(400, `{"error":"invalid_grant"}`))
				}
				base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
					if req.Header.Get("Authorization") == "Bearer "+testAccess {
						return &http.Response{StatusCode: 401, Header: http.Header{}}, nil // no Body
					}
					return &http.Response{StatusCode: 200, Header: http.Header{}}, nil
				})
				rt := mk(ts)
				switch tr := rt.(type) {
				case *Transport:
					tr.Base = base
				}
				req, _ := http.NewRequest("GET", apiURL, nil)
				resp, err := rt.RoundTrip(req)
				if refreshOK {
					if err != nil || resp.StatusCode != 200 {
						t.Fatalf("%v, %v; want the replay's 200", resp, err)
					}
					return
				}
				var re *oauth2.RetrieveError
				if resp != nil || !errors.As(err, &re) {
					t.Fatalf("%v, %v; want the refresh's error", resp, err)
				}
			})
		}
	}
	t.Run("Grants", func(t *testing.T) {
		t.Parallel()
		g, _, _, _, _ := newGrants(t, 1, time.Hour)
		base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.Header.Get("Authorization") == "Bearer at-SECRET-ws0-0" {
				return &http.Response{StatusCode: 401, Header: http.Header{}}, nil
			}
			return &http.Response{StatusCode: 200, Header: http.Header{}}, nil
		})
		req, _ := http.NewRequestWithContext(WithGrant(context.Background(), "ws0"), "GET", apiURL, nil)
		resp, err := g.Transport(base).RoundTrip(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v, %v; want the replay's 200", resp, err)
		}
	})
}

// TestTransportOneAuthorization: a request whose Header map holds
// Authorization under other spellings (written as h["authorization"])
// goes out with one Authorization, ours, through every RoundTripper and
// on the replay after a 401; the caller's header is left alone.
func TestTransportOneAuthorization(t *testing.T) {
	t.Parallel()
	static := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: testAccess})
	cases := []struct {
		name string
		rt   func(t *testing.T, base http.RoundTripper) http.RoundTripper
		want string
		ctx  context.Context
	}{
		{"*TokenSource", func(t *testing.T, b http.RoundTripper) http.RoundTripper {
			ts, _, _ := newSource(t, newTokenServer(t, 0), time.Hour)
			return &Transport{Source: ts, Base: b}
		}, "Bearer " + testAccess, context.Background()},
		{"*TokenSource, replay after a 401", func(t *testing.T, b http.RoundTripper) http.RoundTripper {
			ts, _, _ := newSource(t, newTokenServer(t, 3600), time.Hour)
			return &Transport{Source: ts, Base: roundTripFunc(func(req *http.Request) (*http.Response, error) {
				if req.Header.Get("Authorization") == "Bearer "+testAccess {
					return httpmock.NewStringResponse(401, ""), nil
				}
				return b.RoundTrip(req)
			})}
		}, "Bearer at-SECRET-1", context.Background()},
		{"static source", func(t *testing.T, b http.RoundTripper) http.RoundTripper {
			return &Transport{Source: static, Base: b}
		}, "Bearer " + testAccess, context.Background()},
		{"APIKeyTransport", func(t *testing.T, b http.RoundTripper) http.RoundTripper {
			return &APIKeyTransport{Key: "key-SECRET", Base: b}
		}, "API-Key key-SECRET", context.Background()},
		{"Grants", func(t *testing.T, b http.RoundTripper) http.RoundTripper {
			g, _, _, _, _ := newGrants(t, 1, time.Hour)
			return g.Transport(b)
		}, "Bearer at-SECRET-ws0-0", WithGrant(context.Background(), "ws0")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// A real server: what went out on the wire.
			var mu sync.Mutex // guards got
			var got []string
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				got = r.Header.Values("Authorization")
				mu.Unlock()
			}))
			defer srv.Close()
			rt := tc.rt(t, srv.Client().Transport)
			req, _ := http.NewRequestWithContext(tc.ctx, "GET", srv.URL+"/public/v1/documents", nil)
			req.Header["authorization"] = []string{"Basic their-own"}
			req.Header["AUTHORIZATION"] = []string{"Bearer stale"}
			req.Header["Authorization"] = []string{"Bearer canonical"}
			req.Header["Authorizations"] = []string{"kept"}
			before := req.Header.Clone()
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 || got[0] != tc.want {
				t.Errorf("Authorization sent: %q, want only %q", got, tc.want)
			}
			if len(req.Header) != len(before) || req.Header["authorization"][0] != "Basic their-own" || req.Header.Get("Authorization") != "Bearer canonical" {
				t.Errorf("the caller's header was modified: %v", req.Header)
			}
			srv.Client().CloseIdleConnections()
		})
	}
}
