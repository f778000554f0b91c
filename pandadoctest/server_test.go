package pandadoctest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const wantUnauthorized = `{"type":"authentication_error","detail":"Authentication credentials were not provided."}`

// newServer starts a server that the test closes when it ends.
func newServer(t *testing.T, opts ...pandadoctest.Option) *pandadoctest.Server {
	t.Helper()
	srv := pandadoctest.NewServer(opts...)
	t.Cleanup(srv.Close)
	return srv
}

// tokenPost posts form to the token endpoint with srv's client.
func tokenPost(ctx context.Context, srv *pandadoctest.Server, form url.Values) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/oauth2/access_token", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return srv.Client().Do(req)
}

// grantForm returns a form for grantType with the default credentials
// and the given extra parameters, as name, value pairs.
func grantForm(grantType string, kv ...string) url.Values {
	v := url.Values{
		"grant_type":    {grantType},
		"client_id":     {pandadoctest.DefaultClientID},
		"client_secret": {pandadoctest.DefaultClientSecret},
	}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

// tokenJSON is the token endpoint's success answer.
type tokenJSON struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope"`
	RefreshToken string `json:"refresh_token"`
}

// errorJSON is the token endpoint's RFC 6749 error answer.
type errorJSON struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// readAll reads and closes resp's body.
func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

// grant posts form and decodes a successful answer.
func grant(t *testing.T, srv *pandadoctest.Server, form url.Values) tokenJSON {
	t.Helper()
	resp, err := tokenPost(context.Background(), srv, form)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token endpoint: %d %s", resp.StatusCode, body)
	}
	var tok tokenJSON
	if err := json.Unmarshal([]byte(body), &tok); err != nil {
		t.Fatalf("token body %q: %v", body, err)
	}
	return tok
}

