package pandadocauth

import (
	"errors"
	"time"

	"golang.org/x/oauth2"
)

// Errors returned by this package. Match them with errors.Is.
var (
	// ErrNoToken means a TokenSource has no token to start from: neither
	// Initial nor a token in its Store.
	ErrNoToken = errors.New("no token: set TokenSource.Initial or store a token in TokenSource.Store")

	// ErrNoRefreshToken means the token expired or was rejected and there
	// is no refresh token to obtain a new one.
	ErrNoRefreshToken = errors.New("no refresh token")

	// ErrNotSaved means a token was obtained but Store.Save failed: the
	// token is served, and the Save is retried in the background.
	ErrNotSaved = errors.New("the token was not saved to the store")

	// ErrEmptyCode means Exchange was called with an empty code.
	ErrEmptyCode = errors.New("empty authorization code")

	// ErrMalformedResponse means the token endpoint answered 2xx with a
	// body that is not a usable token (not JSON, no access_token, an
	// access token that cannot be sent in a header, a bad expires_in, an
	// "error" member, or over 1 MiB).
	ErrMalformedResponse = errors.New("malformed token response")

	// ErrInsecureRequest means a credential would have been sent over
	// plain http:// to a host that is not loopback. The request is not
	// sent.
	ErrInsecureRequest = errors.New("refusing to send credentials over plain http to a non-loopback host")
)

// endpointError is a token endpoint's rejection. It unwraps to the
// *oauth2.RetrieveError so existing x/oauth2 error handling
// (errors.As(err, &re)) keeps working, and its own message is short and
// free of secrets: the RetrieveError's Body, ErrorDescription and the
// response's Status are redacted before they are stored.
type endpointError struct {
	msg       string
	re        *oauth2.RetrieveError
	malformed bool // a 2xx carrying an "error" member: ErrMalformedResponse too
}

func (e *endpointError) Error() string { return e.msg }

func (e *endpointError) Unwrap() []error {
	if e.malformed {
		return []error{e.re, ErrMalformedResponse}
	}
	return []error{e.re}
}

// attemptError is the failure of one token-endpoint request: the error
// to return, and whether the request may be sent again.
type attemptError struct {
	err        error
	transient  bool          // network error, 5xx, 408, 429: worth another attempt
	retryAfter time.Duration // from a Retry-After header, 0 if none
	throttled  bool          // 429: the endpoint's rate limit
	rotated    string        // a new refresh token found in the refused answer
}

func (e *attemptError) unwrap() error {
	if e == nil {
		return nil
	}
	return e.err
}

// transientError marks a refresh failure that may pass by itself, and
// how long it is remembered.
type transientError struct {
	error
	backoff   time.Duration // 0 for a 429 without Retry-After: see refresher.remember
	throttled bool          // the endpoint answered 429
}

func (e transientError) Unwrap() error { return e.error }

// isPermanent reports whether err is a refresh failure that will not pass
// by itself: invalid_grant, invalid_client, a malformed answer.
func isPermanent(err error) bool {
	var t transientError
	return !errors.As(err, &t)
}
