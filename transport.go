package pandadocauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// Transport is an http.RoundTripper that authenticates each request with
// an OAuth 2.0 Bearer token from Source.
//
// When the API answers 401 to a request that carried token T, Transport
// tells Source, if Source is an Invalidator (a *TokenSource is): T is
// invalidated if it is still current, a new token is obtained (one
// refresh however many requests were rejected), and the request is sent
// again once if its body can be replayed (no body, or GetBody set);
// otherwise the 401 response is returned and the next request uses the
// new token. If no new token can be had (the refresh fails, for example
// with invalid_grant when the customer disconnected the app, or the
// request's context ends while it waits), RoundTrip closes the 401
// response and returns the refresh's error instead, as x/oauth2's
// Transport does when it cannot get a token: errors.As(err,
// new(*oauth2.RetrieveError)) holds when the token endpoint refused, and
// the error says that the API answered 401. While the 401 back-off keeps
// a token that has never worked (see TokenSource.Invalidate), no refresh
// is tried and the 401 response is returned.
//
// Wrapping a *TokenSource loses this: oauth2.ReuseTokenSource,
// oauth2.NewClient(ctx, src) and most wrappers are plain
// oauth2.TokenSources, and with one of those every request after a
// revocation is answered 401 until the token expires, which for PandaDoc
// is a year. Give Transport the *TokenSource itself, or a wrapper that
// implements Invalidator. Transport logs a warning once (with Logger) when
// its Source cannot take back a rejected token.
//
// Transport never sends a token to another origin (scheme, host and
// port, as RFC 6454 defines it) than the one its request chain started
// at, so not on a redirect to another host, port or scheme; nor over
// plain http:// except to loopback hosts: "localhost" and loopback IP
// addresses (not names under .localhost, which the resolver may ask DNS
// for). The Authorization header it sets replaces the request's own,
// under whatever spelling of the name the request's Header map holds it.
//
// RoundTrip is safe for concurrent use by multiple goroutines.
type Transport struct {
	// Source supplies the token to add to outgoing requests'
	// Authorization headers. A *TokenSource gets the full behaviour,
	// with the header built once per token; another Invalidator gets
	// 401 recovery; any other oauth2.TokenSource is asked for a token per
	// request, and a 401 is returned as is.
	Source oauth2.TokenSource

	// Base is the base RoundTripper used to make HTTP requests.
	// If nil, http.DefaultTransport is used.
	Base http.RoundTripper

	// Logger, if set, receives a warning, once, when the API rejects a
	// token of a Source that is not an Invalidator. Nil means silent.
	Logger *slog.Logger

	// warned is set once that warning is logged.
	warned atomic.Bool
}

// Invalidator is an oauth2.TokenSource that can take back a token the API
// rejected. *TokenSource implements it; a wrapper around one implements
// it by passing Invalidate on, so that Transport keeps recovering from
// 401s through the wrapper.
type Invalidator interface {
	oauth2.TokenSource
	// Invalidate tells the source that the API rejected t, so that it
	// stops serving t (unless a newer token has replaced it already). It
	// reports whether t was invalidated.
	Invalidate(t *oauth2.Token) bool
}

var (
	_ http.RoundTripper = (*Transport)(nil)
	_ Invalidator       = (*TokenSource)(nil)
)

// maxDrainBytes bounds how much of a rejected response is read so its
// connection can be reused.
const maxDrainBytes = 64 << 10

// RoundTrip authorizes and sends req. It does not modify req and always
// closes its body.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	body := closeUnsent(req)
	defer body.close()
	if t.Source == nil {
		return nil, errors.New("pandadocauth: Transport's Source is nil")
	}
	if authorize, err := preflight(req); !authorize {
		return body.send(t.base(), req, err)
	}
	if ts, ok := t.Source.(*TokenSource); ok {
		ct, err := ts.current(req.Context())
		if err != nil {
			return nil, err
		}
		body.sent = true // from here the base RoundTripper closes it
		return withSource(t.base(), req, ts, ct)
	}
	tok, err := sourceToken(req.Context(), t.Source)
	if err != nil {
		return nil, err
	}
	body.sent = true
	return t.withToken(req, tok)
}

// withSource sends req with ct's token through base and handles a 401
// through ts.
func withSource(base http.RoundTripper, req *http.Request, ts *TokenSource, ct *snapshot) (*http.Response, error) {
	resp, err := base.RoundTrip(authorized(req, req.Body, ct.header))
	if err != nil {
		return nil, err
	}
	if resp == nil {
		return nil, noResponse(base)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		ts.accepted(ct)
		return resp, nil
	}
	// 401: the API no longer accepts the token that was sent.
	retry, invalidated := ts.rejected(ct)
	resp, replay, err := replay(base, req, ts, ct, resp, retry)
	if o := ts.Observer; o != nil && o.Rejected != nil {
		o.Rejected(req.Context(), RejectedInfo{Grant: ts.grantName(), Invalidated: invalidated, Replay: replay})
	}
	return resp, err
}