// grantError posts form and decodes an error answer with wantStatus.
func grantError(t *testing.T, srv *pandadoctest.Server, form url.Values, wantStatus int) errorJSON {
	t.Helper()
	resp, err := tokenPost(context.Background(), srv, form)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != wantStatus {
		t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, wantStatus, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var e errorJSON
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e
}

// apiGet requests GET /public/v1/documents with the given Authorization
// header ("" for none) and returns the status and body.
func apiGet(t *testing.T, srv *pandadoctest.Server, authorization string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/public/v1/documents", nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, readAll(t, resp), resp.Header
}

// noRedirects returns srv's client that does not follow redirects.
func noRedirects(srv *pandadoctest.Server) *http.Client {
	c := srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

func TestAuthorize(t *testing.T) {
	t.Parallel()
	valid := func() url.Values {
		return url.Values{
			"client_id":     {pandadoctest.DefaultClientID},
			"redirect_uri":  {pandadoctest.DefaultRedirectURL},
			"response_type": {"code"},
			"scope":         {"read+write"},
			"state":         {"xyz 123"},
		}
	}
	tests := []struct {
		name       string
		deny       bool
		edit       func(url.Values)
		wantStatus int
		wantQuery  []string // keys of the redirect's query
	}{
		{name: "approve", edit: func(url.Values) {}, wantStatus: 302, wantQuery: []string{"code", "state"}},
		{name: "approve without state", edit: func(v url.Values) { v.Del("state") }, wantStatus: 302, wantQuery: []string{"code"}},
		{name: "deny", deny: true, edit: func(url.Values) {}, wantStatus: 302, wantQuery: []string{"error", "state"}},
		{name: "wrong client_id", edit: func(v url.Values) { v.Set("client_id", "other") }, wantStatus: 400},
		{name: "missing client_id", edit: func(v url.Values) { v.Del("client_id") }, wantStatus: 400},
		{name: "wrong redirect_uri", edit: func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:8765/other") }, wantStatus: 400},
		{name: "missing redirect_uri", edit: func(v url.Values) { v.Del("redirect_uri") }, wantStatus: 400},
		{name: "response_type token", edit: func(v url.Values) { v.Set("response_type", "token") }, wantStatus: 400},
		{name: "missing response_type", edit: func(v url.Values) { v.Del("response_type") }, wantStatus: 400},
		{name: "denied but invalid", deny: true, edit: func(v url.Values) { v.Set("redirect_uri", "http://evil.example/") }, wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t)
			srv.SetDenyConsent(tt.deny)
			q := valid()
			tt.edit(q)
			resp, err := noRedirects(srv).Get(srv.URL + "/oauth2/authorize?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantStatus != http.StatusFound {
				if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || body == "" {
					t.Errorf("want a plain-text message, got %q: %q", resp.Header.Get("Content-Type"), body)
				}
				return
			}
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			if got := loc.Scheme + "://" + loc.Host + loc.Path; got != pandadoctest.DefaultRedirectURL {
				t.Errorf("redirected to %q, want %q", got, pandadoctest.DefaultRedirectURL)
			}
			got := slices.Sorted(func(yield func(string) bool) {
				for k := range loc.Query() {
					if !yield(k) {
						return
					}
				}
			})
			if !slices.Equal(got, tt.wantQuery) {
				t.Errorf("redirect query keys = %q, want %q", got, tt.wantQuery)
			}
			if q.Has("state") && loc.Query().Get("state") != "xyz 123" {
				t.Errorf("state = %q, want it passed through", loc.Query().Get("state"))
			}
			if tt.deny && loc.Query().Get("error") != "access_denied" {
				t.Errorf("error = %q, want access_denied", loc.Query().Get("error"))
			}
			if code := loc.Query().Get("code"); code != "" {
				tok := grant(t, srv, grantForm("authorization_code", "code", code, "redirect_uri", pandadoctest.DefaultRedirectURL))
				if tok.AccessToken == "" || tok.RefreshToken == "" {
					t.Errorf("exchange answered %+v", tok)
				}
			}
		})
	}
}

func TestWithDenyConsent(t *testing.T) {
	t.Parallel()
	srv := newServer(t, pandadoctest.WithDenyConsent(), pandadoctest.WithRedirectURL("https://app.test/cb?x=1"), pandadoctest.WithClient("id", "secret"))
	q := url.Values{"client_id": {"id"}, "redirect_uri": {"https://app.test/cb?x=1"}, "response_type": {"code"}, "state": {"s"}}
	resp, err := noRedirects(srv).Get(srv.URL + "/oauth2/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got, want := resp.Header.Get("Location"), "https://app.test/cb?error=access_denied&state=s&x=1"; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
	srv.SetDenyConsent(false)
	resp, err = noRedirects(srv).Get(srv.URL + "/oauth2/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if !strings.Contains(resp.Header.Get("Location"), "code=") {
		t.Errorf("Location = %q, want a code once consent is granted", resp.Header.Get("Location"))
	}
}

func TestExchange(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	code := srv.IssueCode()

	resp, err := tokenPost(context.Background(), srv, grantForm("authorization_code", "code", code))
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d: %s", resp.StatusCode, body)
	}
	for h, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range raw {
			if !yield(k) {
				return
			}
		}
	})
	if want := []string{"access_token", "expires_in", "refresh_token", "scope", "token_type"}; !slices.Equal(keys, want) {
		t.Errorf("token keys = %q, want %q", keys, want)
	}
	if raw["token_type"] != "Bearer" || raw["expires_in"] != float64(31535999) || raw["scope"] != "read+write" {
		t.Errorf("token = %s", body)
	}
	if status, _, _ := apiGet(t, srv, "Bearer "+raw["access_token"].(string)); status != http.StatusOK {
		t.Errorf("API with the exchanged token: %d", status)
	}

	// A code is single-use.
	if e := grantError(t, srv, grantForm("authorization_code", "code", code), 400); e.Error != "invalid_grant" {
		t.Errorf("second use: error = %q, want invalid_grant", e.Error)
	}
	// A redirect_uri that is sent must match, and the attempt spends the code.
	code = srv.IssueCode()
	if e := grantError(t, srv, grantForm("authorization_code", "code", code, "redirect_uri", "http://127.0.0.1:1/x"), 400); e.Error != "invalid_grant" {
		t.Errorf("wrong redirect_uri: error = %q, want invalid_grant", e.Error)
	}
	if e := grantError(t, srv, grantForm("authorization_code", "code", code), 400); e.Error != "invalid_grant" {
		t.Errorf("after a failed use: error = %q, want invalid_grant", e.Error)
	}
	if got := srv.TokenRequests("authorization_code"); got != 4 {
		t.Errorf("TokenRequests(authorization_code) = %d, want 4", got)
	}
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	for _, rotation := range []bool{false, true} {
		t.Run(fmt.Sprintf("rotation=%v", rotation), func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, pandadoctest.WithRotation(rotation), pandadoctest.WithExpiresIn(3600))
			first := srv.IssueToken()
			rt := first.RefreshToken

			for i := range 3 {
				tok := grant(t, srv, grantForm("refresh_token", "refresh_token", rt))
				if tok.ExpiresIn != 3600 {
					t.Errorf("expires_in = %d, want 3600", tok.ExpiresIn)
				}
				if tok.AccessToken == first.AccessToken {
					t.Error("refresh answered the old access token")
				}
				if rotation == (tok.RefreshToken == rt) {
					t.Errorf("refresh %d: refresh token %q after %q with rotation %v", i, tok.RefreshToken, rt, rotation)
				}
				if rotation {
					e := grantError(t, srv, grantForm("refresh_token", "refresh_token", rt), 400)
					if e.Error != "invalid_grant" {
						t.Errorf("old refresh token: error = %q, want invalid_grant", e.Error)
					}
					if strings.Contains(e.Description, rt) {
						t.Error("error description echoes the refresh token")
					}
				}
				rt = tok.RefreshToken
				if got := srv.RefreshTokens(); !slices.Equal(got, []string{rt}) {
					t.Errorf("RefreshTokens() = %q, want [%q]", got, rt)
				}
			}
			// The first access token still works: refreshing does not revoke it.
			if status, _, _ := apiGet(t, srv, "Bearer "+first.AccessToken); status != http.StatusOK {
				t.Errorf("first access token after refreshes: %d", status)
			}
			want := 3
			if rotation {
				want = 6
			}
			if got := srv.TokenRequests("refresh_token"); got != want {
				t.Errorf("TokenRequests(refresh_token) = %d, want %d", got, want)
			}
		})
	}
}

