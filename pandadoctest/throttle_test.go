package pandadoctest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// testTime is a clock for the server that moves only when a test says.
type testTime struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newTestTime() *testTime { return &testTime{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *testTime) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testTime) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// call sends method path with the Authorization header auth and returns
// the status, the Retry-After header and the body.
func call(t *testing.T, srv *pandadoctest.Server, auth, method, path, contentType, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", auth)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), readAll(t, resp)
}

func throttledBody(wait string) string {
	return `{"type":"request_error","detail":"Request was throttled. Expected available in ` + wait + `."}`
}

// TestThrottle: the fake throttles as PandaDoc does: per user, per class,
// over a sliding window of what it accepted, with PandaDoc's 429 and no
// Retry-After; throttled requests are not counted against the limit,
// but they count in MaxInWindow.
func TestThrottle(t *testing.T) {
	t.Parallel()
	clk := newTestTime()
	srv := newServer(t, pandadoctest.WithClock(clk.Now), pandadoctest.WithRateLimits(pandadocauth.Limits{ListStatusDelete: 2, Details: 1}))
	a := "Bearer " + srv.IssueToken().AccessToken
	b := "Bearer " + srv.IssueToken().AccessToken
	list := func(auth string) (int, string, string) {
		return call(t, srv, auth, "GET", "/public/v1/documents", "", "")
	}
	steps := []struct {
		advance time.Duration
		auth    string
		status  int
		body    string // for 429s
	}{
		{auth: a, status: 200},
		{auth: a, status: 200},
		{auth: a, status: 429, body: throttledBody("60 seconds")},
		{auth: b, status: 200}, // another user: a log of its own
		{advance: 30 * time.Second, auth: a, status: 429, body: throttledBody("30 seconds")},
		{advance: 29 * time.Second, auth: a, status: 429, body: throttledBody("1 second")},
		{advance: time.Second, auth: a, status: 200}, // the first two left the window; the 429s never entered it
		{auth: a, status: 200},
		{auth: a, status: 429, body: throttledBody("60 seconds")},
	}
	for i, st := range steps {
		clk.Advance(st.advance)
		status, retryAfter, body := list(st.auth)
		if status != st.status || (st.body != "" && body != st.body) {
			t.Fatalf("step %d: %d %s, want %d %s", i, status, body, st.status, st.body)
		}
		if retryAfter != "" {
			t.Errorf("step %d: Retry-After %q; PandaDoc sends none", i, retryAfter)
		}
	}
	// Another class of user a: a limit of its own.
	status, _, body := call(t, srv, a, "POST", "/public/v1/documents", "application/json", `{"name":"d"}`)
	if status != 201 {
		t.Fatalf("create: %d %s", status, body)
	}
	if n := srv.MaxInWindow(pandadocauth.ClassListStatusDelete); n != 5 {
		t.Errorf("MaxInWindow = %d, want 5 (user a's arrivals from +0 to +59s)", n)
	}
	if n := srv.Throttled(pandadocauth.ClassListStatusDelete); n != 4 {
		t.Errorf("Throttled = %d, want 4", n)
	}
	if n := srv.ClassRequests(pandadocauth.ClassListStatusDelete); n != 9 {
		t.Errorf("ClassRequests = %d, want 9", n)
	}
	if n := srv.APIRequests(429); n != 4 {
		t.Errorf("APIRequests(429) = %d, want 4", n)
	}
}

// TestThrottleRetryAfter: asked, a throttled answer carries Retry-After.
func TestThrottleRetryAfter(t *testing.T) {
	t.Parallel()
	clk := newTestTime()
	srv := newServer(t, pandadoctest.WithClock(clk.Now), pandadoctest.WithRateLimits(pandadocauth.Limits{ListStatusDelete: 1}),
		pandadoctest.WithRateWindow(10*time.Second), pandadoctest.WithThrottleRetryAfter())
	auth := "Bearer " + srv.IssueToken().AccessToken
	call(t, srv, auth, "GET", "/public/v1/documents", "", "")
	clk.Advance(3 * time.Second)
	status, retryAfter, body := call(t, srv, auth, "GET", "/public/v1/documents", "", "")
	if status != 429 || retryAfter != "7" || body != throttledBody("7 seconds") {
		t.Errorf("got %d, Retry-After %q, %s", status, retryAfter, body)
	}
}

