package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// loginSetup is a fake PandaDoc, whose application's redirect URI is
// on loopback, and the login arguments aimed at it. Login listens on a
// port that the system picks (port 0), which the fake accepts as any
// loopback port (RFC 8252 section 7.3), so no two tests race for a port.
type loginSetup struct {
	srv   *pandadoctest.Server
	store string
	args  []string
}

func newLoginSetup(t *testing.T, opts ...pandadoctest.Option) *loginSetup {
	t.Helper()
	srv := pandadoctest.NewServer(append([]pandadoctest.Option{pandadoctest.WithRotation(true)}, opts...)...)
	t.Cleanup(srv.Close)
	store := filepath.Join(t.TempDir(), "config", "token.json")
	return &loginSetup{
		srv:   srv,
		store: store,
		args:  []string{"login", "-redirect-url", "http://127.0.0.1:0/callback", "-store", store, "-base-url", srv.URL},
	}
}

// listening waits for a login's output to name where it listens, and
// returns the redirect URL, its port and the authorization URL.
func (ls *loginSetup) listening(t *testing.T, inv *invocation) (redirect string, port int, authURL string) {
	t.Helper()
	line := inv.stderr.WaitLine(t, "Waiting for PandaDoc to redirect to ")
	redirect, _, _ = strings.Cut(strings.TrimPrefix(line, "Waiting for PandaDoc to redirect to "), " ")
	u, err := url.Parse(redirect)
	if err != nil {
		t.Fatal(err)
	}
	port, err = strconv.Atoi(u.Port())
	if err != nil || port == 0 {
		t.Fatalf("login listens on %q", redirect)
	}
	return redirect, port, inv.stderr.WaitLine(t, ls.srv.URL+"/oauth2/authorize?")
}

// browser returns an HTTP client that plays the browser: it follows
// redirects, and its connections are closed when the test ends.
func browser(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testutil.Watchdog}
}

// get fetches u and returns the status and body.
func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestLogin(t *testing.T) {
	t.Parallel()
	ls := newLoginSetup(t)
	inv := newInvocation(t, nil, "")
	done := inv.start(append(ls.args, "-no-browser",
		"-client-id", pandadoctest.DefaultClientID, "-client-secret", pandadoctest.DefaultClientSecret)...)
	redirect, port, authURL := ls.listening(t, inv)

	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if got := q.Get("redirect_uri"); got != redirect {
		t.Errorf("redirect_uri = %q, want %q", got, redirect)
	}
	if len(q.Get("state")) < 32 {
		t.Errorf("state %q is too short", q.Get("state"))
	}
	// PKCE with S256: the fake refuses the exchange without the
	// verifier of this challenge.
	if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 {
		t.Errorf("code_challenge %q, method %q; want an S256 challenge", q.Get("code_challenge"), q.Get("code_challenge_method"))
	}

	b := browser(t)
	// Requests that are not PandaDoc's redirect do not end the login.
	if code, _ := get(t, b, fmt.Sprintf("http://127.0.0.1:%d/favicon.ico", port)); code != http.StatusNotFound {
		t.Errorf("GET /favicon.ico: %d, want 404", code)
	}
	if code, _ := get(t, b, redirect); code != http.StatusBadRequest {
		t.Errorf("GET %s without parameters: %d, want 400", redirect, code)
	}

	code, page := get(t, b, authURL)
	if code != http.StatusOK || !strings.Contains(page, "Logged in to PandaDoc") {
		t.Errorf("callback page: %d\n%s", code, page)
	}
	if status := wait(t, done); status != exitOK {
		t.Fatalf("login exit status %d; stderr:\n%s", status, inv.stderr)
	}
	if !strings.Contains(inv.stderr.String(), "Logged in. The token is saved in "+ls.store) {
		t.Errorf("stderr:\n%s", inv.stderr)
	}
	// The line to paste into a program names the same file.
	if want := "&pandadocauth.FileStore{Path: " + strconv.Quote(ls.store) + "}"; !strings.Contains(inv.stderr.String(), want) {
		t.Errorf("stderr lacks %s:\n%s", want, inv.stderr)
	}

	tok := loadToken(t, ls.store)
	if refresh := ls.srv.RefreshTokens(); len(refresh) != 1 || refresh[0] != tok.RefreshToken {
		t.Errorf("stored refresh token is not the server's only live one")
	}
	// The expiry is printed with its time zone.
	_, printed, _ := strings.Cut(inv.stderr.String(), "; the access token expires ")
	printed, _, _ = strings.Cut(printed, ".\n")
	if expiry, err := time.Parse(expiryLayout, printed); err != nil || !expiry.Equal(tok.Expiry.Truncate(time.Second)) {
		t.Errorf("printed expiry %q (%v), want %v with its zone", printed, err, tok.Expiry)
	}
	if !strings.Contains(printed, "UTC+") && !strings.Contains(printed, "UTC-") {
		t.Errorf("printed expiry %q has no UTC offset", printed)
	}
	fi, err := os.Stat(ls.store)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("token file mode %v, want 0600", mode)
	}
	if n := ls.srv.TokenRequests("authorization_code"); n != 1 {
		t.Errorf("%d authorization_code grants, want 1", n)
	}

	// The stored token works.
	code, stdout, stderr := runCmd(t, nil, "api", "-store", ls.store, "-base-url", ls.srv.URL, "GET", "/public/v1/documents")
	if code != exitOK {
		t.Errorf("api after login: %d\n%s%s", code, stdout, stderr)
	}
	assertPortFree(t, port)
}

