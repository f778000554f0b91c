package pandadocauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"golang.org/x/oauth2"
)

// TestTokenEndpointRedactsReasonPhrase: a server that echoes the secrets
// it was sent in its reason phrase (resp.Status) leaks none of them
// through the error, the RetrieveError's own Error or a log line.
func TestTokenEndpointRedactsReasonPhrase(t *testing.T) {
	t.Parallel()
	for _, status := range []int{400, 503} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			ts, mt, clock := newSource(t, nil, time.Hour)
			logger, logs := newTestLogger()
			ts.Logger = logger
			mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
				req.ParseForm()
				r := httpmock.NewStringResponse(status, `{"error":"invalid_grant"}`)
				r.Status = fmt.Sprintf("%d %s for %s", status, req.PostForm.Get("refresh_token"), req.PostForm.Get("client_secret"))
				return r, nil
			})
			clock.Advance(2 * time.Hour)
			_, err := ts.Token()
			if err == nil {
				t.Fatal("want an error")
			}
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) {
				t.Fatalf("%v does not wrap a RetrieveError", err)
			}
			assertNoSecret(t, "error", err.Error())
			assertNoSecret(t, "RetrieveError", re.Error())
			assertNoSecret(t, "Response.Status", re.Response.Status)
			assertNoSecret(t, "log", logs.String())
		})
	}
}

// TestTokenEndpointUnsendableAccessToken: an access token that cannot be
// sent in an Authorization header is a malformed response: not served,
// not saved.
func TestTokenEndpointUnsendableAccessToken(t *testing.T) {
	t.Parallel()
	for name, at := range map[string]string{
		"empty":        "",
		"blank":        "   ",
		"CRLF":         "at-SECRET-1\r\nX-Injected: 1",
		"LF":           "at-SECRET-1\n",
		"NUL":          "at-SECRET\x001",
		"control char": "at-SECRET\x011",
		"DEL":          "at-SECRET\x7f1",
		"tab":          "at-SECRET\t1",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ts, mt, clock := newSource(t, nil, time.Hour)
			store := &memStore{}
			ts.Store = store
			mt.RegisterResponder("POST", TokenURL, func(*http.Request) (*http.Response, error) {
				return httpmock.NewJsonResponse(200, map[string]any{"access_token": at, "refresh_token": "rt-SECRET-1", "expires_in": 3600})
			})
			clock.Advance(2 * time.Hour)
			tok, err := ts.Token()
			if !errors.Is(err, ErrMalformedResponse) {
				t.Fatalf("%v, %v; want ErrMalformedResponse", tok, err)
			}
			assertNoSecret(t, "error", err.Error())
			// The answer's refresh token may have replaced the one sent:
			// it is saved, without the access token that cannot be sent.
			if s := store.stored(); store.saveCount() != 1 || s == nil || s.AccessToken != "" || s.RefreshToken != "rt-SECRET-1" {
				t.Errorf("%d Saves, stored %+v; want the refresh token alone", store.saveCount(), s)
			}
		})
	}
}

// TestUnsendableStoredTokenIsRefreshed: a token loaded from the Store
// (or given as Initial) whose access token cannot be sent is not served:
// its refresh token gets a new one.
func TestUnsendableStoredTokenIsRefreshed(t *testing.T) {
	t.Parallel()
	srv := newTokenServer(t, 3600)
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, srv.RoundTrip)
	clock := newAutoClock()
	store := &memStore{tok: &oauth2.Token{AccessToken: "at\r\nX: 1", RefreshToken: testRefresh, Expiry: clock.Now().Add(time.Hour)}}
	ts := &TokenSource{Config: testConfig(mt), Store: store, clk: &clockRef{clock}}
	t.Cleanup(ts.Wait)
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != "at-SECRET-1" {
		t.Fatalf("%v, %v; want a refreshed token", tok, err)
	}
}

