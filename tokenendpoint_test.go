package pandadocauth

import (
	"errors"
	"fmt"
	"net/http"
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
			if n := store.saveCount(); n != 0 {
				t.Errorf("%d Saves of a token that cannot be sent", n)
			}
		})
	}
}

// TestUnsendableStoredTokenIsRefreshed: a token loaded from the Store
// (or given as Initial) whose access token cannot be sent is not served:
// its refresh token gets a new one.
func TestUnsendableStoredTokenIsRefreshed(t *testing.T) {
	t.Parallel()
	srv := &tokenServer{expiresIn: 3600}
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", TokenURL, srv.responder())
	clock := newAutoClock()
	store := &memStore{tok: &oauth2.Token{AccessToken: "at\r\nX: 1", RefreshToken: testRefresh, Expiry: clock.Now().Add(time.Hour)}}
	ts := &TokenSource{Config: testConfig(mt), Store: store, clk: &clockRef{clock}}
	t.Cleanup(ts.Wait)
	tok, err := ts.Token()
	if err != nil || tok.AccessToken != "at-SECRET-1" {
		t.Fatalf("%v, %v; want a refreshed token", tok, err)
	}
}
