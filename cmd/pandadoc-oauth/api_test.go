package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

func TestAPIGet(t *testing.T) {
	t.Parallel()
	srv, store, _ := grant(t)
	code, stdout, stderr := runCmd(t, nil, "api", "-store", store, "-base-url", srv.URL, "GET", "/public/v1/documents")
	if code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr)
	}
	if want := "{\n  \"results\": []\n}\n"; stdout != want {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
	if !strings.Contains(stderr, "HTTP/1.1 200 OK") {
		t.Errorf("stderr lacks the status line:\n%s", stderr)
	}
	if n := srv.TotalTokenRequests(); n != 0 {
		t.Errorf("%d token requests for a valid token", n)
	}
}

func TestAPIRefreshesRevokedToken(t *testing.T) {
	t.Parallel()
	srv, store, old := grant(t)
	srv.Revoke(old.AccessToken)
	code, stdout, stderr := runCmd(t, credentials(), "api", "-store", store, "-base-url", srv.URL, "get", "/public/v1/documents")
	if code != exitOK {
		t.Fatalf("exit status %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if srv.APIRequests(http.StatusUnauthorized) != 1 || srv.APIRequests(http.StatusOK) != 1 {
		t.Errorf("API answers: %d × 401, %d × 200; want one of each", srv.APIRequests(401), srv.APIRequests(200))
	}
	if n := srv.TokenRequests("refresh_token"); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	saved := loadToken(t, store)
	if live := srv.RefreshTokens(); len(live) != 1 || live[0] != saved.RefreshToken || saved.RefreshToken == old.RefreshToken {
		t.Errorf("the rotated refresh token is not saved")
	}
}

func TestAPIFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		setup      func(srv *pandadoctest.Server)
		args       []string
		wantStatus string
		wantOut    string
		wantErr    string
		wantLogin  bool // stderr says to log in again
	}{
		{
			name:       "not found",
			args:       []string{"GET", "/public/v1/nothing"},
			wantStatus: "404 Not Found",
			wantOut:    "{\n  \"type\": \"not_found\",\n  \"detail\": \"Not found.\"\n}\n",
		},
		{
			name:       "method not allowed",
			args:       []string{"DELETE", "/public/v1/documents"},
			wantStatus: "405 Method Not Allowed",
			wantOut:    `"type": "method_not_allowed"`,
		},
		{
			name: "access and refresh token revoked",
			setup: func(srv *pandadoctest.Server) {
				srv.Revoke(srv.RefreshTokens()[0])
				srv.ExpireAll()
			},
			// The API's 401 is not printed: the refresh's failure is.
			args:       []string{"GET", "/public/v1/documents"},
			wantStatus: "the API answered 401 Unauthorized, and no new token could be had",
			wantErr:    `"invalid_grant"`,
			wantLogin:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, store, _ := grant(t)
			if tt.setup != nil {
				tt.setup(srv)
			}
			args := append([]string{"api", "-store", store, "-base-url", srv.URL}, tt.args...)
			code, stdout, stderr := runCmd(t, credentials(), args...)
			if code != exitFail {
				t.Errorf("exit status %d, want %d", code, exitFail)
			}
			if !strings.Contains(stderr, tt.wantStatus) || !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr lacks %q or %q:\n%s", tt.wantStatus, tt.wantErr, stderr)
			}
			if !strings.Contains(stdout, tt.wantOut) {
				t.Errorf("stdout lacks %q:\n%s", tt.wantOut, stdout)
			}
			if tt.wantLogin && !strings.Contains(stderr, "run pandadoc-oauth login again") {
				t.Errorf("stderr does not say to log in again:\n%s", stderr)
			}
			if tt.wantOut == "" && stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
		})
	}
}

func TestAPINotLoggedIn(t *testing.T) {
	t.Parallel()
	store := filepath.Join(t.TempDir(), "token.json")
	code, _, stderr := runCmd(t, credentials(), "api", "-store", store, "-base-url", "http://127.0.0.1:1", "GET", "/public/v1/documents")
	if code != exitFail || !strings.Contains(stderr, "run pandadoc-oauth login first") {
		t.Errorf("exit status %d; stderr:\n%s", code, stderr)
	}
}