func TestRefreshTokensOrder(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	var want []string
	for range 5 {
		want = append(want, srv.IssueToken().RefreshToken)
	}
	srv.Revoke(want[2])
	want = slices.Delete(want, 2, 3)
	if got := srv.RefreshTokens(); !slices.Equal(got, want) {
		t.Errorf("RefreshTokens() = %q, want %q", got, want)
	}
	if e := grantError(t, srv, grantForm("refresh_token", "refresh_token", "nope"), 400); e.Error != "invalid_grant" {
		t.Errorf("error = %q, want invalid_grant", e.Error)
	}
}

func TestTokenErrors(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	rt := srv.IssueToken().RefreshToken
	const wrongSecret = "wrong-secret-value-1234"

	tests := []struct {
		name        string
		form        url.Values
		contentType string
		basic       bool
		wantStatus  int
		wantError   string
	}{
		{"wrong secret", grantForm("refresh_token", "refresh_token", rt, "client_secret", wrongSecret), "", false, 401, "invalid_client"},
		{"wrong client id", grantForm("refresh_token", "refresh_token", rt, "client_id", "someone-else"), "", false, 401, "invalid_client"},
		{"missing secret", grantForm("refresh_token", "refresh_token", rt, "client_secret", ""), "", false, 401, "invalid_client"},
		{"credentials in header only", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, "", true, 401, "invalid_client"},
		{"client_credentials", grantForm("client_credentials"), "", false, 400, "unsupported_grant_type"},
		{"password", grantForm("password", "username", "u", "password", wrongSecret), "", false, 400, "unsupported_grant_type"},
		{"missing grant_type", grantForm(""), "", false, 400, "invalid_request"},
		{"missing code", grantForm("authorization_code"), "", false, 400, "invalid_request"},
		{"unknown code", grantForm("authorization_code", "code", "deadbeef"), "", false, 400, "invalid_grant"},
		{"missing refresh_token", grantForm("refresh_token"), "", false, 400, "invalid_request"},
		{"repeated parameter", func() url.Values {
			v := grantForm("refresh_token", "refresh_token", rt)
			v.Add("refresh_token", rt)
			return v
		}(), "", false, 400, "invalid_request"},
		{"JSON body", grantForm("refresh_token", "refresh_token", rt), "application/json", false, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/oauth2/access_token", strings.NewReader(tt.form.Encode()))
			if err != nil {
				t.Fatal(err)
			}
			ct := tt.contentType
			if ct == "" {
				ct = "application/x-www-form-urlencoded"
			}
			req.Header.Set("Content-Type", ct)
			if tt.basic {
				req.SetBasicAuth(pandadoctest.DefaultClientID, pandadoctest.DefaultClientSecret)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			var e errorJSON
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if e.Error != tt.wantError || e.Description == "" {
				t.Errorf("body = %s, want error %q with a description", body, tt.wantError)
			}
			for _, secret := range []string{rt, wrongSecret, pandadoctest.DefaultClientSecret} {
				if strings.Contains(body, secret) {
					t.Errorf("body %s echoes a secret", body)
				}
			}
		})
	}
	t.Run("GET", func(t *testing.T) {
		t.Parallel()
		resp, err := srv.Client().Get(srv.URL + "/oauth2/access_token")
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("status = %d, want 405", resp.StatusCode)
		}
	})
}