func TestLoginOpensBrowser(t *testing.T) {
	t.Parallel()
	ls := newLoginSetup(t)
	inv := newInvocation(t, credentials(), "")
	b := browser(t)
	type visit struct {
		code int
		page string
	}
	visited := make(chan visit, 1)
	inv.c.openBrowser = func(u string) {
		go func() {
			code, page := get(t, b, u)
			visited <- visit{code, page}
		}()
	}
	if status := wait(t, inv.start(ls.args...)); status != exitOK {
		t.Fatalf("login exit status %d; stderr:\n%s", status, inv.stderr)
	}
	v := testutil.Recv(t, visited, "the browser's visit")
	if v.code != http.StatusOK || !strings.Contains(v.page, "Logged in") {
		t.Errorf("callback page: %d\n%s", v.code, v.page)
	}
	loadToken(t, ls.store)
	_, port, _ := ls.listening(t, inv)
	assertPortFree(t, port)
}

func TestLoginFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts []pandadoctest.Option
		// visit plays the browser, given the authorization URL.
		visit    func(t *testing.T, redirect, authURL string) (code int, page string)
		wantErr  string
		wantPage string
		fault    bool // the token endpoint answers invalid_grant
	}{
		{
			name: "consent denied",
			opts: []pandadoctest.Option{pandadoctest.WithDenyConsent()},
			visit: func(t *testing.T, redirect, authURL string) (int, string) {
				return get(t, browser(t), authURL)
			},
			wantErr:  "consent denied",
			wantPage: "consent denied",
		},
		{
			name: "other error",
			visit: func(t *testing.T, redirect, authURL string) (int, string) {
				u, _ := url.Parse(authURL)
				state := u.Query().Get("state")
				return get(t, browser(t), redirect+"?error=server_error&error_description=down&state="+url.QueryEscape(state))
			},
			wantErr:  `PandaDoc answered "server_error" ("down")`,
			wantPage: "server_error",
		},
		{
			name: "exchange rejected",
			visit: func(t *testing.T, redirect, authURL string) (int, string) {
				return get(t, browser(t), authURL)
			},
			wantErr:  "exchanging the authorization code",
			wantPage: "Login failed",
			fault:    true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ls := newLoginSetup(t, tt.opts...)
			inv := newInvocation(t, credentials(), "")
			if tt.fault {
				ls.srv.FailNext(pandadoctest.Body(400, "application/json", `{"error":"invalid_grant"}`))
			}
			done := inv.start(append(ls.args, "-no-browser")...)
			redirect, port, authURL := ls.listening(t, inv)
			code, page := tt.visit(t, redirect, authURL)
			if code != http.StatusBadRequest || !strings.Contains(page, tt.wantPage) {
				t.Errorf("callback page: %d, want 400 with %q:\n%s", code, tt.wantPage, page)
			}
			if status := wait(t, done); status != exitFail {
				t.Errorf("exit status %d, want %d", status, exitFail)
			}
			if !strings.Contains(inv.stderr.String(), tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, inv.stderr)
			}
			if _, err := os.Stat(ls.store); !os.IsNotExist(err) {
				t.Errorf("token file exists after a failed login (%v)", err)
			}
			// The login accepted one redirect and stopped listening.
			assertPortFree(t, port)
		})
	}
}

func TestLoginTimeout(t *testing.T) {
	t.Parallel()
	ls := newLoginSetup(t)
	inv := newInvocation(t, credentials(), "")
	code := wait(t, inv.start(append(ls.args, "-no-browser", "-timeout", "100ms")...))
	if code != exitFail {
		t.Errorf("exit status %d, want %d", code, exitFail)
	}
	if !strings.Contains(inv.stderr.String(), "timed out after 100ms waiting for the browser") {
		t.Errorf("stderr:\n%s", inv.stderr)
	}
	_, port, _ := ls.listening(t, inv)
	assertPortFree(t, port)
}