func TestTokenSourceBadResponses(t *testing.T) {
	t.Parallel()
	huge := `{"access_token":"at-SECRET-1","pad":"` + strings.Repeat("x", maxBodyBytes) + `"}`
	cases := []struct {
		name      string
		status    int
		body      string
		malformed bool   // errors.Is ErrMalformedResponse
		code      string // RetrieveError.ErrorCode
		expiresIn int64  // for valid ones
	}{
		{"HTML page", 200, "<html><body>maintenance</body></html>", true, "", 0},
		{"empty body", 200, "", true, "", 0},
		{"truncated JSON", 200, `{"access_token":"at-SEC`, true, "", 0},
		{"JSON array", 200, `[1,2]`, true, "", 0},
		{"no access_token", 200, `{"token_type":"Bearer","expires_in":3600}`, true, "", 0},
		{"negative expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":-5}`, true, "", 0},
		{"huge expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":1e15}`, true, "", 0},
		{"non-numeric expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":"soon"}`, true, "", 0},
		{"boolean expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":true}`, true, "", 0},
		{"body over 1 MiB", 200, huge, true, "", 0},
		{"200 carrying error", 200, `{"error":"invalid_grant","error_description":"nope"}`, true, "invalid_grant", 0},
		{"400 HTML", 400, "<html>bad</html>", false, "", 0},
		{"numeric string expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":"3600"}`, false, "", 3600},
		{"float expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":31535999.0}`, false, "", 31535999},
		{"null expires_in", 200, `{"access_token":"at-SECRET-1","expires_in":null}`, false, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mt := httpmock.NewMockTransport()
			mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(tc.status, tc.body))
			tok, err := testConfig(mt).Refresh(context.Background(), testRefresh)
			valid := !tc.malformed && tc.code == "" && tc.status == 200
			if valid {
				if err != nil {
					t.Fatalf("want a token, got %v", err)
				}
				if tok.ExpiresIn != tc.expiresIn || (tc.expiresIn == 0) != tok.Expiry.IsZero() {
					t.Errorf("ExpiresIn %d, Expiry %v; want %d", tok.ExpiresIn, tok.Expiry, tc.expiresIn)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error, got token %+v", tok)
			}
			if tok != nil {
				t.Error("a token came back with the error")
			}
			if got := errors.Is(err, ErrMalformedResponse); got != tc.malformed {
				t.Errorf("errors.Is(err, ErrMalformedResponse) = %v: %v", got, err)
			}
			var re *oauth2.RetrieveError
			if tc.code != "" && (!errors.As(err, &re) || re.ErrorCode != tc.code) {
				t.Errorf("want a RetrieveError with code %q, got %v", tc.code, err)
			}
			if !strings.HasPrefix(err.Error(), "pandadocauth: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			assertNoSecret(t, "error", err.Error())
		})
	}
}

func TestTokenSourceKeepsRefreshTokenWhenOmitted(t *testing.T) {
	t.Parallel()
	store := &memStore{}
	ts, _, clock := newSource(t, newTokenServer(t, 3600, keepRefreshToken), time.Hour)
	ts.Store = store
	clock.Advance(2 * time.Hour)
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "at-SECRET-1" || tok.RefreshToken != testRefresh {
		t.Fatalf("got access %q refresh %q; want the old refresh token kept", tok.AccessToken, tok.RefreshToken)
	}
	if s := store.stored(); s == nil || s.RefreshToken != testRefresh {
		t.Fatalf("stored %+v; want the kept refresh token", s)
	}
}