func TestAPIAuthentication(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	clock := func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return now
	}
	srv := newServer(t, pandadoctest.WithAPIKey("key-123"), pandadoctest.WithClock(clock), pandadoctest.WithExpiresIn(60))

	srv.IssueToken() // a token that ExpireAll below expires
	revoked := srv.IssueToken()
	srv.Revoke(revoked.AccessToken)
	expired := srv.IssueToken()
	srv.ExpireAll()
	afterExpireAll := srv.IssueToken()
	// ExpireAll spared no access token: the one issued after it works.
	current := afterExpireAll

	// A refresh token outlives ExpireAll.
	refreshed := grant(t, srv, grantForm("refresh_token", "refresh_token", expired.RefreshToken))

	tests := []struct {
		name          string
		authorization string
		want          int
	}{
		{"current token", "Bearer " + current.AccessToken, 200},
		{"lower-case scheme", "bearer " + current.AccessToken, 200},
		{"refreshed after ExpireAll", "Bearer " + refreshed.AccessToken, 200},
		{"API key", "API-Key key-123", 200},
		{"wrong API key", "API-Key key-124", 401},
		{"access token as API key", "API-Key " + current.AccessToken, 401},
		{"API key as bearer", "Bearer key-123", 401},
		{"revoked", "Bearer " + revoked.AccessToken, 401},
		{"expired by ExpireAll", "Bearer " + expired.AccessToken, 401},
		{"refresh token", "Bearer " + current.RefreshToken, 401},
		{"missing", "", 401},
		{"scheme only", "Bearer", 401},
		{"basic", "Basic " + current.AccessToken, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, h := apiGet(t, srv, tt.authorization)
			if status != tt.want {
				t.Fatalf("status = %d, want %d (body %s)", status, tt.want, body)
			}
			if h.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type = %q", h.Get("Content-Type"))
			}
			if status == 401 && body != wantUnauthorized {
				t.Errorf("body = %s, want %s", body, wantUnauthorized)
			}
			if status == 200 && body != `{"results":[]}` {
				t.Errorf("body = %s", body)
			}
		})
	}

	// Time passing expires tokens too.
	clockMu.Lock()
	now = now.Add(61 * time.Second)
	clockMu.Unlock()
	if status, _, _ := apiGet(t, srv, "Bearer "+current.AccessToken); status != 401 {
		t.Errorf("token past its lifetime: status = %d, want 401", status)
	}
	if got, want := srv.APIRequests(200), 4; got != want {
		t.Errorf("APIRequests(200) = %d, want %d", got, want)
	}
	if got, want := srv.APIRequests(401), 10; got != want {
		t.Errorf("APIRequests(401) = %d, want %d", got, want)
	}
	if got, want := srv.TotalAPIRequests(), 14; got != want {
		t.Errorf("TotalAPIRequests() = %d, want %d", got, want)
	}
}

func TestNoAPIKeyByDefault(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	for _, h := range []string{"API-Key ", "API-Key  ", "API-Key"} {
		if status, body, _ := apiGet(t, srv, h); status != 401 || body != wantUnauthorized {
			t.Errorf("%q: %d %s", h, status, body)
		}
	}
}