// TestThrottleUser: a user's log survives a refresh (with rotation), and
// the API key is a user of its own.
func TestThrottleUser(t *testing.T) {
	t.Parallel()
	clk := newTestTime()
	srv := newServer(t, pandadoctest.WithClock(clk.Now), pandadoctest.WithRotation(true), pandadoctest.WithAPIKey("key-1"),
		pandadoctest.WithRateLimits(pandadocauth.Limits{ListStatusDelete: 1}))
	tok := srv.IssueToken()
	if status, _, _ := call(t, srv, "Bearer "+tok.AccessToken, "GET", "/public/v1/documents", "", ""); status != 200 {
		t.Fatal(status)
	}
	refreshed, err := refreshToken(t, srv, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, _ := call(t, srv, "Bearer "+refreshed, "GET", "/public/v1/documents", "", ""); status != 429 {
		t.Errorf("the refreshed token of the same grant: %d, want 429", status)
	}
	if status, _, _ := call(t, srv, "API-Key key-1", "GET", "/public/v1/documents", "", ""); status != 200 {
		t.Errorf("the API key: %d, want 200", status)
	}
	if status, _, _ := call(t, srv, "API-Key key-1", "GET", "/public/v1/documents", "", ""); status != 429 {
		t.Errorf("the API key again: %d, want 429", status)
	}
}

// refreshToken refreshes with rt at the token endpoint and returns the
// new access token.
func refreshToken(t *testing.T, srv *pandadoctest.Server, rt string) (string, error) {
	t.Helper()
	resp, err := tokenPost(context.Background(), srv, grantForm("refresh_token", "refresh_token", rt))
	if err != nil {
		return "", err
	}
	body := readAll(t, resp)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(body), &tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("refresh: %d %s", resp.StatusCode, body)
	}
	return tok.AccessToken, nil
}

// TestThrottleRoutes: the fake serves a route of every class, and counts
// each request in its class, a create by its body.
func TestThrottleRoutes(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	auth := "Bearer " + srv.IssueToken().AccessToken
	status, _, body := call(t, srv, auth, "POST", "/public/v1/documents", "application/json", `{"name":"From a template","template_uuid":"tpl-1"}`)
	var doc struct{ ID, Name, Status string }
	if err := json.Unmarshal([]byte(body), &doc); status != 201 || err != nil {
		t.Fatalf("create from template: %d %s", status, body)
	}
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	fw, _ := mw.CreateFormFile("file", "a.pdf")
	fw.Write([]byte("%PDF-1.4"))
	mw.WriteField("data", `{"name":"Uploaded"}`)
	mw.Close()
	id := doc.ID
	tests := []struct {
		method, path, contentType, body string
		class                           pandadocauth.Class
		status                          int
		want                            string // in the body
	}{
		{"POST", "/public/v1/documents", "application/json", `{"name":"From a URL","url":"https://example.com/a.pdf"}`, pandadocauth.ClassCreateFromPDF, 201, `"name":"From a URL"`},
		{"POST", "/public/v1/documents?upload", mw.FormDataContentType(), form.String(), pandadocauth.ClassCreateFromPDF, 201, `"name":"Uploaded"`},
		{"GET", "/public/v1/documents/" + id, "", "", pandadocauth.ClassListStatusDelete, 200, `"status":"document.uploaded"`},
		{"GET", "/public/v1/documents/" + id + "/details", "", "", pandadocauth.ClassDetails, 200, `"recipients":[]`},
		{"POST", "/public/v1/documents/" + id + "/send", "application/json", `{"message":"hi"}`, pandadocauth.ClassSend, 200, `"status":"document.sent"`},
		{"POST", "/public/v1/documents/" + id + "/send", "application/json", `{"message":"hi"}`, pandadocauth.ClassSend, 409, `"request_error"`},
		{"GET", "/public/v1/documents/" + id + "/download", "", "", pandadocauth.ClassDownload, 200, "%PDF-1.4"},
		{"GET", "/public/v1/documents/" + id + "/download-protected", "", "", pandadocauth.ClassDownloadProtected, 200, "%PDF-1.4"},
		{"GET", "/public/v1/templates", "", "", pandadocauth.ClassListStatusDelete, 200, `"results":[]`},
		{"GET", "/public/v1/templates/tpl-1", "", "", pandadocauth.ClassListStatusDelete, 200, `"id":"tpl-1"`},
		{"GET", "/public/v1/templates/tpl-1/details", "", "", pandadocauth.ClassDetails, 200, `"id":"tpl-1"`},
		{"DELETE", "/public/v1/templates/tpl-1", "", "", pandadocauth.ClassListStatusDelete, 204, ""},
		{"GET", "/public/v1/content-library-items", "", "", pandadocauth.ClassListStatusDelete, 200, `"results":[]`},
		{"GET", "/public/v1/content-library-items/cli-1/details", "", "", pandadocauth.ClassDetails, 200, `"id":"cli-1"`},
		{"POST", "/public/v2/notary/notarization-requests", "application/json", `{}`, pandadocauth.ClassNotarization, 201, `"status":"sent"`},
		{"DELETE", "/public/v1/documents/" + id, "", "", pandadocauth.ClassListStatusDelete, 204, ""},
		{"GET", "/public/v1/documents/" + id, "", "", pandadocauth.ClassListStatusDelete, 404, `"not_found"`},
		{"GET", "/public/v1/contacts", "", "", pandadocauth.ClassOther, 404, `"not_found"`},
	}
	want := map[pandadocauth.Class]int{pandadocauth.ClassCreateFromTemplate: 1}
	for _, tt := range tests {
		status, _, body := call(t, srv, auth, tt.method, tt.path, tt.contentType, tt.body)
		if status != tt.status || !strings.Contains(body, tt.want) {
			t.Errorf("%s %s: %d %s, want %d with %s", tt.method, tt.path, status, body, tt.status, tt.want)
		}
		want[tt.class]++
	}
	for c := pandadocauth.ClassOther; c <= pandadocauth.ClassNotarization; c++ {
		if got := srv.ClassRequests(c); got != want[c] {
			t.Errorf("ClassRequests(%v) = %d, want %d", c, got, want[c])
		}
	}
}

