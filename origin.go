package pandadocauth

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// The rules on where a credential may go, shared by every RoundTripper
// that adds one (Transport, APIKeyTransport, the Grants' transport) and
// by the token endpoint: never to another origin than the one a redirect
// chain started at, never over plain http:// except to loopback, never a
// value that would break the header.

// preflight applies the rules to req before a credential is looked for.
// It reports whether req may carry one; when not, req is sent as it is
// if err is nil (a redirect to another origin: the credential was
// granted for the chain's first one) and not sent at all otherwise.
func preflight(req *http.Request) (authorize bool, err error) {
	if req.URL == nil {
		return false, errors.New("pandadocauth: request has no URL")
	}
	if crossOrigin(req) {
		return false, nil
	}
	if err := checkSecure(req.URL); err != nil {
		return false, fmt.Errorf("pandadocauth: %w", err)
	}
	return true, nil
}

// unsent closes a request's body on every path that does not hand it to
// a base RoundTripper, which closes it: the RoundTripper contract.
type unsent struct {
	req  *http.Request
	sent bool // the body belongs to the base RoundTripper now
}

// closeUnsent starts guarding req's body; defer its close.
func closeUnsent(req *http.Request) unsent { return unsent{req: req} }

// close closes the body unless it was sent.
func (u *unsent) close() {
	if !u.sent && u.req.Body != nil {
		u.req.Body.Close()
	}
}

// send ends a preflight that refused a credential: req goes out as it is
// when err is nil, and not at all otherwise.
func (u *unsent) send(base http.RoundTripper, req *http.Request, err error) (*http.Response, error) {
	if err != nil {
		return nil, err
	}
	u.sent = true
	return send(base, req)
}

// crossOrigin reports whether req follows a redirect to an origin
// (scheme, host and port, RFC 6454) other than the one the first request
// of the chain went to. A chain whose origin cannot be found counts as
// cross-origin: no credential is sent on a guess.
func crossOrigin(req *http.Request) bool {
	return req.Response != nil && crossOriginChain(req)
}

// crossOriginChain is crossOrigin for a request that follows a redirect.
func crossOriginChain(req *http.Request) bool {
	first := req
	for first.Response != nil {
		if first.Response.Request == nil || first.Response.Request.URL == nil {
			return true
		}
		first = first.Response.Request
	}
	return originOf(first.URL) != originOf(req.URL)
}

// originOf is u's origin: scheme, host and port, with the scheme's
// default port made explicit.
func originOf(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return scheme + "://" + strings.TrimSuffix(strings.ToLower(u.Hostname()), ".") + ":" + port
}

// checkSecure refuses plain http:// to anything but a loopback host.
func checkSecure(u *url.URL) error {
	if u.Scheme == "https" {
		return nil
	}
	return checkScheme(u)
}

// checkScheme is checkSecure for a URL whose scheme is not "https" as
// written.
func checkScheme(u *url.URL) error {
	if strings.EqualFold(u.Scheme, "https") || isLoopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("%w (%s://%s)", ErrInsecureRequest, u.Scheme, u.Host)
}

// isLoopback reports whether host is "localhost" or a loopback IP
// address. Names under .localhost are not: RFC 6761 asks resolvers to
// answer them with loopback addresses, but Go's resolver asks DNS for
// them, so a token sent in clear to one may reach another machine.
func isLoopback(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sendable reports whether an access token can be sent in an
// Authorization header: not blank, and free of control characters (CR
// and LF would end the header, NUL and the rest are refused by net/http).
func sendable(accessToken string) bool {
	if strings.TrimSpace(accessToken) == "" {
		return false
	}
	for i := 0; i < len(accessToken); i++ {
		if c := accessToken[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// send calls rt, turning a nil response without an error, which would
// break the caller, into an error.
func send(rt http.RoundTripper, req *http.Request) (*http.Response, error) {
	resp, err := rt.RoundTrip(req)
	if resp == nil && err == nil {
		return nil, noResponse(rt)
	}
	return resp, err
}

// noResponse is the error for rt returning neither a response nor an
// error.
func noResponse(rt http.RoundTripper) error {
	return fmt.Errorf("pandadocauth: %T returned neither a response nor an error", rt)
}