func TestDocuments(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	tok := srv.IssueToken()

	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, readAll(t, resp)
	}

	status, body := do(http.MethodPost, "/public/v1/documents", `{"name":"Contract A","recipients":[]}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	var doc struct{ ID, Name, Status string }
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Name != "Contract A" || doc.Status != "document.uploaded" || len(doc.ID) != 22 {
		t.Errorf("created %s", body)
	}
	status, body = do(http.MethodGet, "/public/v1/documents", "")
	var list struct {
		Results []struct{ ID, Name string }
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil || status != 200 {
		t.Fatalf("list: %d %s %v", status, body, err)
	}
	if len(list.Results) != 1 || list.Results[0].ID != doc.ID || list.Results[0].Name != "Contract A" {
		t.Errorf("list = %s", body)
	}
	if status, body = do(http.MethodPost, "/public/v1/documents", `{"name":`); status != 400 || !strings.Contains(body, `"type":"request_error"`) {
		t.Errorf("invalid JSON: %d %s", status, body)
	}
	if status, _ = do(http.MethodDelete, "/public/v1/documents", ""); status != 405 {
		t.Errorf("DELETE: %d, want 405", status)
	}
	if status, _ = do(http.MethodGet, "/public/v1/no-such-route", ""); status != 404 {
		t.Errorf("unknown route: %d, want 404", status)
	}
	for status, want := range map[int]int{201: 1, 200: 1, 400: 1, 405: 1, 404: 1} {
		if got := srv.APIRequests(status); got != want {
			t.Errorf("APIRequests(%d) = %d, want %d", status, got, want)
		}
	}
}

// TestAPIReadsBody checks that a rejected POST has its body read, so that
// a client retrying it must supply a fresh one.
func TestAPIReadsBody(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	body := &countingReader{r: strings.NewReader(strings.Repeat("x", 100<<10))}
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/public/v1/documents", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 100 << 10
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); resp.StatusCode != 401 || got != wantUnauthorized {
		t.Errorf("%d %s", resp.StatusCode, got)
	}
	if got := body.count(); got != 100<<10 {
		t.Errorf("server read %d bytes of the body, want all %d", got, 100<<10)
	}
}

type countingReader struct {
	mu sync.Mutex // guards n
	r  io.Reader
	n  int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.mu.Lock()
	c.n += n
	c.mu.Unlock()
	return n, err
}

func (c *countingReader) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func TestFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault pandadoctest.Fault
		// giveUp makes the client give up once its request has
		// arrived.
		giveUp bool
		check  func(t *testing.T, resp *http.Response, err error, elapsed time.Duration)
	}{
		{"status", pandadoctest.Status(503), false, func(t *testing.T, resp *http.Response, err error, _ time.Duration) {
			wantResponse(t, resp, err, 503, "text/plain; charset=utf-8", "Service Unavailable\n")
		}},
		{"retry after", pandadoctest.RetryAfter(429, "1"), false, func(t *testing.T, resp *http.Response, err error, _ time.Duration) {
			wantResponse(t, resp, err, 429, "text/plain; charset=utf-8", "Too Many Requests\n")
			if got := resp.Header.Get("Retry-After"); got != "1" {
				t.Errorf("Retry-After = %q, want 1", got)
			}
		}},
		{"body", pandadoctest.Body(400, "application/json", `{"error":"invalid_grant"}`), false, func(t *testing.T, resp *http.Response, err error, _ time.Duration) {
			wantResponse(t, resp, err, 400, "application/json", `{"error":"invalid_grant"}`)
		}},
		{"zero respond", pandadoctest.Fault{Kind: pandadoctest.KindRespond}, false, func(t *testing.T, resp *http.Response, err error, _ time.Duration) {
			wantResponse(t, resp, err, 500, "text/plain; charset=utf-8", "")
		}},
		{"HTML", pandadoctest.HTMLPage(502), false, func(t *testing.T, resp *http.Response, err error, _ time.Duration) {
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			if resp.StatusCode != 502 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" ||
				!strings.Contains(body, "<html>") || !strings.Contains(body, "502 Bad Gateway") {
				t.Errorf("%d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
		}},
		{"truncated", pandadoctest.Truncated(), false, func(t *testing.T, resp *http.Response, err error, _ time.Duration) {
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			var tok tokenJSON
			jerr := json.Unmarshal([]byte(body), &tok)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" ||
				!strings.HasPrefix(body, `{"access_token":"`) || jerr == nil {
				t.Errorf("%d %q %q (JSON error %v)", resp.StatusCode, resp.Header.Get("Content-Type"), body, jerr)
			}
		}},
		{"oversized", pandadoctest.Oversized(3 << 20), false, func(t *testing.T, resp *http.Response, err error, _ time.Duration) {
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			var v map[string]any
			if resp.StatusCode != 200 || len(body) != 3<<20 || json.Unmarshal([]byte(body), &v) != nil || len(v) != 0 {
				t.Errorf("%d, %d bytes", resp.StatusCode, len(body))
			}
		}},
		{"oversized default, read in part", pandadoctest.Oversized(0), false, func(t *testing.T, resp *http.Response, err error, _ time.Duration) {
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.ContentLength != 10<<20 {
				t.Errorf("Content-Length = %d, want 10 MiB", resp.ContentLength)
			}
			n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			if n != 1<<20 || err != nil {
				t.Errorf("read %d bytes: %v", n, err)
			}
		}},
		{"reset", pandadoctest.Reset(), false, func(t *testing.T, resp *http.Response, err error, _ time.Duration) {
			if err == nil {
				readAll(t, resp)
				t.Fatalf("got %d, want a connection error", resp.StatusCode)
			}
		}},
		{"hang", pandadoctest.Hang(), true, func(t *testing.T, resp *http.Response, err error, _ time.Duration) {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want the client's cancellation", err)
			}
		}},
		{"delay then status", pandadoctest.Status(500).WithDelay(50 * time.Millisecond), false, func(t *testing.T, resp *http.Response, err error, elapsed time.Duration) {
			wantResponse(t, resp, err, 500, "text/plain; charset=utf-8", "Internal Server Error\n")
			if elapsed < 50*time.Millisecond {
				t.Errorf("answered after %v, want at least 50ms", elapsed)
			}
		}},
		{"delay longer than the client waits", pandadoctest.Success(time.Hour), true, func(t *testing.T, resp *http.Response, err error, _ time.Duration) {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want the client's cancellation", err)
			}
		}},
		{"success", pandadoctest.Success(50 * time.Millisecond), false, func(t *testing.T, resp *http.Response, err error, elapsed time.Duration) {
			if err != nil {
				t.Fatal(err)
			}
			if body := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(body, `"access_token"`) {
				t.Errorf("%d %s", resp.StatusCode, body)
			}
			if elapsed < 50*time.Millisecond {
				t.Errorf("answered after %v, want at least 50ms", elapsed)
			}
		}},
	}
	for _, tls := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/tls=%v", tt.name, tls), func(t *testing.T) {
				t.Parallel()
				var opts []pandadoctest.Option
				if tls {
					opts = append(opts, pandadoctest.WithTLS())
				}
				srv := newServer(t, append(opts, pandadoctest.WithRotation(true))...)
				rt := srv.IssueToken().RefreshToken
				srv.FailNext(tt.fault)

				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if tt.giveUp {
					go func() {
						if srv.WaitTokenRequests(ctx, 1) == nil {
							cancel()
						}
					}()
				}
				start := time.Now()
				resp, err := tokenPost(ctx, srv, grantForm("refresh_token", "refresh_token", rt))
				tt.check(t, resp, err, time.Since(start))

				if got := srv.PendingFaults(); got != 0 {
					t.Errorf("PendingFaults() = %d, want 0", got)
				}
				// The next request is answered normally. Only a success
				// that was answered carried out the grant; otherwise the
				// refresh token still works.
				if tt.name != "success" {
					grant(t, srv, grantForm("refresh_token", "refresh_token", rt))
				} else {
					grantError(t, srv, grantForm("refresh_token", "refresh_token", rt), 400)
				}
				if got := srv.TokenRequests("refresh_token"); got != 2 {
					t.Errorf("TokenRequests(refresh_token) = %d, want 2", got)
				}
			})
		}
	}
}