func TestLoginPortBusy(t *testing.T) {
	t.Parallel()
	ls := newLoginSetup(t)
	inv := newInvocation(t, credentials(), "")
	first := inv.start(append(ls.args, "-no-browser")...)
	redirect, _, authURL := ls.listening(t, inv)

	code, _, stderr := runCmd(t, credentials(), "login", "-no-browser", "-redirect-url", redirect, "-store", ls.store, "-base-url", ls.srv.URL)
	if code != exitFail || !strings.Contains(stderr, "is another login running?") {
		t.Errorf("second login: %d\n%s", code, stderr)
	}

	get(t, browser(t), authURL)
	if status := wait(t, first); status != exitOK {
		t.Errorf("first login: %d\n%s", status, inv.stderr)
	}
}

func TestLoginInterrupted(t *testing.T) {
	t.Parallel()
	ls := newLoginSetup(t)
	inv := newInvocation(t, credentials(), "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- inv.c.run(ctx, append(ls.args, "-no-browser")) }()
	_, port, _ := ls.listening(t, inv)
	cancel()
	if status := wait(t, done); status != exitFail || !strings.Contains(inv.stderr.String(), "interrupted") {
		t.Errorf("exit status %d; stderr:\n%s", status, inv.stderr)
	}
	assertPortFree(t, port)
}

// TestLoginIgnoresWrongState checks that redirects that do not carry the
// login's state are refused and do not end the login: the right one,
// after them, logs in.
func TestLoginIgnoresWrongState(t *testing.T) {
	t.Parallel()
	ls := newLoginSetup(t)
	inv := newInvocation(t, credentials(), "")
	done := inv.start(append(ls.args, "-no-browser")...)
	redirect, port, authURL := ls.listening(t, inv)

	b := browser(t)
	for _, query := range []string{
		"?code=" + ls.srv.IssueCode() + "&state=forged",
		"?code=" + ls.srv.IssueCode(),
		"?error=access_denied&state=forged",
		"?state=",
	} {
		code, page := get(t, b, redirect+query)
		if code != http.StatusBadRequest || !strings.Contains(page, "does not belong to the login") {
			t.Errorf("%s: %d, want 400 saying it does not belong:\n%s", query, code, page)
		}
	}
	inv.stderr.WaitFor(t, "four ignored redirects", func(s string) bool {
		return strings.Count(s, "Ignored a redirect whose state does not belong to this login") == 4
	})

	code, page := get(t, b, authURL)
	if code != http.StatusOK || !strings.Contains(page, "Logged in to PandaDoc") {
		t.Errorf("callback page after the ignored ones: %d\n%s", code, page)
	}
	if status := wait(t, done); status != exitOK {
		t.Fatalf("login exit status %d; stderr:\n%s", status, inv.stderr)
	}
	loadToken(t, ls.store)
	if n := ls.srv.TokenRequests("authorization_code"); n != 1 {
		t.Errorf("%d authorization_code grants, want 1: the forged codes must not be exchanged", n)
	}
	assertPortFree(t, port)
}

// TestCallbackAcceptsOneRedirect checks that the callback handles the
// first redirect only, and that ending the wait does not lose a redirect
// that was accepted just before.
func TestCallbackAcceptsOneRedirect(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	cb := &callback{
		path:     "/callback",
		state:    "s",
		accepted: make(chan struct{}),
		result:   make(chan callbackResult, 1),
		finish: func(code string) (*oauth2.Token, error) {
			<-release
			return &oauth2.Token{AccessToken: "a-" + code}, nil
		},
	}
	first := make(chan *httptest.ResponseRecorder)
	go func() {
		w := httptest.NewRecorder()
		cb.ServeHTTP(w, httptest.NewRequest("GET", "/callback?code=1&state=s", nil))
		first <- w
	}()
	<-cb.accepted

	w := httptest.NewRecorder()
	cb.ServeHTTP(w, httptest.NewRequest("GET", "/callback?code=2&state=s", nil))
	if w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), "This login has ended") {
		t.Errorf("second redirect: %d\n%s", w.Code, w.Body)
	}

	// The wait ends (a timeout) while the first redirect is exchanged.
	ended := make(chan callbackResult)
	go func() { ended <- cb.end(errors.New("timed out")) }()
	close(release)
	res := <-ended
	if res.err != nil || res.tok == nil || res.tok.AccessToken != "a-1" {
		t.Errorf("end = %+v, want the first redirect's token", res)
	}
	if w := <-first; w.Code != http.StatusOK {
		t.Errorf("first redirect: %d\n%s", w.Code, w.Body)
	}
}