// TestThrottleDefaults: a zero field of WithRateLimits is PandaDoc's
// default, a negative one no limit.
func TestThrottleDefaults(t *testing.T) {
	t.Parallel()
	srv := newServer(t, pandadoctest.WithRateLimits(pandadocauth.Limits{Details: -1}))
	auth := "Bearer " + srv.IssueToken().AccessToken
	status, _, body := call(t, srv, auth, "POST", "/public/v1/documents", "application/json", `{"name":"d"}`)
	var doc struct{ ID string }
	if err := json.Unmarshal([]byte(body), &doc); status != 201 || err != nil {
		t.Fatalf("create: %d %s", status, body)
	}
	for i := range pandadocauth.DefaultLimits.Download + 1 {
		status, _, _ := call(t, srv, auth, "GET", "/public/v1/documents/"+doc.ID+"/download", "", "")
		if want := map[bool]int{true: 429, false: 200}[i == pandadocauth.DefaultLimits.Download]; status != want {
			t.Fatalf("download %d: %d, want %d", i+1, status, want)
		}
	}
	for i := range pandadocauth.DefaultLimits.Details + 1 {
		if status, _, _ := call(t, srv, auth, "GET", "/public/v1/documents/"+doc.ID+"/details", "", ""); status != 200 {
			t.Fatalf("details %d: %d, want 200: no limit", i+1, status)
		}
	}
}

// TestThrottleSetRateLimits: limits change from the next request on.
func TestThrottleSetRateLimits(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	auth := "Bearer " + srv.IssueToken().AccessToken
	for range 3 {
		if status, _, _ := call(t, srv, auth, "GET", "/public/v1/documents", "", ""); status != 200 {
			t.Fatalf("without limits: %d", status)
		}
	}
	if n := srv.MaxInWindow(pandadocauth.ClassListStatusDelete); n != 3 {
		t.Errorf("MaxInWindow = %d, want 3: counted without limits too", n)
	}
	srv.SetRateLimits(pandadocauth.Limits{ListStatusDelete: 3})
	if status, _, _ := call(t, srv, auth, "GET", "/public/v1/documents", "", ""); status != 429 {
		t.Errorf("with a limit of 3: %d, want 429", status)
	}
}
