package pandadocauth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
	"golang.org/x/oauth2"
)

// TestFaultMatrix runs every token-endpoint fault against every state of
// the cached token, through real HTTP against pandadoctest, and checks
// the outcome, the number of token POSTs, that the caller returned
// within its deadline, that a valid token kept being served, and that no
// secret reached the error.
func TestFaultMatrix(t *testing.T) {
	t.Parallel()
	json := "application/json"
	faults := []struct {
		name      string
		script    func(*pandadoctest.Server)
		posts     int    // token POSTs one refresh makes
		ok        bool   // the refresh yields a token
		malformed bool   // errors.Is(err, ErrMalformedResponse)
		code      string // the RetrieveError's ErrorCode
		hang      bool   // the endpoint never answers
	}{
		{name: "500", script: always(pandadoctest.Status(500)), posts: 3},
		{name: "502 HTML page", script: always(pandadoctest.HTMLPage(502)), posts: 3},
		{name: "503 then success", script: next(pandadoctest.Status(503)), posts: 2, ok: true},
		{name: "429 Retry-After then success", script: next(pandadoctest.RetryAfter(429, "1")), posts: 2, ok: true},
		{name: "hang past the deadline", script: always(pandadoctest.Hang()), posts: 1, hang: true},
		{name: "connection reset then success", script: next(pandadoctest.Reset()), posts: 2, ok: true},
		{name: "connection reset every time", script: always(pandadoctest.Reset()), posts: 3},
		{name: "truncated JSON", script: always(pandadoctest.Truncated()), posts: 1, malformed: true},
		{name: "10 MiB body", script: always(pandadoctest.Oversized(10 << 20)), posts: 1, malformed: true},
		{name: "expires_in negative", script: always(pandadoctest.Body(200, json, `{"access_token":"at-fault","expires_in":-1}`)), posts: 1, malformed: true},
		{name: "expires_in huge", script: always(pandadoctest.Body(200, json, `{"access_token":"at-fault","expires_in":99999999999}`)), posts: 1, malformed: true},
		{name: "expires_in not a number", script: always(pandadoctest.Body(200, json, `{"access_token":"at-fault","expires_in":"soon"}`)), posts: 1, malformed: true},
		{name: "expires_in numeric string", script: next(pandadoctest.Body(200, json, `{"access_token":"at-fault","expires_in":"3600"}`)), posts: 1, ok: true},
		{name: "expires_in float", script: next(pandadoctest.Body(200, json, `{"access_token":"at-fault","expires_in":3600.5}`)), posts: 1, ok: true},
		{name: "200 carrying error", script: always(pandadoctest.Body(200, json, `{"error":"invalid_grant"}`)), posts: 1, code: "invalid_grant", malformed: true},
		{name: "invalid_grant", script: always(pandadoctest.Body(400, json, `{"error":"invalid_grant","error_description":"The refresh token is invalid."}`)), posts: 1, code: "invalid_grant"},
		{name: "invalid_client", script: always(pandadoctest.Body(401, json, `{"error":"invalid_client"}`)), posts: 1, code: "invalid_client"},
	}
	states := []struct {
		name   string
		expiry time.Duration // from now
	}{
		{"valid", time.Hour},
		{"early window", 2 * time.Minute}, // EarlyRefresh is 5 minutes
		{"expired", -time.Minute},
	}
	for _, f := range faults {
		for _, st := range states {
			t.Run(f.name+"/"+st.name, func(t *testing.T) {
				t.Parallel()
				srv := pandadoctest.NewServer()
				initial := srv.IssueToken()
				initial.Expiry = time.Now().Add(st.expiry)
				initial.ExpiresIn = 3600
				src := &pandadocauth.TokenSource{Config: srv.Config(), Initial: initial, EarlyRefresh: 5 * time.Minute}
				pandadocauth.SetRetryBase(10 * time.Millisecond)
				t.Cleanup(func() {
					srv.Close() // releases a hung request
					src.Wait()
				})
				f.script(srv)
				posts := func() int { return srv.TokenRequests("refresh_token") }

				deadline := 10 * time.Second
				if f.hang && st.name == "expired" {
					deadline = 300 * time.Millisecond
				}
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				defer cancel()
				start := time.Now()
				tok, err := src.TokenContext(ctx)
				// A generous bound: without context handling a hang would
				// last until the server closes.
				if elapsed := time.Since(start); elapsed > deadline+5*time.Second {
					t.Errorf("returned after %v, deadline %v", elapsed, deadline)
				}
				if err != nil {
					assertNoSecretIn(t, err, srv, initial)
				}

				switch st.name {
				case "valid":
					if err != nil || tok.AccessToken != initial.AccessToken {
						t.Fatalf("valid token: %v; want it served", err)
					}
					if n := posts(); n != 0 {
						t.Errorf("%d POSTs for a valid token", n)
					}
				case "early window":
					// Served at once; one background refresh meets the fault.
					if err != nil || tok.AccessToken != initial.AccessToken {
						t.Fatalf("early window: %v; want the current token served", err)
					}
					if f.hang {
						if err := srv.WaitTokenRequests(context.Background(), 1); err != nil {
							t.Fatal(err)
						}
						srv.Close()
					}
					src.Wait()
					if n := posts(); n != f.posts && !f.hang {
						t.Errorf("%d POSTs, want %d", n, f.posts)
					}
					tok, err = src.Token()
					if err != nil {
						t.Fatalf("after the background refresh: %v; the valid token must keep being served", err)
					}
					if refreshed := tok.AccessToken != initial.AccessToken; refreshed != f.ok {
						t.Errorf("refreshed = %v, want %v", refreshed, f.ok)
					}
				case "expired":
					if n := posts(); n != f.posts {
						t.Errorf("%d POSTs, want %d", n, f.posts)
					}
					if f.ok {
						if err != nil || tok.AccessToken == initial.AccessToken {
							t.Fatalf("%v; want a new token", err)
						}
						return
					}
					if err == nil {
						t.Fatalf("got token, want an error")
					}
					if f.hang && !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("%v, want context.DeadlineExceeded", err)
					}
					if got := errors.Is(err, pandadocauth.ErrMalformedResponse); got != f.malformed {
						t.Errorf("errors.Is(err, ErrMalformedResponse) = %v: %v", got, err)
					}
					var re *oauth2.RetrieveError
					if f.code != "" && (!errors.As(err, &re) || re.ErrorCode != f.code) {
						t.Errorf("%v, want a RetrieveError with code %q", err, f.code)
					}
					if !strings.HasPrefix(err.Error(), "pandadocauth: ") {
						t.Errorf("error %q lacks the package prefix", err)
					}
				}
			})
		}
	}
}

func always(f pandadoctest.Fault) func(*pandadoctest.Server) {
	return func(s *pandadoctest.Server) { s.FailAlways(f) }
}

func next(f pandadoctest.Fault) func(*pandadoctest.Server) {
	return func(s *pandadoctest.Server) { s.FailNext(f) }
}

func assertNoSecretIn(t *testing.T, err error, srv *pandadoctest.Server, tok *oauth2.Token) {
	t.Helper()
	texts := []string{err.Error()}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		texts = append(texts, re.Error())
	}
	for _, text := range texts {
		for _, secret := range append([]string{pandadoctest.DefaultClientSecret, tok.AccessToken, tok.RefreshToken}, srv.RefreshTokens()...) {
			if strings.Contains(text, secret) {
				t.Errorf("error leaks a secret: %s", text)
			}
		}
	}
}