func TestTokenSourceRedactsEndpointErrors(t *testing.T) {
	t.Parallel()
	echo := `{"error":"invalid_grant","error_description":"refresh token ` + testRefresh + ` of client ` + testClientSecret + ` is revoked"}`
	for _, status := range []int{400, 200} {
		mt := httpmock.NewMockTransport()
		mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(status, echo))
		_, err := testConfig(mt).Refresh(context.Background(), testRefresh)
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) {
			t.Fatalf("status %d: %v, want a RetrieveError", status, err)
		}
		assertNoSecret(t, "error", err.Error())
		assertNoSecret(t, "RetrieveError", re.Error())
		assertNoSecret(t, "RetrieveError.Body", string(re.Body))
		assertNoSecret(t, "RetrieveError.ErrorDescription", re.ErrorDescription)
	}
	// The same without an error code: the body is what RetrieveError
	// prints.
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(502, "<p>upstream said "+testClientSecret+"</p>"))
	_, err := testConfig(mt).Refresh(context.Background(), testRefresh)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != 502 {
		t.Fatalf("%v", err)
	}
	assertNoSecret(t, "RetrieveError", re.Error())
	assertNoSecret(t, "error", err.Error())
}

func TestTokenEndpointRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, func(req *http.Request) (*http.Response, error) {
		r := httpmock.NewStringResponse(307, "")
		r.Header.Set("Location", "https://evil.example/steal")
		return r, nil
	})
	mt.RegisterResponder("POST", "https://evil.example/steal", httpmock.NewStringResponder(200, `{"access_token":"at-SECRET-evil"}`))
	_, err := testConfig(mt).Refresh(context.Background(), testRefresh)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != 307 {
		t.Errorf("%v, want the 307 as a RetrieveError", err)
	}
	if n := mt.GetCallCountInfo()["POST https://evil.example/steal"]; n != 0 {
		t.Errorf("the credentials were re-sent to the redirect target %d times", n)
	}
}

func TestTokenEndpointErrorBodyKeepsNoToken(t *testing.T) {
	t.Parallel()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, httpmock.NewStringResponder(200, `{"error":"invalid_grant","access_token":"at-SECRET-9","refresh_token":"rt-SECRET-9"}`))
	_, err := testConfig(mt).Refresh(context.Background(), testRefresh)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("%v", err)
	}
	assertNoSecret(t, "RetrieveError.Body", string(re.Body))
}

// TestTokenEndpointRedactsEscapedSecrets: an endpoint echoing a secret
// form-encoded or JSON-escaped does not leak it through RetrieveError.
func TestTokenEndpointRedactsEscapedSecrets(t *testing.T) {
	t.Parallel()
	const rt = "rt-SECRET/0+x"
	for name, responder := range map[string]httpmock.Responder{
		"502 echoing the form": func(req *http.Request) (*http.Response, error) {
			b, _ := io.ReadAll(req.Body)
			return httpmock.NewStringResponse(502, "<p>bad request: "+string(b)+"</p>"), nil
		},
		"400 JSON-escaped": httpmock.NewStringResponder(400, `{"error":"invalid_grant","error_description":"refresh token rt-SECRET\/0+x is revoked"}`),
	} {
		mt := httpmock.NewMockTransport()
		mt.RegisterResponder("POST", TokenURL, responder)
		_, err := testConfig(mt).Refresh(context.Background(), rt)
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) {
			t.Fatalf("%s: %v", name, err)
		}
		if s := re.Error() + string(re.Body); strings.Contains(s, "rt-SECRET") {
			t.Errorf("%s: RetrieveError leaks the refresh token: %s", name, s)
		}
	}
}

// TestRetrieveErrorHoldsNoRequest: the RetrieveError handed to callers
// does not keep the token request, whose GetBody would replay the form,
// client secret and refresh token included.
func TestRetrieveErrorHoldsNoRequest(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		io.WriteString(w, `{"error":"invalid_grant"}`)
	}))
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()
	cfg := &Config{ClientID: testClientID, ClientSecret: testClientSecret, TokenURL: srv.URL, HTTPClient: srv.Client()}
	ts := &TokenSource{Config: cfg, Initial: &oauth2.Token{AccessToken: testAccess, RefreshToken: testRefresh}}
	_, err := ts.Refresh(context.Background())
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatal(err)
	}
	if re.Response.Request != nil {
		t.Error("the error keeps the token request")
	}
}
