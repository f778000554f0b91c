package pandadoctest_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// authorize sends the authorization request q to srv and returns the
// status and the redirect's URL, if any.
func authorize(t *testing.T, srv *pandadoctest.Server, q url.Values) (int, *url.URL) {
	t.Helper()
	resp, err := noRedirects(srv).Get(srv.URL + "/oauth2/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != http.StatusFound {
		return resp.StatusCode, nil
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, loc
}

func authQuery(redirect string, kv ...string) url.Values {
	q := url.Values{
		"client_id":     {pandadoctest.DefaultClientID},
		"redirect_uri":  {redirect},
		"response_type": {"code"},
	}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return q
}

func TestPKCE(t *testing.T) {
	t.Parallel()
	verifier := oauth2.GenerateVerifier()
	other := oauth2.GenerateVerifier()
	s256 := oauth2.S256ChallengeFromVerifier(verifier)
	tests := []struct {
		name      string
		challenge []string // code_challenge, code_challenge_method; nil for none
		verifier  string   // "" sends none
		wantError string   // "" for success
	}{
		{"S256", []string{s256, "S256"}, verifier, ""},
		{"S256 wrong verifier", []string{s256, "S256"}, other, "invalid_grant"},
		{"S256 missing verifier", []string{s256, "S256"}, "", "invalid_grant"},
		{"S256 challenge as verifier", []string{s256, "S256"}, s256, "invalid_grant"},
		{"plain", []string{verifier, "plain"}, verifier, ""},
		{"plain by default", []string{verifier, ""}, verifier, ""},
		{"plain wrong verifier", []string{verifier, "plain"}, other, "invalid_grant"},
		{"malformed verifier", []string{verifier, "plain"}, verifier + "!", "invalid_grant"},
		{"no PKCE", nil, "", ""},
		{"verifier without a challenge is ignored", nil, verifier, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t)
			q := authQuery(pandadoctest.DefaultRedirectURL)
			if tt.challenge != nil {
				q.Set("code_challenge", tt.challenge[0])
				if tt.challenge[1] != "" {
					q.Set("code_challenge_method", tt.challenge[1])
				}
			}
			status, loc := authorize(t, srv, q)
			if status != http.StatusFound {
				t.Fatalf("authorize: %d", status)
			}
			form := grantForm("authorization_code", "code", loc.Query().Get("code"))
			if tt.verifier != "" {
				form.Set("code_verifier", tt.verifier)
			}
			if tt.wantError == "" {
				grant(t, srv, form)
				return
			}
			e := grantError(t, srv, form, 400)
			if e.Error != tt.wantError {
				t.Errorf("error = %q, want %q", e.Error, tt.wantError)
			}
			if strings.Contains(e.Description, verifier) || strings.Contains(e.Description, other) {
				t.Errorf("error description echoes a verifier: %q", e.Description)
			}
			// A failed verification spends the code.
			if tt.challenge != nil {
				form.Set("code_verifier", verifier)
				grantError(t, srv, form, 400)
			}
		})
	}
	t.Run("bad challenges", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t)
		for _, c := range [][]string{
			{s256, "S512"},
			{"short", "plain"},
			{s256 + "=", "S256"},
			{"", "S256"},
		} {
			q := authQuery(pandadoctest.DefaultRedirectURL, "code_challenge", c[0], "code_challenge_method", c[1])
			if status, _ := authorize(t, srv, q); status != http.StatusBadRequest {
				t.Errorf("challenge %q, method %q: %d, want 400", c[0], c[1], status)
			}
		}
	})
}

// TestLoopbackRedirectAnyPort checks RFC 8252 section 7.3: a registered
// loopback redirect URI matches on any port.
func TestLoopbackRedirectAnyPort(t *testing.T) {
	t.Parallel()
	tests := []struct {
		registered, requested string
		ok                    bool
	}{
		{"http://127.0.0.1:8765/callback", "http://127.0.0.1:40123/callback", true},
		{"http://127.0.0.1:8765/callback", "http://127.0.0.1/callback", true},
		{"http://[::1]:8765/cb?x=1", "http://[::1]:1234/cb?x=1", true},
		{"http://127.0.0.1:8765/callback", "http://127.0.0.1:40123/other", false},
		{"http://127.0.0.1:8765/callback", "http://127.0.0.1:40123/callback?x=1", false},
		{"http://127.0.0.1:8765/callback", "https://127.0.0.1:40123/callback", false},
		{"http://127.0.0.1:8765/callback", "http://127.0.0.2:8765/callback", false},
		{"http://127.0.0.1:8765/callback", "http://localhost:8765/callback", false},
		{"http://127.0.0.1:8765/callback", "http://u@127.0.0.1:40123/callback", false},
		{"http://127.0.0.1:8765/callback", "http://127.0.0.1:40123/callback#f", false},
		{"https://app.test/cb", "https://app.test:8443/cb", false},
		{"http://localhost:8765/cb", "http://localhost:9999/cb", false},
	}
	for _, tt := range tests {
		srv := newServer(t, pandadoctest.WithRedirectURL(tt.registered))
		status, loc := authorize(t, srv, authQuery(tt.requested, "state", "s"))
		if got := status == http.StatusFound; got != tt.ok {
			t.Errorf("registered %s, requested %s: %d, want accepted %v", tt.registered, tt.requested, status, tt.ok)
			continue
		}
		if !tt.ok {
			continue
		}
		if got := loc.Scheme + "://" + loc.Host + loc.Path; !strings.HasPrefix(tt.requested, got) {
			t.Errorf("redirected to %s, want %s", loc, tt.requested)
		}
		// The exchange must name the redirect URI of the request, not
		// the registered one.
		code := loc.Query().Get("code")
		if e := grantError(t, srv, grantForm("authorization_code", "code", code, "redirect_uri", tt.registered), 400); e.Error != "invalid_grant" {
			t.Errorf("exchange with the registered URI: %q, want invalid_grant", e.Error)
		}
		_, loc = authorize(t, srv, authQuery(tt.requested))
		grant(t, srv, grantForm("authorization_code", "code", loc.Query().Get("code"), "redirect_uri", tt.requested))
	}
}

func TestTooManyRequests(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	rt := srv.IssueToken().RefreshToken
	base := pandadoctest.TooManyRequests()
	withHeader := base.WithRetryAfter("60")
	srv.FailNext(base, withHeader)
	for _, wantRetryAfter := range []string{"", "60"} {
		resp, err := tokenPost(context.Background(), srv, grantForm("refresh_token", "refresh_token", rt))
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Content-Type") != "application/json" ||
			!strings.Contains(body, `"type":"rate_limit_error"`) {
			t.Errorf("%d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if got, present := resp.Header.Get("Retry-After"), resp.Header.Values("Retry-After") != nil; got != wantRetryAfter || present != (wantRetryAfter != "") {
			t.Errorf("Retry-After = %q (present %v), want %q", got, present, wantRetryAfter)
		}
	}
	if base.Header != nil {
		t.Errorf("WithRetryAfter modified the original Fault's Header: %v", base.Header)
	}
}