func wantResponse(t *testing.T, resp *http.Response, err error, status int, contentType, body string) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, resp)
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != contentType || got != body {
		t.Errorf("got %d %q %q, want %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), got, status, contentType, body)
	}
}

func TestFaultAfterGrant(t *testing.T) {
	t.Parallel()
	srv := newServer(t, pandadoctest.WithRotation(true))
	rt := srv.IssueToken().RefreshToken
	lost := pandadoctest.Status(502)
	lost.AfterGrant = true
	srv.FailNext(lost)

	resp, err := tokenPost(context.Background(), srv, grantForm("refresh_token", "refresh_token", rt))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != 502 {
		t.Fatalf("status = %d, want 502", resp.StatusCode)
	}
	// The grant went through: the old refresh token is spent and a new
	// one, which the client never saw, is the only live one.
	if e := grantError(t, srv, grantForm("refresh_token", "refresh_token", rt), 400); e.Error != "invalid_grant" {
		t.Errorf("error = %q, want invalid_grant", e.Error)
	}
	if got := srv.RefreshTokens(); len(got) != 1 || got[0] == rt {
		t.Errorf("RefreshTokens() = %q", got)
	}
}

func TestFaultSequence(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	rt := srv.IssueToken().RefreshToken
	form := grantForm("refresh_token", "refresh_token", rt)
	srv.FailNext(pandadoctest.Status(503), pandadoctest.RetryAfter(429, "2"))
	srv.FailNext(pandadoctest.HTMLPage(502))
	if got := srv.PendingFaults(); got != 3 {
		t.Fatalf("PendingFaults() = %d, want 3", got)
	}
	for _, want := range []int{503, 429, 502, 200, 200} {
		resp, err := tokenPost(context.Background(), srv, form)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if resp.StatusCode != want {
			t.Errorf("status = %d, want %d", resp.StatusCode, want)
		}
	}

	srv.FailAlways(pandadoctest.Status(500))
	srv.FailNext(pandadoctest.Status(504))
	for _, want := range []int{504, 500, 500} {
		resp, err := tokenPost(context.Background(), srv, form)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if resp.StatusCode != want {
			t.Errorf("status = %d, want %d", resp.StatusCode, want)
		}
	}
	srv.FailNext(pandadoctest.Status(503))
	srv.ClearFaults()
	grant(t, srv, form)

	if got := srv.TokenRequests("refresh_token"); got != 9 {
		t.Errorf("TokenRequests(refresh_token) = %d, want 9", got)
	}
	if got := srv.TotalTokenRequests(); got != 9 {
		t.Errorf("TotalTokenRequests() = %d, want 9", got)
	}
}