// replay sends req again after resp, a 401 to ct's token, if retry
// allows, its body can be replayed and ts has a new token.
func replay(base http.RoundTripper, req *http.Request, ts *TokenSource, ct *snapshot, resp *http.Response, retry bool) (*http.Response, ReplayOutcome, error) {
	if !retry {
		return resp, ReplayNoNewToken, nil
	}
	body, ok := replayBody(req)
	if !ok {
		return resp, ReplayNotReplayable, nil // the next request refreshes
	}
	ct2, err := ts.current(req.Context())
	if err != nil {
		// No new token: the caller gets the reason, not a 401 that
		// reads like missing credentials.
		closeBody(body)
		drain(resp)
		return nil, ReplayNoNewToken, refreshFailed(err)
	}
	if ct2.gen == ct.gen {
		closeBody(body)
		return resp, ReplayNoNewToken, nil
	}
	drain(resp)
	resp, err = send(base, authorized(req, body, ct2.header))
	switch {
	case err != nil:
		return nil, ReplayFailed, err
	case resp.StatusCode == http.StatusUnauthorized:
		ts.rejected(ct2)
		return resp, ReplayRejected, nil
	}
	ts.accepted(ct2)
	return resp, ReplayOK, nil
}

// withToken sends req with tok, from a Source that is not a
// *TokenSource, and replays it after a 401 if the Source is an
// Invalidator and has a new token.
func (t *Transport) withToken(req *http.Request, tok *oauth2.Token) (*http.Response, error) {
	resp, err := send(t.base(), authorized(req, req.Body, tok.Type()+" "+tok.AccessToken))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	inv, ok := t.Source.(Invalidator)
	if !ok {
		if t.Logger != nil && t.warned.CompareAndSwap(false, true) {
			t.Logger.Warn("pandadocauth: the API rejected a token, and Transport.Source cannot take it back (it is not an Invalidator, for example an oauth2.ReuseTokenSource around a *TokenSource): requests will keep failing with 401 until the token expires; give Transport the *TokenSource itself",
				slog.String("source", fmt.Sprintf("%T", t.Source)))
		}
		return resp, nil
	}
	inv.Invalidate(tok)
	body, ok := replayBody(req)
	if !ok {
		return resp, nil
	}
	tok2, err := sourceToken(req.Context(), t.Source)
	if err != nil {
		closeBody(body)
		drain(resp)
		return nil, refreshFailed(err)
	}
	if tok2.AccessToken == tok.AccessToken {
		closeBody(body)
		return resp, nil
	}
	drain(resp)
	return send(t.base(), authorized(req, body, tok2.Type()+" "+tok2.AccessToken))
}

// refreshFailed is RoundTrip's error when the API rejected a token with
// 401 and no new token could be had. It wraps err, the refresh's error,
// so that errors.As finds the *oauth2.RetrieveError and errors.Is the
// context's error.
func refreshFailed(err error) error {
	return fmt.Errorf("pandadocauth: the API answered 401 Unauthorized, and no new token could be had: %w", err)
}

// sourceToken asks src for a token, with ctx if src takes one.
func sourceToken(ctx context.Context, src oauth2.TokenSource) (*oauth2.Token, error) {
	var (
		tok *oauth2.Token
		err error
	)
	if cs, ok := src.(interface {
		TokenContext(context.Context) (*oauth2.Token, error)
	}); ok {
		tok, err = cs.TokenContext(ctx)
	} else {
		tok, err = src.Token()
	}
	switch {
	case err != nil:
		return nil, fmt.Errorf("pandadocauth: token source: %w", err)
	case tok == nil:
		return nil, errors.New("pandadocauth: token source returned no token")
	case !sendable(tok.AccessToken):
		return nil, errors.New("pandadocauth: token source returned an access token that cannot be sent in a header (blank, or holds control characters)")
	}
	return tok, nil
}

// replayBody returns a fresh copy of req's body for sending req again,
// and whether req can be sent again.
func replayBody(req *http.Request) (io.ReadCloser, bool) {
	if req.Body == nil || req.Body == http.NoBody {
		return req.Body, true
	}
	if req.GetBody == nil {
		return nil, false
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, false
	}
	return body, true
}

func closeBody(body io.ReadCloser) {
	if body != nil {
		body.Close()
	}
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// drain reads a little of a response to be discarded, so its connection
// can be reused, and closes it. A Base may answer with a nil Body (test
// doubles do): there is nothing to drain then.
func drain(resp *http.Response) {
	if resp.Body == nil {
		return
	}
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
	body := closeUnsent(req)
	defer body.close()
	if t.Key == "" {
		return nil, errors.New("pandadocauth: APIKeyTransport's Key is empty")
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if authorize, err := preflight(req); !authorize {
		return body.send(base, req, err)
	}
	body.sent = true
	return send(base, authorized(req, req.Body, "API-Key "+t.Key))
}

// DefaultClientTimeout is the Timeout of the client NewClient returns
// when base is nil: a request to the API, its retry after a 401
// included, fails after this long instead of hanging forever.
const DefaultClientTimeout = time.Minute

// NewClient returns a copy of base whose requests are authenticated with
// tokens from src; the copy's transport wraps base's. Use it to add
// PandaDoc authentication to a client that is already configured with
// timeouts, proxies or instrumentation. A nil base means a client with
// Timeout DefaultClientTimeout (not http.Client's zero value, which has
// none).
func NewClient(base *http.Client, src oauth2.TokenSource) *http.Client {
	c := &http.Client{Timeout: DefaultClientTimeout}
	if base != nil {
		*c = *base
	}
	c.Transport = &Transport{Source: src, Base: c.Transport}
	return c
}

// Client returns an *http.Client that authenticates every request with
// the grant whose token is t, refreshing it as needed. For more control,
// build a TokenSource and a Transport.
func (c *Config) Client(t *oauth2.Token) *http.Client {
	return NewClient(nil, c.TokenSource(t))
}
