package pandadocauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// FuzzTokenResponse feeds arbitrary token-endpoint responses (status,
// content type, body) to the parser. It must never panic, never return a
// token without an access token, and never put a secret it sent into an
// error. Seeds live in testdata/fuzz/FuzzTokenResponse; fuzz longer with
//
//	go test -run='^$' -fuzz=FuzzTokenResponse -fuzztime=10m .
func FuzzTokenResponse(f *testing.F) {
	f.Add(200, "application/json", []byte(`{"access_token":"a","token_type":"Bearer","expires_in":31535999,"scope":"read+write","refresh_token":"r"}`))
	f.Add(400, "application/json", []byte(`{"error":"invalid_grant","error_description":"fuzz-refresh\/token+1 is revoked"}`))
	f.Add(502, "text/html", []byte(`<p>grant_type=refresh_token&refresh_token=fuzz-refresh%2Ftoken%2B1</p>`))
	f.Add(200, "text/html", []byte(`<html>maintenance</html>`))
	// The refresh token has characters that form and JSON encoding
	// escape, so echoed forms of it are checked too.
	const secret, refresh = "fuzz-client-secret", "fuzz-refresh/token+1"
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, contentType string, body []byte) {
		if status < 100 || status > 999 {
			status = 200 + (status%800+800)%800
		}
		// The reason phrase echoes the start of the body, as a server
		// echoing what it was sent might.
		reason := string(body[:min(len(body), 64)])
		resp := &http.Response{
			StatusCode: status,
			Status:     fmt.Sprintf("%d %s", status, reason),
			Header:     http.Header{"Content-Type": {contentType}},
			Body:       io.NopCloser(bytes.NewReader(body)),
		}
		tok, aerr := readTokenResponse(context.Background(), resp, []string{secret, refresh}, now)
		if aerr == nil {
			if tok == nil || tok.AccessToken == "" {
				t.Fatalf("a token without an access token: %+v", tok)
			}
			if status < 200 || status > 299 {
				t.Fatalf("a token from a %d response", status)
			}
			if tok.ExpiresIn < 0 || tok.Expiry.Before(now) && !tok.Expiry.IsZero() {
				t.Fatalf("expiry in the past: %+v", tok)
			}
			return
		}
		if tok != nil {
			t.Fatal("a token came back with an error")
		}
		msg := aerr.err.Error()
		if !strings.HasPrefix(msg, "pandadocauth: ") {
			t.Fatalf("error without the package prefix: %q", msg)
		}
		var re *oauth2.RetrieveError
		if errors.As(aerr.err, &re) {
			msg += re.Error() + string(re.Body) + re.ErrorDescription + re.ErrorCode + re.ErrorURI + re.Response.Status
		}
		for _, s := range []string{secret, refresh} {
			for _, e := range encodings(s) {
				if strings.Contains(msg, e) {
					t.Fatalf("error leaks %q as %q: %q", s, e, msg)
				}
			}
		}
	})
}
