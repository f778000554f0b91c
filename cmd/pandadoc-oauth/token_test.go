package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth/internal/testutil"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

func TestToken(t *testing.T) {
	t.Parallel()
	srv, store, tok := grant(t)
	code, stdout, stderr := runCmd(t, credentials(), "token", "-store", store, "-base-url", srv.URL)
	if code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr)
	}
	if stdout != tok.AccessToken+"\n" {
		t.Errorf("stdout = %q, want the access token", stdout)
	}
	if n := srv.TotalTokenRequests(); n != 0 {
		t.Errorf("%d token requests for a valid token", n)
	}
}

func TestTokenJSON(t *testing.T) {
	t.Parallel()
	srv, store, tok := grant(t)
	tests := []struct {
		flags       []string
		wantRefresh bool
	}{
		{[]string{"-json"}, false},
		{[]string{"-json", "-with-refresh-token"}, true},
		{[]string{"-with-refresh-token"}, true},
	}
	for _, tt := range tests {
		args := append([]string{"token", "-store", store, "-base-url", srv.URL}, tt.flags...)
		code, stdout, stderr := runCmd(t, credentials(), args...)
		if code != exitOK {
			t.Fatalf("%q: exit status %d; stderr:\n%s", tt.flags, code, stderr)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("%q: %v\n%s", tt.flags, err, stdout)
		}
		if got["access_token"] != tok.AccessToken || got["token_type"] != "Bearer" {
			t.Errorf("%q: %s", tt.flags, stdout)
		}
		if expiry, err := time.Parse(time.RFC3339, got["expiry"].(string)); err != nil || expiry.Sub(tok.Expiry).Abs() > time.Second {
			t.Errorf("%q: expiry %v, want %v", tt.flags, got["expiry"], tok.Expiry)
		}
		rt, has := got["refresh_token"]
		if has != tt.wantRefresh || has && rt != tok.RefreshToken {
			t.Errorf("%q: refresh token shown %v, want %v", tt.flags, has, tt.wantRefresh)
		}
		if !tt.wantRefresh && strings.Contains(stdout, tok.RefreshToken) {
			t.Errorf("%q: the refresh token is printed", tt.flags)
		}
	}
}

// TestTokenRefresh checks that a token that is no longer good is
// refreshed before it is printed, and that the rotated refresh token is
// saved.
func TestTokenRefresh(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		flags []string
		// expiry is the stored token's expiry, from now; 0 keeps it.
		expiry time.Duration
	}{
		{"expired", nil, -time.Minute},
		{"expires in two minutes", nil, 2 * time.Minute},
		{"forced after ExpireAll", []string{"-refresh"}, 0},
		{"forced, JSON", []string{"-refresh", "-json"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, store, old := grant(t)
			srv.ExpireAll()
			if tt.expiry != 0 {
				stored := *old
				stored.Expiry = time.Now().Add(tt.expiry)
				saveToken(t, store, &stored)
			}
			args := append([]string{"token", "-store", store, "-base-url", srv.URL}, tt.flags...)
			code, stdout, stderr := runCmd(t, credentials(), args...)
			if code != exitOK {
				t.Fatalf("exit status %d; stderr:\n%s", code, stderr)
			}
			saved := loadToken(t, store)
			if saved.AccessToken == old.AccessToken || saved.RefreshToken == old.RefreshToken {
				t.Fatal("the stored token was not refreshed")
			}
			if !strings.Contains(stdout, saved.AccessToken) {
				t.Errorf("stdout %q lacks the new access token", stdout)
			}
			if live := srv.RefreshTokens(); len(live) != 1 || live[0] != saved.RefreshToken {
				t.Errorf("the stored refresh token is not the server's only live one")
			}
			if n := srv.TokenRequests("refresh_token"); n != 1 {
				t.Errorf("%d refreshes, want 1", n)
			}
			// The new token works.
			if code, out, errOut := runCmd(t, nil, "api", "-store", store, "-base-url", srv.URL, "GET", "/public/v1/documents"); code != exitOK {
				t.Errorf("api with the new token: %d\n%s%s", code, out, errOut)
			}
		})
	}
}

func TestTokenRetriesTransientFailures(t *testing.T) {
	t.Parallel()
	srv, store, _ := grant(t)
	srv.FailNext(pandadoctest.Status(503))
	code, _, stderr := runCmd(t, credentials(), "token", "-refresh", "-store", store, "-base-url", srv.URL)
	if code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr)
	}
	if n := srv.TokenRequests("refresh_token"); n != 2 {
		t.Errorf("%d refresh requests, want 2", n)
	}
}

func TestTokenErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		env   map[string]string
		setup func(srv *pandadoctest.Server, store string) string // returns the -store path
		want  []string
	}{
		{
			name: "not logged in",
			env:  credentials(),
			setup: func(_ *pandadoctest.Server, store string) string {
				return filepath.Join(filepath.Dir(store), "missing.json")
			},
			want: []string{"not logged in", "run pandadoc-oauth login first"},
		},
		{
			name:  "refresh without credentials",
			env:   nil,
			setup: func(_ *pandadoctest.Server, store string) string { return store },
			want:  []string{"missing client credentials", "-client-id", envClientID, "-client-secret", envClientSecret},
		},
		{
			name:  "refresh without client secret",
			env:   map[string]string{envClientID: pandadoctest.DefaultClientID},
			setup: func(_ *pandadoctest.Server, store string) string { return store },
			want:  []string{"the client secret (-client-secret or $" + envClientSecret + ") is not set"},
		},
		{
			name: "refresh token revoked",
			env:  credentials(),
			setup: func(srv *pandadoctest.Server, store string) string {
				for _, rt := range srv.RefreshTokens() {
					srv.Revoke(rt)
				}
				return store
			},
			want: []string{"invalid_grant", "run pandadoc-oauth login again"},
		},
		{
			name: "not a token file",
			env:  credentials(),
			setup: func(_ *pandadoctest.Server, store string) string {
				return filepath.Dir(store)
			},
			want: []string{"pandadoc-oauth token: pandadocauth: reading token file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, store, tok := grant(t)
			path := tt.setup(srv, store)
			code, stdout, stderr := runCmd(t, tt.env, "token", "-refresh", "-store", path, "-base-url", srv.URL)
			if code != exitFail {
				t.Errorf("exit status %d, want %d", code, exitFail)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			testutil.AssertNoSecret(t, "stderr", stderr, tok.AccessToken, tok.RefreshToken, pandadoctest.DefaultClientSecret)
			if strings.Contains(tt.name, "without") && srv.TotalTokenRequests() != 0 {
				t.Errorf("%d token requests without client credentials, want 0", srv.TotalTokenRequests())
			}
		})
	}
}
