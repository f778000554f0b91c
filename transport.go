package pandadocauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/oauth2"
)

// Transport is an http.RoundTripper that authenticates each request with
// an OAuth 2.0 Bearer token from Source.
//
// With a *TokenSource as Source it also handles rejection: when the API
// answers 401 to a request that carried token T, T is invalidated if it
// is still current, a new token is obtained (one refresh however many
// requests were rejected), and the request is sent again once if its
// body can be replayed (no body, or GetBody set); otherwise the 401
// response is returned and the next request uses the new token.
//
// Transport never sends a token on a redirect to another host, nor over
// plain http:// except to loopback hosts.
//
// RoundTrip is safe for concurrent use by multiple goroutines.
type Transport struct {
	// Source supplies the token to add to outgoing requests'
	// Authorization headers. A *TokenSource gets the full behaviour;
	// any other oauth2.TokenSource is asked for a token per request.
	Source oauth2.TokenSource

	// Base is the base RoundTripper used to make HTTP requests.
	// If nil, http.DefaultTransport is used.
	Base http.RoundTripper
}

var _ http.RoundTripper = (*Transport)(nil)

// maxDrainBytes bounds how much of a rejected response is read so its
// connection can be reused.
const maxDrainBytes = 64 << 10

// RoundTrip authorizes and sends req. It does not modify req and always
// closes its body.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	reqBodyClosed := false
	if req.Body != nil {
		defer func() {
			if !reqBodyClosed {
				req.Body.Close()
			}
		}()
	}
	if t.Source == nil {
		return nil, errors.New("pandadocauth: Transport's Source is nil")
	}
	if crossHostRedirect(req) {
		// The token was granted for the original host, not for
		// wherever it redirects to.
		reqBodyClosed = true
		return t.base().RoundTrip(req)
	}
	if err := checkSecure(req.URL); err != nil {
		return nil, fmt.Errorf("pandadocauth: %w", err)
	}
	ts, full := t.Source.(*TokenSource)
	if !full {
		tok, err := t.Source.Token()
		if err != nil {
			return nil, fmt.Errorf("pandadocauth: token source: %w", err)
		}
		if tok == nil {
			return nil, errors.New("pandadocauth: token source returned no token")
		}
		req2 := req.Clone(req.Context())
		req2.Header.Set("Authorization", tok.Type()+" "+tok.AccessToken)
		reqBodyClosed = true
		return t.base().RoundTrip(req2)
	}

	ct, err := ts.current(req.Context())
	if err != nil {
		return nil, err
	}
	req2 := req.Clone(req.Context())
	req2.Header.Set("Authorization", ct.header)
	// req.Body is assumed to be closed by the base RoundTripper.
	reqBodyClosed = true
	resp, err := t.base().RoundTrip(req2)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusUnauthorized {
		ts.accepted(ct)
		return resp, nil
	}

	// 401: the API no longer accepts the token that was sent. Invalidate
	// it unless a newer token has replaced it already.
	if !ts.rejected(ct) {
		return resp, nil
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	if !replayable {
		return resp, nil // the next request refreshes
	}
	ct2, err := ts.current(req.Context())
	if err != nil || ct2.tok.AccessToken == ct.tok.AccessToken {
		// The refresh failed: the caller gets the API's answer, and the
		// next request fails fast with the refresh error.
		return resp, nil
	}
	req3 := req.Clone(req.Context())
	if req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		req3.Body = body
	}
	req3.Header.Set("Authorization", ct2.header)
	drain(resp)
	resp, err = t.base().RoundTrip(req3)
	if err == nil && resp.StatusCode != http.StatusUnauthorized {
		ts.accepted(ct2)
	}
	return resp, err
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// drain reads a little of a response to be discarded, so its connection
// can be reused, and closes it.
func drain(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, maxDrainBytes)
	resp.Body.Close()
}

// APIKeyTransport is an http.RoundTripper that authenticates each request
// with a PandaDoc API key ("Authorization: API-Key <Key>"), PandaDoc's
// legacy alternative to OAuth 2.0. It follows Transport's rules: no key on
// a redirect to another host, none over plain http:// except to loopback
// hosts. RoundTrip is safe for concurrent use by multiple goroutines.
type APIKeyTransport struct {
	// Key is the PandaDoc API key. Required.
	Key string

	// Base is the base RoundTripper used to make HTTP requests.
	// If nil, http.DefaultTransport is used.
	Base http.RoundTripper
}

var _ http.RoundTripper = (*APIKeyTransport)(nil)

// String describes t without its key.
func (t APIKeyTransport) String() string { return "pandadocauth.APIKeyTransport{Key: [redacted]}" }

// GoString is like String, for the %#v verb.
func (t APIKeyTransport) GoString() string { return t.String() }

// LogValue is like String, for log/slog.
func (t APIKeyTransport) LogValue() slog.Value { return slog.StringValue(t.String()) }

// MarshalJSON encodes String, so that the key is not encoded.
func (t APIKeyTransport) MarshalJSON() ([]byte, error) { return json.Marshal(t.String()) }

// RoundTrip authorizes and sends req. It does not modify req and always
// closes its body.
func (t *APIKeyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	reqBodyClosed := false
	if req.Body != nil {
		defer func() {
			if !reqBodyClosed {
				req.Body.Close()
			}
		}()
	}
	if t.Key == "" {
		return nil, errors.New("pandadocauth: APIKeyTransport's Key is empty")
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if crossHostRedirect(req) {
		reqBodyClosed = true
		return base.RoundTrip(req)
	}
	if err := checkSecure(req.URL); err != nil {
		return nil, fmt.Errorf("pandadocauth: %w", err)
	}
	req2 := req.Clone(req.Context())
	req2.Header.Set("Authorization", "API-Key "+t.Key)
	reqBodyClosed = true
	return base.RoundTrip(req2)
}

// crossHostRedirect reports whether req follows a redirect to a host
// other than the one the first request of the chain went to. A chain
// whose origin cannot be found counts as cross-host: no credential is
// sent on a guess.
func crossHostRedirect(req *http.Request) bool {
	if req.Response == nil {
		return false
	}
	first := req
	for first.Response != nil {
		if first.Response.Request == nil || first.Response.Request.URL == nil {
			return true
		}
		first = first.Response.Request
	}
	return !strings.EqualFold(first.URL.Hostname(), req.URL.Hostname())
}

// checkSecure refuses plain http:// to anything but a loopback host.
func checkSecure(u *url.URL) error {
	if strings.EqualFold(u.Scheme, "https") || isLoopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("%w (%s://%s)", ErrInsecureRequest, u.Scheme, u.Host)
}

func isLoopback(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// NewClient returns a copy of base (nil means a zero http.Client) whose
// requests are authenticated with tokens from src; the copy's transport
// wraps base's. Use it to add PandaDoc authentication to a client that is
// already configured with timeouts, proxies or instrumentation.
func NewClient(base *http.Client, src oauth2.TokenSource) *http.Client {
	c := &http.Client{}
	if base != nil {
		*c = *base
	}
	c.Transport = &Transport{Source: src, Base: c.Transport}
	return c
}