func TestAPIBody(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "doc.json")
	if err := os.WriteFile(file, []byte(`{"name": "From a file"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		d      string
		stdin  string
		revoke bool // revoke the access token first: the body must be sent again
		want   string
	}{
		{name: "literal", d: `{"name": "Literal"}`, want: "Literal"},
		{name: "file", d: "@" + file, want: "From a file"},
		{name: "stdin", d: "-", stdin: `{"name": "From stdin"}`, want: "From stdin"},
		{name: "after a 401", d: `{"name": "Replayed"}`, revoke: true, want: "Replayed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, store, tok := grant(t)
			if tt.revoke {
				srv.Revoke(tok.AccessToken)
			}
			// Flags after the arguments, as curl users write them.
			code, stdout, stderr := runCmdInput(t, credentials(), tt.stdin,
				"api", "-store", store, "-base-url", srv.URL, "POST", "/public/v1/documents", "-d", tt.d)
			if code != exitOK {
				t.Fatalf("exit status %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			if !strings.Contains(stderr, "201 Created") {
				t.Errorf("stderr lacks 201 Created:\n%s", stderr)
			}
			var doc struct{ ID, Name string }
			if err := json.Unmarshal([]byte(stdout), &doc); err != nil || doc.Name != tt.want || doc.ID == "" {
				t.Errorf("created %+v (%v), want name %q", doc, err, tt.want)
			}

			code, stdout, _ = runCmd(t, nil, "api", "-store", store, "-base-url", srv.URL, "GET", "/public/v1/documents")
			if code != exitOK || !strings.Contains(stdout, `"name": "`+tt.want+`"`) {
				t.Errorf("documents after POST: %d\n%s", code, stdout)
			}
		})
	}
}

func TestAPIKey(t *testing.T) {
	t.Parallel()
	const key = "api-key-SECRET"
	srv := pandadoctest.NewServer(pandadoctest.WithAPIKey(key))
	defer srv.Close()
	// No token file: the API key needs none.
	store := filepath.Join(t.TempDir(), "token.json")
	tests := []struct {
		name     string
		env      map[string]string
		flags    []string
		wantCode int
		wantErr  string
	}{
		{"flag", nil, []string{"-api-key", key}, exitOK, "200 OK"},
		{"environment", map[string]string{envAPIKey: key}, nil, exitOK, "200 OK"},
		{"flag before environment", map[string]string{envAPIKey: "wrong"}, []string{"-api-key", key}, exitOK, "200 OK"},
		{"wrong key", map[string]string{envAPIKey: "wrong"}, nil, exitFail, "the API rejected the API key"},
	}
	for _, tt := range tests {
		args := append([]string{"api", "-store", store, "-base-url", srv.URL}, tt.flags...)
		args = append(args, "GET", "/public/v1/documents")
		code, stdout, stderr := runCmd(t, tt.env, args...)
		if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) {
			t.Errorf("%s: exit status %d, want %d; stderr:\n%s", tt.name, code, tt.wantCode, stderr)
		}
		if strings.Contains(stdout+stderr, key) {
			t.Errorf("%s: the key is printed", tt.name)
		}
	}
	if n := srv.TotalTokenRequests(); n != 0 {
		t.Errorf("%d token requests with an API key", n)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Errorf("token file touched with an API key (%v)", err)
	}
}

// TestAPIRequest checks the request api sends, against a server that
// echoes it.
func TestAPIRequest(t *testing.T) {
	t.Parallel()
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, strings.Join([]string{
			r.Method + " " + r.URL.RequestURI(),
			"Authorization: " + r.Header.Get("Authorization"),
			"Content-Type: " + r.Header.Get("Content-Type"),
			"X-Test: " + r.Header.Get("X-Test"),
			"Body: " + string(body),
		}, "\n"))
	}))
	defer echo.Close()

	code, stdout, stderr := runCmd(t, map[string]string{envAPIKey: "k"},
		"api", "-base-url", echo.URL+"/", "-H", "X-Test: yes", "PATCH", "/public/v1/documents/1?x=y", "-d", `{"a":1}`)
	if code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr)
	}
	want := "PATCH /public/v1/documents/1?x=y\nAuthorization: API-Key k\nContent-Type: application/json\nX-Test: yes\nBody: {\"a\":1}"
	if stdout != want {
		t.Errorf("the server saw:\n%s\nwant:\n%s", stdout, want)
	}

	// Without -d, no body and no Content-Type; a text answer is printed
	// as is.
	_, stdout, _ = runCmd(t, map[string]string{envAPIKey: "k"}, "api", "-base-url", echo.URL, "GET", "/public/v1/documents")
	if !strings.Contains(stdout, "Content-Type: \nX-Test: \nBody: ") {
		t.Errorf("the server saw:\n%s", stdout)
	}
}

// TestAPIAuthorizationHeader: a -H Authorization is not sent (the
// command's credential replaces it), and the user is told so, without
// the value being printed.
func TestAPIAuthorizationHeader(t *testing.T) {
	t.Parallel()
	srv, store, _ := grant(t)
	for _, h := range []string{"Authorization: Bearer mine-SECRET", "authorization:Basic mine-SECRET"} {
		code, stdout, stderr := runCmd(t, nil, "api", "-store", store, "-base-url", srv.URL, "-H", h, "GET", "/public/v1/documents")
		if code != exitOK {
			t.Fatalf("%q: exit status %d; stderr:\n%s", h, code, stderr)
		}
		if !strings.Contains(stderr, "warning: -H") || !strings.Contains(stderr, "is not sent: the request is authenticated with the saved OAuth token") {
			t.Errorf("%q: no warning:\n%s", h, stderr)
		}
		testutil.AssertNoSecret(t, "output", stdout+stderr, "mine-SECRET")
	}
	// The same with an API key.
	keySrv := pandadoctest.NewServer(pandadoctest.WithAPIKey("k"))
	defer keySrv.Close()
	code, _, stderr := runCmd(t, map[string]string{envAPIKey: "k"}, "api", "-base-url", keySrv.URL, "-H", "Authorization: x", "GET", "/public/v1/documents")
	if code != exitOK || !strings.Contains(stderr, "authenticated with the API key") {
		t.Errorf("exit status %d; stderr:\n%s", code, stderr)
	}
}

// TestAPIWithoutCredentials: without the client credentials, a stored
// token that is still valid is used, and no refresh is sent: not before
// the request when the token has expired, nor after a 401. The error
// says which credential is missing.
func TestAPIWithoutCredentials(t *testing.T) {
	t.Parallel()
	t.Run("token valid, then a 401", func(t *testing.T) {
		t.Parallel()
		srv, store, old := grant(t)
		srv.Revoke(old.AccessToken)
		code, _, stderr := runCmd(t, nil, "api", "-store", store, "-base-url", srv.URL, "GET", "/public/v1/documents")
		if code != exitFail || !strings.Contains(stderr, "401 Unauthorized") || !strings.Contains(stderr, "the API rejected the token, and missing client credentials") || !strings.Contains(stderr, envClientID) {
			t.Errorf("exit status %d; stderr:\n%s", code, stderr)
		}
		if n := srv.TotalTokenRequests(); n != 0 {
			t.Errorf("%d token requests without client credentials", n)
		}
	})
	t.Run("token expired", func(t *testing.T) {
		t.Parallel()
		srv, store, tok := grant(t)
		tok.Expiry = time.Now().Add(-time.Minute)
		saveToken(t, store, tok)
		code, _, stderr := runCmd(t, map[string]string{envClientSecret: pandadoctest.DefaultClientSecret}, "api", "-store", store, "-base-url", srv.URL, "GET", "/public/v1/documents")
		if code != exitFail || !strings.Contains(stderr, "the client ID (-client-id or $"+envClientID+") is not set") {
			t.Errorf("exit status %d; stderr:\n%s", code, stderr)
		}
		if n := srv.TotalTokenRequests() + srv.TotalAPIRequests(); n != 0 {
			t.Errorf("%d requests sent without client credentials", n)
		}
	})
}