func TestFaultsAnyGrant(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.FailNext(pandadoctest.Status(503), pandadoctest.Status(503))
	resp, err := srv.Client().Post(srv.URL+"/oauth2/access_token", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	code := srv.IssueCode()
	resp, err = tokenPost(context.Background(), srv, grantForm("authorization_code", "code", code))
	if err != nil {
		t.Fatal(err)
	}
	if readAll(t, resp); resp.StatusCode != 503 {
		t.Fatalf("status = %d, want 503", resp.StatusCode)
	}
	// The faulted exchange did not spend the code.
	grant(t, srv, grantForm("authorization_code", "code", code))
	for grantType, want := range map[string]int{"": 1, "authorization_code": 2, "refresh_token": 0} {
		if got := srv.TokenRequests(grantType); got != want {
			t.Errorf("TokenRequests(%q) = %d, want %d", grantType, got, want)
		}
	}
}

func TestCloseReleasesFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault pandadoctest.Fault
		// unread leaves the response body unread and open.
		unread bool
	}{
		{"hang", pandadoctest.Hang(), false},
		{"delay", pandadoctest.Success(time.Hour), false},
		{"unread oversized body", pandadoctest.Oversized(64 << 20), true},
	}
	for _, tls := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/tls=%v", tt.name, tls), func(t *testing.T) {
				t.Parallel()
				opts := []pandadoctest.Option{}
				if tls {
					opts = append(opts, pandadoctest.WithTLS())
				}
				srv := pandadoctest.NewServer(opts...)
				srv.FailNext(tt.fault)
				rt := srv.IssueToken().RefreshToken

				errc := make(chan error, 1)
				closed := make(chan struct{})
				go func() {
					resp, err := tokenPost(context.Background(), srv, grantForm("refresh_token", "refresh_token", rt))
					if err == nil {
						defer resp.Body.Close()
						if tt.unread {
							// Hold the body, unread, until the server is closed.
							errc <- nil
							<-closed
							return
						}
						_, err = io.ReadAll(resp.Body)
					}
					errc <- err
				}()
				if tt.unread {
					if err := <-errc; err != nil {
						t.Fatal(err)
					}
				} else if err := srv.WaitTokenRequests(context.Background(), 1); err != nil {
					t.Fatal(err)
				}

				// Close returns once it has released the request. A
				// Close that waits for the client hangs here until the
				// watchdog fires, however long the machine takes.
				done := make(chan struct{})
				go func() {
					srv.Close()
					close(done)
				}()
				testutil.Recv(t, done, "Close with a request in flight")
				close(closed)
				if !tt.unread {
					if err := <-errc; err == nil {
						t.Error("the held request succeeded, want a connection error")
					}
				}
				srv.Close() // a second Close does nothing
			})
		}
	}
}

func TestIssueToken(t *testing.T) {
	t.Parallel()
	srv := newServer(t, pandadoctest.WithExpiresIn(120))
	seen := make(map[string]bool)
	for range 10 {
		before := time.Now()
		tok := srv.IssueToken()
		for _, v := range []string{tok.AccessToken, tok.RefreshToken} {
			if len(v) != 40 || seen[v] {
				t.Fatalf("token %q is not a fresh 40-character token", v)
			}
			seen[v] = true
		}
		if tok.TokenType != "Bearer" || tok.ExpiresIn != 120 || tok.Extra("scope") != "read+write" {
			t.Errorf("token = %+v", tok)
		}
		if tok.Expiry.Before(before.Add(120*time.Second)) || tok.Expiry.After(time.Now().Add(120*time.Second)) {
			t.Errorf("Expiry = %v, want about 120s from now", tok.Expiry)
		}
	}
	srv.SetExpiresIn(7)
	if tok := srv.IssueToken(); tok.ExpiresIn != 7 {
		t.Errorf("ExpiresIn after SetExpiresIn(7) = %d", tok.ExpiresIn)
	}
	srv.SetExpiresIn(0)
	if status, _, _ := apiGet(t, srv, "Bearer "+srv.IssueToken().AccessToken); status != 401 {
		t.Errorf("token with a lifetime of 0: status = %d, want 401", status)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	for _, tls := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tls), func(t *testing.T) {
			t.Parallel()
			opts := []pandadoctest.Option{pandadoctest.WithClient("cid", "csecret"), pandadoctest.WithRedirectURL("https://app.test/cb")}
			if tls {
				opts = append(opts, pandadoctest.WithTLS())
			}
			srv := newServer(t, opts...)
			if got := strings.HasPrefix(srv.URL, "https://"); got != tls {
				t.Errorf("URL = %q", srv.URL)
			}
			cfg := srv.Config()
			if cfg.ClientID != "cid" || cfg.ClientSecret != "csecret" || cfg.RedirectURL != "https://app.test/cb" ||
				cfg.TokenURL != srv.URL+"/oauth2/access_token" || cfg.AuthURL != srv.URL+"/oauth2/authorize" {
				t.Errorf("Config() = %v", cfg)
			}
			if cfg.HTTPClient == nil || cfg.HTTPClient.Timeout <= 0 {
				t.Fatalf("HTTPClient = %+v, want one with a timeout", cfg.HTTPClient)
			}
			resp, err := cfg.HTTPClient.PostForm(cfg.TokenURL, url.Values{
				"grant_type": {"authorization_code"}, "client_id": {"cid"}, "client_secret": {"csecret"}, "code": {srv.IssueCode()},
			})
			if err != nil {
				t.Fatal(err)
			}
			if body := readAll(t, resp); resp.StatusCode != 200 {
				t.Errorf("exchange through Config's client: %d %s", resp.StatusCode, body)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	srv := newServer(t, pandadoctest.WithRotation(false))
	tok := srv.IssueToken()
	const n = 20
	srv.FailNext(pandadoctest.Status(503), pandadoctest.Status(503))

	var wg sync.WaitGroup
	statuses := make(chan int, 2*n)
	for range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			resp, err := tokenPost(context.Background(), srv, grantForm("refresh_token", "refresh_token", tok.RefreshToken))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/public/v1/documents", nil)
			req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	// Knobs turned while requests are in flight.
	srv.SetExpiresIn(100)
	srv.SetDenyConsent(true)
	_ = srv.RefreshTokens()
	wg.Wait()
	close(statuses)

	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[503] != 2 || count[200] != n-2 {
		t.Errorf("token statuses = %v, want 2×503 and %d×200", count, n-2)
	}
	if got := srv.TokenRequests("refresh_token"); got != n {
		t.Errorf("TokenRequests(refresh_token) = %d, want %d", got, n)
	}
	if got := srv.APIRequests(200); got != n {
		t.Errorf("APIRequests(200) = %d, want %d", got, n)
	}
}

func TestFaultKindString(t *testing.T) {
	t.Parallel()
	for k, want := range map[pandadoctest.FaultKind]string{
		pandadoctest.KindSuccess:   "KindSuccess",
		pandadoctest.KindOversized: "KindOversized",
		pandadoctest.FaultKind(42): "FaultKind(42)",
	} {
		if got := k.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

// TestIssueTokenExpiredAtOnce: with a lifetime of 0 or less, IssueToken
// returns a token that has already expired by its Expiry, not one
// without an Expiry (which reads as valid until a 401): a client
// refreshes it before sending it.
func TestIssueTokenExpiredAtOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		srv  func(t *testing.T) *pandadoctest.Server
	}{
		{"WithExpiresIn(0)", func(t *testing.T) *pandadoctest.Server { return newServer(t, pandadoctest.WithExpiresIn(0)) }},
		{"WithExpiresIn(-60)", func(t *testing.T) *pandadoctest.Server { return newServer(t, pandadoctest.WithExpiresIn(-60)) }},
		{"SetExpiresIn(0)", func(t *testing.T) *pandadoctest.Server {
			srv := newServer(t)
			srv.SetExpiresIn(0)
			return srv
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := tc.srv(t)
			tok := srv.IssueToken()
			if tok.Expiry.IsZero() || tok.Expiry.After(time.Now()) || tok.Valid() {
				t.Fatalf("Expiry %v, Valid %v; want an Expiry that has passed", tok.Expiry, tok.Valid())
			}
			srv.SetExpiresIn(3600) // the refreshed token works
			resp, err := srv.Config().Client(tok).Get(srv.URL + "/public/v1/documents")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || srv.APIRequests(http.StatusUnauthorized) != 0 || srv.TokenRequests("refresh_token") != 1 {
				t.Errorf("status %d after %d 401s and %d refreshes; want 200, the token refreshed before it was sent",
					resp.StatusCode, srv.APIRequests(http.StatusUnauthorized), srv.TokenRequests("refresh_token"))
			}
		})
	}
}
